"""Checkpoints: one safetensors file holding a model's weights and, as JSON in its metadata, the
model config plus whatever the application needs (data statistics, its own config).

Nothing is unpickled on load, so a checkpoint cannot run code. Files are written atomically: a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lstmkit._optional import require
from lstmkit.io import atomic_write
from lstmkit.models import ModelConfig, SequenceModel

FORMAT = "lstmkit.checkpoint/2"
FORMATS = ("lstmkit.checkpoint/1", FORMAT)
"""What :func:`load_tensors` reads. Format 2 saves a cell config with its family's key
(``"family"``) and only that family's fields; format 1 named it ``"mode"`` and held every
family's fields (:func:`lstmkit.config.cell_from_dict` reads both)."""


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``tensors`` with ``meta`` (JSON-ready) to a safetensors file, atomically."""
    save_file = require("safetensors.torch", "apps", "writing a checkpoint").save_file
    header = {"format": FORMAT, "meta": json.dumps(meta)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read what :func:`save_tensors` wrote; a missing, corrupt or foreign file raises a one-line
    OSError or ValueError."""
    safetensors = require("safetensors", "apps", "reading a checkpoint")
    require("safetensors.torch", "apps", "reading a checkpoint")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {path}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"checkpoint: expected a safetensors file, {path} is not one "
                         f"({error})") from None
    if header.get("format") not in FORMATS:
        raise ValueError(f"checkpoint: expected format {FORMAT!r}, got "
                         f"{header.get('format')!r} in {path}")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"checkpoint: expected JSON metadata in {path}, got none") from None
    return tensors, meta


def save(path: str | Path, model: SequenceModel, **meta) -> None:
    """Save ``model`` and ``meta`` (JSON-ready values) to ``path``; a model quantised by
    :func:`lstmkit.quantize_dynamic` keeps its int8 weights, its int8 backend and whether its
    activations are int8."""
    from lstmkit.layers.quantized import QuantizedLayer

    layers = [m for m in model.modules() if isinstance(m, QuantizedLayer)]
    backends = {m.quant_backend for m in layers}
    activations = {m.activations for m in layers}
    if len(backends) > 1 or len(activations) > 1:
        raise ValueError(f"model: expected one int8 backend and one activations setting for "
                         f"its layers, got {sorted(backends)} and {sorted(activations)}")
    int8 = {}
    if layers:
        int8 = {"int8": backends.pop(), "int8_activations": activations.pop()}
    save_tensors(path, model.state_dict(), {"model": model.config.to_dict(), **int8, **meta})


def load(path: str | Path, device=None) -> SequenceModel:
    """The model saved at ``path`` (a checkpoint file, or a run folder holding
    ``model.safetensors``), in evaluation mode; ``model.meta`` holds the rest of the
    metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    tensors, meta = load_tensors(path)
    try:
        config = ModelConfig.from_dict(meta.pop("model"))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"checkpoint: expected an lstmkit model config in {path}, "
                         f"got an unusable one ({error})") from None
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), None)
    model = SequenceModel(config, device=device, dtype=dtype)
    if "int8" in meta:  # rebuilt as quantize_dynamic made it, then given the saved weights
        from lstmkit.layers.quantized import quantize_dynamic

        model = quantize_dynamic(model, meta.pop("int8"), meta.pop("int8_activations", "float"))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint: weights in {path} do not match its config "
                         f"(missing {missing}, unexpected {unexpected})")
    model.meta = meta
    return model.eval()
