"""Export for :mod:`lstmkit.runtime`: one .npz of the weights plus the config as JSON bytes.

The file needs no pickle to read (``np.load(..., allow_pickle=False)``) and no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lstmkit.io import atomic_write
from lstmkit.layers.xlstm_blocks import xLSTMConfig
from lstmkit.models import SequenceModel
from lstmkit.runtime.model import CONFIG_KEY, FORMAT


def export_runtime(model: SequenceModel, path: str | Path) -> None:
    """Write ``model`` (and its checkpoint metadata, if any) for :func:`lstmkit.runtime.load`."""
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected an lstmkit SequenceModel, got {type(model).__name__}")
    if isinstance(model.config.layer, xLSTMConfig) and model.config.layer.bidirectional:
        raise ValueError("model: the NumPy runtime runs unidirectional xLSTM stacks, got "
                         "bidirectional=True")
    from lstmkit.layers.quantized import QuantizedLayer

    if any(isinstance(m, QuantizedLayer) and m.activations != "float" for m in model.modules()):
        raise ValueError("model: the NumPy runtime computes int8 weights with float "
                         "activations, got a model quantised with activations='int8' (export "
                         "lstmkit.quantize_dynamic(float_model) instead)")
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "model": model.config.to_dict(),
              "meta": getattr(model, "meta", {})}
    arrays[CONFIG_KEY] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    atomic_write(path, write)
