"""lstmkit: the LSTM family for PyTorch, a drop-in for torch.nn.LSTM/GRU/RNN and beyond it."""

from lstmkit.cells import GRUCell, LSTMCell, LSTMState, RNNCell
from lstmkit.checkpoint import load
from lstmkit.config import CellConfig, LayerConfig
from lstmkit.layers import GRU, LSTM, RNN
from lstmkit.models import ModelConfig, SequenceModel

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "LSTMState",
    "RNN",
    "RNNCell",
    "CellConfig",
    "LayerConfig",
    "ModelConfig",
    "SequenceModel",
    "load",
    "__version__",
]
