"""Int8 weights in the NumPy runtime: the same per-row rounding as
:func:`lstmkit.quantize_dynamic`, written again without torch.

A runtime file may hold each recurrent weight matrix ``rnn.<name>`` as int8 with its row scales
``rnn.<name>_scale`` beside it (what ``lstmkit.export.export_runtime`` writes for a model from
``lstmkit.quantize_dynamic``, or :func:`quantize_arrays` for a float file): a quarter of the
matrices' bytes on disk. :func:`lstmkit.runtime.load` dequantises them once, so the runtime
computes the float32 model of the dequantised weights ``scale[:, None] * q``, the function the
int8 torch layers compute. NumPy has no int8 matrix product, so this saves file size and load
time, not time per step.

Legend: N output rows of a weight (gate units), K its input width.
"""

from __future__ import annotations

import numpy as np

MATRICES = ("weight_ih", "weight_hh", "weight_hr")
"""Weights stored as int8 (lstmkit.layers.quantized.MATRICES)."""
PREFIX = "rnn."


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per output row, as lstmkit.layers.quantized's.

    Shape: weight (N, K) -> (q (N, K) int8, scale (N,) float32); an all-zero row gets scale 1.

    Examples:
        >>> q, s = quantize_weight(np.array([[0.5, -1.0], [2.0, 0.0]]))
        >>> q.tolist(), (s * 127).tolist()
        ([[64, -127], [127, 0]], [1.0, 2.0])
    """
    w = np.asarray(weight, np.float32)
    if w.ndim != 2:
        raise ValueError(f"weight: expected a matrix (N, K), got shape {w.shape}")
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def _is_matrix(name: str, array: np.ndarray) -> bool:
    base = name[len(PREFIX):].split("_l")[0] if name.startswith(PREFIX) else ""
    return base in MATRICES and array.ndim == 2


def quantize_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A runtime file's arrays with every float recurrent matrix as int8 plus ``_scale``."""
    out = {}
    for name, array in arrays.items():
        if _is_matrix(name, array) and array.dtype != np.int8:
            out[name], out[name + "_scale"] = quantize_weight(array)
        else:
            out[name] = array
    return out


def dequantize_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays with each int8 matrix and its ``_scale`` replaced by ``scale[:, None] * q``
    (float32); arrays without int8 come back as they are."""
    out = dict(arrays)
    for name, array in arrays.items():
        if array.dtype != np.int8:
            continue
        scale = out.pop(name + "_scale", None)
        if scale is None or scale.shape != array.shape[:1]:
            raise ValueError(f"runtime model: expected {name}_scale of shape {array.shape[:1]} "
                             f"beside the int8 {name}, got "
                             f"{None if scale is None else scale.shape}")
        out[name] = scale.astype(np.float32)[:, None] * array.astype(np.float32)
    return out
