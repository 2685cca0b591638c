"""Backends: the kernels that run a stack of recurrent layers, registered by name.

Every backend computes the function the reference defines; faster ones only compute it sooner.
A backend module exposes ``BACKEND``, a :class:`~lstmkit.kernels.contract.Backend` with its
:class:`~lstmkit.kernels.contract.Declaration` of what it computes; it is imported on first use,
so a backend's heavy dependencies (a compiler, Triton) cost nothing until it is asked for.

Adding a backend is one line in :data:`_MODULES` (its place there is its rank for "auto") and a
module of its own.
"""

from __future__ import annotations

import functools
import importlib
import logging

import torch

from lstmkit._transforms import constant_result
from lstmkit.config import LayerConfig
from lstmkit.kernels.contract import Backend, Declaration, StepMasks

log = logging.getLogger(__name__)


_MODULES = {
    "cpu": "lstmkit.kernels.cpu",
    "native": "lstmkit.kernels.native",
    "triton": "lstmkit.kernels.triton",
    "triton_xlstm": "lstmkit.kernels.triton.xlstm",
    "xlstm": "lstmkit.kernels.xlstm",
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
    if name not in _LOADED:  # torch.compile cannot trace an import: it finds them loaded
        _LOADED[name] = importlib.import_module(_MODULES[name]).BACKEND
    return _LOADED[name]


_LOADED: dict[str, Backend] = {}


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


@constant_result
def resolve_name(name: str, config: LayerConfig, device: torch.device, dtype: torch.dtype,
                 training: bool) -> str:
    """``resolve(...).name``. torch.compile runs it once while tracing and keeps the result as
    a constant (the layer's config is fixed, and its mode, device and dtype are guarded), instead
    of tracing the declarations and their reasons."""
    return resolve(name, config, device, dtype, training).name


__all__ = ["Backend", "Declaration", "StepMasks", "explain", "get", "names", "resolve",
           "resolve_name"]


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
