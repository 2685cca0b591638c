"""Functional forms of the xLSTM recurrences over whole sequences, in the field's convention
(mlstm_kernels' argument names and shapes for the mLSTM)."""

from lstmkit.functional.mlstm import mlstm
from lstmkit.functional.slstm import slstm

__all__ = ["mlstm", "slstm"]
