"""Validation at the stream engine's boundary: the model, stream ids and chunks."""

from __future__ import annotations

import torch

from lstmkit.models import SequenceModel


def check_model(model) -> None:
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model: expected an lstmkit SequenceModel, got {type(model).__name__}")
    if model.config.layer.bidirectional:
        raise ValueError("model: expected a unidirectional model, got bidirectional=True (the "
                         "reverse direction needs the whole sequence)")
    if model.config.pooling not in ("none", "last"):
        raise ValueError(f"model: expected pooling 'none' or 'last', got "
                         f"{model.config.pooling!r} (it needs the whole sequence)")


def check_id(stream_id) -> str:
    """Ids go into URLs, JSON replies and state files: printable text that UTF-8 can encode
    (no lone surrogates), no "/"."""
    if not isinstance(stream_id, str) or not 1 <= len(stream_id) <= 128:
        raise ValueError(f"stream_id: expected a str of 1 to 128 characters, got {stream_id!r}")
    try:
        stream_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"stream_id: expected text UTF-8 can encode, got {stream_id!r}") from None
    if not stream_id.isprintable() or "/" in stream_id:
        raise ValueError(f"stream_id: expected printable characters and no '/', got "
                         f"{stream_id!r}")
    return stream_id


def as_tensor(value, dtype: torch.dtype, name: str, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if dtype == torch.int64 and (value.dtype.is_floating_point or value.dtype == torch.bool):
            raise TypeError(f"{name}: expected integer token ids, got {value.dtype}")
        if value.requires_grad:
            value = value.detach()
        if value.dtype == dtype and value.device == device:
            return value  # the common case, kept cheap: engines check thousands per round
        return value.to(device=device, dtype=dtype)
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError, RecursionError) as error:
        raise TypeError(f"{name}: expected numbers (a tensor, array or nested list), got "
                        f"{type(value).__name__} ({error})") from None
    if dtype == torch.int64 and not (tensor.dtype == torch.int64 or tensor.dtype == torch.int32
                                     or tensor.dtype == torch.int16 or tensor.dtype == torch.uint8):
        raise TypeError(f"{name}: expected integer token ids, got {tensor.dtype}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{name}: expected real numbers, got {tensor.dtype}")
    return tensor.to(device=device, dtype=dtype)
