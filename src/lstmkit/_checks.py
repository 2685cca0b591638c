"""Boundary checks shared by cells and layers: "expected X, got Y", standard exception types."""

from __future__ import annotations

import torch


def check_tensor(name: str, value, like: torch.Tensor) -> None:
    """``value`` must be a floating tensor with ``like``'s dtype and device."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype} (the parameters' dtype), "
                        f"got {value.dtype}")
    if value.device != like.device:
        raise ValueError(f"{name}: expected device {like.device} (the parameters' device), "
                         f"got {value.device}")


def check_shape(name: str, value: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(value.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(value.shape)}")


def check_batch_size(batch_size) -> None:
    """``batch_size`` of ``init_state``: None (unbatched) or an int >= 0."""
    if batch_size is None:
        return
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        raise TypeError(f"batch_size: expected None or an int, got {type(batch_size).__name__}")
    if batch_size < 0:
        raise ValueError(f"batch_size: expected None or an int >= 0, got {batch_size}")


def check_steps(steps: int) -> None:
    """A sequence must have a step: T = 0 is refused on every backend (as torch.nn does)."""
    if steps < 1:
        raise ValueError(f"input: expected at least one time step, got T={steps}")


def check_lengths(lengths, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """``lengths`` must be a 1-D integer tensor of ``batch`` values in 1..``steps``, on the CPU
    or on the input's ``device``; returns it as int64 on the CPU (where the time loop reads
    it)."""
    if not isinstance(lengths, torch.Tensor):
        raise TypeError("lengths: expected a 1-D integer torch.Tensor, "
                        f"got {type(lengths).__name__}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer dtype, got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.numel() != batch:
        raise ValueError(f"lengths: expected shape ({batch},) (one per sequence), "
                         f"got {tuple(lengths.shape)}")
    if lengths.device.type != "cpu" and lengths.device != device:
        raise ValueError(f"lengths: expected a tensor on the CPU or on the input's device "
                         f"{device}, got device {lengths.device}")
    lengths = lengths.to("cpu", torch.int64)
    if batch == 0:
        return lengths
    if torch.compiler.is_compiling():
        # The values are data: a compiled graph (or an exported program) checks them when it
        # runs, where a Python comparison would have to guard on them at trace time.
        torch._assert_async((lengths >= 1).all() & (lengths <= steps).all(),
                            "lengths: expected values in 1..T (the time steps given)")
        return lengths
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1 or high > steps:
        raise ValueError(f"lengths: expected values in 1..{steps} (the time steps given), "
                         f"got values in {low}..{high}")
    return lengths
