"""Gate layouts: torch's (lstmkit's) order and ONNX's, with named converters between them.

torch packs an LSTM's G*H rows as i, f, g, o; ONNX as i, o, f, c (c is torch's g). A GRU is
r, z, n in torch and z, r, h in ONNX. Peepholes are i, f, o in lstmkit and i, o, f in ONNX's P.
Every converter is a permutation of equal blocks along one axis; ``inverse`` undoes it.
"""

from __future__ import annotations

import numpy as np

TORCH_LSTM = ("i", "f", "g", "o")
ONNX_LSTM = ("i", "o", "f", "g")  # ONNX calls the candidate "c"
TORCH_GRU = ("r", "z", "n")
ONNX_GRU = ("z", "r", "n")  # ONNX calls the candidate "h"
TORCH_PEEPHOLE = ("i", "f", "o")
ONNX_PEEPHOLE = ("i", "o", "f")


def order(source: tuple[str, ...], target: tuple[str, ...]) -> tuple[int, ...]:
    """The block permutation that takes layout ``source`` to ``target``."""
    return tuple(source.index(gate) for gate in target)


def permute(array: np.ndarray, blocks: tuple[int, ...], axis: int = 0) -> np.ndarray:
    """``array`` split into len(blocks) equal blocks along ``axis``, taken in order ``blocks``."""
    parts = np.split(array, len(blocks), axis=axis)
    return np.concatenate([parts[k] for k in blocks], axis=axis)


def inverse(blocks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(k) for k in np.argsort(blocks))


LSTM_TO_ONNX = order(TORCH_LSTM, ONNX_LSTM)
GRU_TO_ONNX = order(TORCH_GRU, ONNX_GRU)
PEEPHOLE_TO_ONNX = order(TORCH_PEEPHOLE, ONNX_PEEPHOLE)
TO_ONNX = {"lstm": LSTM_TO_ONNX, "gru": GRU_TO_ONNX, "rnn": (0,)}
"""Cell mode -> the permutation of its G*H rows from torch's order to ONNX's."""
