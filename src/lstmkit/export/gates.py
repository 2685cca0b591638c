"""Gate layouts: named converters between a family's order and ONNX's.

Each family declares its own order (``lstm.GATES``: i, f, g, o) and ONNX's
(``FAMILY.onnx.gates``: i, o, f, c, with c torch's g); a GRU is r, z, n in torch and z, r, h in
ONNX. Peepholes are i, f, o in lstmkit and i, o, f in ONNX's P. Every converter is a permutation
of equal blocks along one axis; ``inverse`` undoes it.
"""

from __future__ import annotations

import numpy as np

from lstmkit.cells import gru, lstm


def order(source: tuple[str, ...], target: tuple[str, ...]) -> tuple[int, ...]:
    """The block permutation that takes layout ``source`` to ``target``."""
    return tuple(source.index(gate) for gate in target)


def permute(array: np.ndarray, blocks: tuple[int, ...], axis: int = 0) -> np.ndarray:
    """``array`` split into len(blocks) equal blocks along ``axis``, taken in order ``blocks``."""
    parts = np.split(array, len(blocks), axis=axis)
    return np.concatenate([parts[k] for k in blocks], axis=axis)


def inverse(blocks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(k) for k in np.argsort(blocks))


TORCH_LSTM, ONNX_LSTM = lstm.GATES, lstm.FAMILY.onnx.gates
TORCH_GRU, ONNX_GRU = gru.GATES, gru.FAMILY.onnx.gates
(_, TORCH_PEEPHOLE, ONNX_PEEPHOLE), = lstm.FAMILY.onnx.extra_inputs
LSTM_TO_ONNX = order(TORCH_LSTM, ONNX_LSTM)
GRU_TO_ONNX = order(TORCH_GRU, ONNX_GRU)
PEEPHOLE_TO_ONNX = order(TORCH_PEEPHOLE, ONNX_PEEPHOLE)
