"""The cpu backend: the whole recurrence in compiled C++, forward and backward.

Each layer and direction is one call into ``ops.cpp`` (built on first use, see ``_build``): the
input term as one matrix product per chunk of steps, one recurrent product per step, the gate
math in loops the compiler vectorises, spread over threads by batch rows where a step has
enough of them, and in the backward pass the weight gradients as products over all steps at
once. Products run oneDNN's brgemm ukernel on weights packed once per call (``matmul.h``). It
computes every cell option of the three families, lengths, recurrent dropout and zoneout, in
float32 and float64. Options, activations and weights reach the C++ side by name
(``ops.cpp``).

"auto" tries it first on the CPU (docs/benchmarks.md has the numbers): it is the only fused
path for the variants, and against torch.nn's own kernels it trains the plain LSTM faster at
every measured size and runs GRU and RNN several times faster (torch has no oneDNN path for
them). Every configuration torch.nn computes it still hands on to the native backend
(:func:`auto_defers`): the drop-in promise is torch's exact numbers; ``backend="cpu"`` asks for
this one.
"""

from __future__ import annotations

import functools

import torch

from lstmkit.activations import CODES
from lstmkit.cells.base import ANY, Family, state_tensors
from lstmkit.config import CellConfig, LayerConfig
from lstmkit.kernels.contract import Backend, Declaration, StepMasks
from lstmkit.kernels.cpu import _build

KERNEL_ACTIVATIONS = ("sigmoid", "tanh", "relu", "hard_sigmoid", "softsign", "softplus", "elu",
                "leaky_relu", "identity")
"""The activations common.h's ``activate`` implements (a new row of the table is refused until
its case is written there)."""

DECLARATION = Declaration(
    families={
        "lstm": {"bias": ANY, "proj_size": ANY, "peephole": ANY, "coupled": ANY,
                 "input_gate": ANY, "forget_gate": ANY, "output_gate": ANY, "cell_clip": ANY,
                 "gate_activation": KERNEL_ACTIVATIONS, "cell_activation": KERNEL_ACTIVATIONS,
                 "output_activation": KERNEL_ACTIVATIONS, "layer_norm": ANY},
        "gru": {"bias": ANY, "reset_after": ANY},
        "rnn": {"bias": ANY, "nonlinearity": ("tanh", "relu")},
    },
    dtypes=(torch.float32, torch.float64), devices=("cpu",),
    features=frozenset({"lengths", "recurrent_dropout", "zoneout"}),  # and the layer's
    available=lambda device: _build.problem())


@functools.lru_cache(maxsize=64)
def _options(cfg: CellConfig) -> tuple[dict[str, int], dict[str, float]]:
    """The config's fields as ops.cpp reads them, by name: flags and sizes as ints, activation
    names (the RNN's nonlinearity too) as generated.h's codes, floats as reals; None absent."""
    ints, reals = {}, {}
    for name, value in cfg.options.items():
        if name in cfg.init_fields or value is None:
            continue
        if isinstance(value, str):
            ints[name] = CODES[value]
        elif isinstance(value, (bool, int)):
            ints[name] = int(value)
        else:
            reals[name] = float(value)
    return ints, reals


class _Scan(torch.autograd.Function):
    """One layer and direction; the masks ride along as constants (they need no gradient)."""

    @staticmethod
    def forward(ctx, key: str, options: tuple, masks: tuple, names: tuple, x, *tensors):
        states = len(tensors) - len(names)
        state, weights = tensors[:states], dict(zip(names, tensors[states:]))
        out = _build.ops().scan_forward(key, x, state, weights, *masks, *options, True)
        ctx.spec = key, options, masks, names, states
        ctx.save_for_backward(x, *tensors[states:], *out[1 + states:])
        return tuple(out[:1 + states])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        key, options, masks, names, states = ctx.spec
        x, *rest = ctx.saved_tensors
        weights, saved = dict(zip(names, rest[:len(names)])), rest[len(names):]
        out = _build.ops().scan_backward(key, x, [g.contiguous() for g in grads], saved,
                                         weights, *masks, *options, list(names),
                                         ctx.needs_input_grad[4])
        return (None, None, None, None, *out)


def scan(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state, lengths,
         masks: StepMasks):
    """One layer in one direction, as :func:`lstmkit.kernels.reference.scan` computes it.

    Shape: x (T, B, I); state tensors (B, ...); lengths (B,) or None -> y (T, B, P), state.
    """
    options = _options(cfg)
    state = [t.contiguous() for t in state_tensors(state)]
    names = tuple(name for name, t in w.items() if t is not None)
    weights = [w[name].contiguous() for name in names]
    zoneout = [] if masks.zoneout is None else [_zoneout(z) for z in masks.zoneout]
    constants = (lengths, masks.hidden, zoneout)
    x = x.contiguous()
    if torch.is_grad_enabled() and any(t.requires_grad for t in [x, *state, *weights]):
        y, *final = _Scan.apply(family.key, options, constants, names, x, *state, *weights)
    else:
        y, *final = _build.ops().scan_forward(family.key, x, state, dict(zip(names, weights)),
                                              *constants, *options, False)
    return y, family.make_state(*final)


def _zoneout(z: torch.Tensor) -> torch.Tensor:
    """A zoneout weight (T, B, size) as the kernel reads it: evaluation's constant probability
    (an expanded scalar) as one row, rather than T * B copies of it."""
    if z.dim() == 3 and z.stride()[:2] == (0, 0):
        return z[0, 0].contiguous()
    return z.contiguous()


def auto_defers(config: LayerConfig, device: torch.device, dtype: torch.dtype,
                training: bool) -> str | None:
    # The drop-in promise comes first: where torch.nn computes the configuration, "auto" gives
    # torch's own numbers bit for bit. This kernel is faster in training there (0.6-0.9x of
    # torch's time, docs/benchmarks.md) but rounds differently; backend="cpu" asks for it.
    if config.is_torch_compatible:
        return ("torch.nn computes this configuration: native gives its exact numbers "
                "(backend='cpu' is faster in training)")
    return None


BACKEND = Backend(name="cpu", declaration=DECLARATION, scan=scan, auto_devices=("cpu",),
                  auto_defers=auto_defers)
