"""Backends: the kernels that run a stack of recurrent layers, registered by name.

Every backend computes the function the reference defines; faster ones only compute it sooner.
A backend module exposes ``BACKEND``, a :class:`Backend`; it is imported on first use, so a
backend's heavy dependencies (a compiler, Triton) cost nothing until it is asked for.

Adding a backend is one line in :data:`_MODULES` (its place there is its rank for "auto") and a
module of its own.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lstmkit.config import LayerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """A named way to run a layer stack.

    ``run(config, weights, x, state, lengths, training) -> (y, state)`` with ``weights[layer]
    [direction]`` a :class:`~lstmkit.cells.weights.CellWeights`, x (T, B, I) time-major, state
    tensors (L*D, B, ...), lengths None or an int64 CPU tensor (B,) of values in 1..T; y is
    (T, B, D*P) with zeros past each sequence's length.

    ``supports(config, device, dtype, training)`` returns None when the backend computes the
    configuration exactly, else the reason it cannot.
    """

    name: str
    run: Callable
    supports: Callable
    auto_devices: tuple[str, ...] | None = None
    """Device types on which "auto" may pick this backend; None: any. Named explicitly, a
    backend runs wherever ``supports`` allows (Triton's interpreter on the CPU, for tests)."""
    auto_defers: Callable | None = None
    """``(config, device, dtype, training) -> reason or None``: why "auto" should pass over
    this backend for a configuration it does run (a later one is as fast there and closer to
    torch.nn); None: never. Named explicitly, the backend still runs it."""


_MODULES = {
    "cpu": "lstmkit.kernels.cpu",
    "native": "lstmkit.kernels.native",
    "triton": "lstmkit.kernels.triton",
    "reference": "lstmkit.kernels.reference",
}
"""Backend name -> module; "auto" tries them in this order."""


def names() -> tuple[str, ...]:
    """The registered backend names, in the order "auto" tries them."""
    return tuple(_MODULES)


def get(name: str) -> Backend:
    """The backend called ``name``."""
    if name not in _MODULES:
        raise ValueError(f"backend: expected one of {('auto',) + names()}, got {name!r}")
    return importlib.import_module(_MODULES[name]).BACKEND


@functools.lru_cache(maxsize=256)
def resolve(name: str, config: LayerConfig, device: torch.device, dtype: torch.dtype,
            training: bool) -> Backend:
    """The backend that runs ``config`` here: ``name`` itself, or for "auto" the first in
    :func:`names` that supports it. Logs the choice and the reasons for skipping others at DEBUG."""
    if name != "auto":
        backend = get(name)
        reason = backend.supports(config, device, dtype, training)
        if reason is not None:
            raise ValueError(f"backend {name!r} cannot run this configuration: {reason}")
        return backend
    for candidate in names():
        backend = get(candidate)
        reason = _auto_reason(backend, config, device, dtype, training)
        if reason is None:
            log.debug("backend auto -> %s for %s on %s/%s", candidate, config, device, dtype)
            return backend
        log.debug("backend auto skips %s: %s", candidate, reason)
    raise RuntimeError("no backend supports this configuration")  # unreachable: reference does


def _auto_reason(backend: Backend, config, device, dtype, training) -> str | None:
    """Why "auto" does not pick ``backend`` here, or None."""
    reason = backend.supports(config, device, dtype, training)
    if reason is None and backend.auto_devices and device.type not in backend.auto_devices:
        reason = f"auto picks it only on {', '.join(backend.auto_devices)} devices"
    if reason is None and backend.auto_defers:
        reason = backend.auto_defers(config, device, dtype, training)
    return reason


def explain(config: LayerConfig, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32,
            training: bool = True) -> list[tuple[str, str | None]]:
    """(backend, why "auto" does not pick it or None) for every backend, in "auto"'s order:
    what ``lstmkit env`` prints. The first None is the one "auto" picks."""
    device = torch.device(device)
    return [(n, _auto_reason(get(n), config, device, dtype, training)) for n in names()]
