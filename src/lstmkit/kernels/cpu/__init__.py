"""The cpu backend: the whole recurrence in compiled C++, forward and backward.

Each layer and direction is one call into ``ops.cpp`` (built on first use, see ``_build``): the
input term as one matrix product per chunk of steps, one recurrent product per step, the gate
math in loops the compiler vectorises, spread over threads by batch rows where a step has
enough of them, and in the backward pass the weight gradients as products over all steps at
once. Products run oneDNN's brgemm ukernel on weights packed once per call (``matmul.h``). It
computes every cell option of the three families, lengths, recurrent dropout and zoneout, in
float32 and float64, and in bfloat16 and float16 with float32 state and sums (``precision.h``:
16-bit operands in every forward product, on AVX-512 BF16 where the CPU has it). Options,
activations and weights reach the C++ side by name (``ops.cpp``).

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
from torch import Tensor

from lstmkit._autocast import SIXTEEN_BIT  # run the float32 kernels on 16-bit operands
from lstmkit._transforms import constant_result, through_ops, transformable
from lstmkit.activations import CODES
from lstmkit.cells.base import ANY, Family, state_tensors
from lstmkit.config import CellConfig, LayerConfig
from lstmkit.kernels import reference, second_order
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
    dtypes=(torch.float32, torch.float64, torch.bfloat16, torch.float16), devices=("cpu",),
    features=frozenset({"lengths", "recurrent_dropout", "zoneout"}),  # and the layer's
    available=lambda device: _build.problem())


def _options(cfg: CellConfig) -> tuple[tuple[str, list[int]], tuple[str, list[float]]]:
    """The config's fields as ops.cpp reads them, by name: flags and sizes as ints, activation
    names (the RNN's nonlinearity too) as generated.h's codes, floats as reals; None absent.
    Cached in eager calls; while compiling, a constant of the graph (dynamo skips a cache and
    warns, and traced, each float would be a symbol whose first test restarts the analysis)."""
    return _option_lists(cfg) if torch.compiler.is_compiling() else _cached_options(cfg)


@constant_result
def _option_lists(cfg: CellConfig) -> tuple[tuple[str, list[int]], tuple[str, list[float]]]:
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
    return (",".join(ints), list(ints.values())), (",".join(reals), list(reals.values()))


_cached_options = functools.lru_cache(maxsize=64)(_option_lists)


class _Scan(torch.autograd.Function):
    """One layer and direction; the masks ride along as constants (they need no gradient).
    ``spec`` = (family, cfg, lengths, masks): what the reference needs to recompute the scan
    when a second derivative is asked for (:mod:`lstmkit.kernels.second_order`)."""

    @staticmethod
    def forward(ctx, spec, options: tuple, masks: tuple, names: str, x, *tensors):
        states = len(tensors) - names.count(",") - 1
        state, weights = tensors[:states], tensors[states:]
        out = _build.ops().scan_forward(spec[0].key, x, state, names, weights, *masks, *options,
                                        True)
        ctx.spec = spec, options, masks, names, states
        ctx.save_for_backward(x, *tensors, *out[1 + states:])
        return tuple(out[:1 + states])

    @staticmethod
    def backward(ctx, *grads):
        spec, options, masks, names, states = ctx.spec
        x, *rest = ctx.saved_tensors
        count = names.count(",") + 1
        inputs, saved = [x, *rest[:states + count]], rest[states + count:]
        if second_order.wants_graph():  # create_graph=True: grad of grad
            family, cfg, lengths, step_masks = spec
            return (None,) * 4 + tuple(second_order.graph_gradients(
                second_order.scan_outputs(reference.scan, family, cfg, names.split(","), states,
                                          lengths, step_masks),
                inputs, ctx.needs_input_grad[4:], grads))
        out = _build.ops().scan_backward(spec[0].key, x, [g.contiguous() for g in grads], saved,
                                         names, inputs[1 + states:], *masks, *options,
                                         ctx.needs_input_grad[4])
        return (None, None, None, None, *out)


# The kernels as torch.library custom operators, so that torch.compile and torch.export see one
# opaque node per layer and direction, with shapes from the fake kernels below (symbolic in T and
# B: one graph for every length and batch) instead of tracing into the C++ call. Names cross as
# comma-joined strings beside lists of values, as the C++ ops take them (ops.cpp, forward_op).
# Eager calls keep _Scan above (the same C++ calls, without the custom op's Python dispatch per
# layer and direction).


@torch.library.custom_op("lstmkit::cpu_scan", mutates_args=())
def scan_op(family: str, x: Tensor, state: list[Tensor], names: str, weights: list[Tensor],
            lengths: Tensor | None, hidden: Tensor | None, zoneout: list[Tensor],
            int_names: str, ints: list[int], real_names: str, reals: list[float],
            save: bool) -> list[Tensor]:
    """One layer and direction: ``[y, *final_state, *saved]`` (saved only with ``save``, what
    :func:`scan_backward_op` reads)."""
    return _build.ops().scan_forward(family, x, state, names, weights, lengths, hidden, zoneout,
                                     int_names, ints, real_names, reals, save)


@scan_op.register_fake
def _(family, x, state, names, weights, lengths, hidden, zoneout, int_names, ints, real_names,
      reals, save):
    steps, batch = x.shape[:2]  # x (T, B, I)
    out = [x.new_empty(steps, batch, state[0].shape[1]), *(s.new_empty(s.shape) for s in state)]
    if not save:
        return out
    return out + _saved_like(family, x, state, dict(zip(names.split(","), weights)))


_JOINT_BYTES = 32 << 20  # lstm.h's kJointBytes


def _saved_like(family: str, x: Tensor, state: list[Tensor], w: dict) -> list[Tensor]:
    """Empty tensors shaped as what the forward kernel saves (lstm.h, gru.h, rnn.h): in float32
    for a 16-bit x (its scans compute in float32, precision.h)."""
    steps, batch = x.shape[:2]
    dtype = torch.float32 if x.dtype in SIXTEEN_BIT else x.dtype

    def new(*shape):
        return x.new_empty(shape, dtype=dtype)

    if family == "lstm":
        gates, hidden, output = w["weight_ih"].shape[0], state[1].shape[1], state[0].shape[1]
        ln = "weight_ln_ih" in w  # Gates holds A, with Xih and Xhh while they fit in 32 MiB
        joint = ln and 3 * steps * batch * gates * dtype.itemsize <= _JOINT_BYTES
        saved = [new(3 if joint else 1, steps, batch, gates), new(steps + 1, batch, output),
                 new(steps + 1, batch, hidden), new(steps, batch, hidden)]  # Hs, Cs, Cn
        if ln:  # Rih, Rhh, Sc, then Xih, Xhh unless Gates holds them
            saved += [new(steps, batch), new(steps, batch), new(steps, batch, 2)]
            if not joint:
                saved += [new(steps, batch, gates), new(steps, batch, gates)]
        return saved
    hidden = state[0].shape[1]
    if family == "gru":  # Gt, Hs, Rn
        return [new(steps, batch, 3 * hidden), new(steps + 1, batch, hidden),
                new(steps, batch, hidden)]
    return [new(steps, batch, hidden), new(steps + 1, batch, hidden)]  # rnn: A, Hs


@torch.library.custom_op("lstmkit::cpu_scan_backward", mutates_args=())
def scan_backward_op(family: str, x: Tensor, grads: list[Tensor], saved: list[Tensor],
                     names: str, weights: list[Tensor], lengths: Tensor | None,
                     hidden: Tensor | None, zoneout: list[Tensor], int_names: str,
                     ints: list[int], real_names: str, reals: list[float],
                     need_dx: bool) -> list[Tensor]:
    """The gradients ``[dx, *dstate, *dweights]`` given those of ``[y, *final_state]``; dx is
    empty (0,) without ``need_dx``."""
    out = _build.ops().scan_backward(family, x, grads, saved, names, weights, lengths, hidden,
                                     zoneout, int_names, ints, real_names, reals, need_dx)
    return [x.new_empty(0) if out[0] is None else out[0], *out[1:]]


@scan_backward_op.register_fake
def _(family, x, grads, saved, names, weights, lengths, hidden, zoneout, int_names, ints,
      real_names, reals, need_dx):
    dx = x.new_empty(x.shape) if need_dx else x.new_empty(0)
    return [dx, *(g.new_empty(g.shape) for g in grads[1:]),
            *(w.new_empty(w.shape) for w in weights)]


def _setup_context(ctx, inputs, output):
    (family, x, state, names, weights, lengths, hidden, zoneout, int_names, ints, real_names,
     reals, save) = inputs
    ctx.spec = family, len(state), names, int_names, ints, real_names, reals, len(zoneout)
    ctx.save_for_backward(x, lengths, hidden, *zoneout, *state, *weights,
                          *output[1 + len(state):])


def _backward(ctx, grads):
    family, states, names, int_names, ints, real_names, reals, zoneouts = ctx.spec
    x, lengths, hidden, *rest = ctx.saved_tensors
    zoneout, rest = rest[:zoneouts], rest[zoneouts:]
    count = len(names.split(","))
    state, weights, saved = rest[:states], rest[states:states + count], rest[states + count:]
    if not saved:  # called without save (scan does not): run the forward again to get them
        saved = scan_op(family, x, state, names, weights, lengths, hidden, zoneout, int_names,
                        ints, real_names, reals, True)[1 + states:]
    grads = [g.contiguous() for g in grads[:1 + states]]  # the saved outputs get none
    need_dx = ctx.needs_input_grad[1]
    out = scan_backward_op(family, x, grads, saved, names, weights, lengths, hidden, zoneout,
                           int_names, ints, real_names, reals, need_dx)
    # One entry per input, shaped as it: torch.library reads an empty list as a list of
    # tensors (it wants [] back) and a list of numbers as one leaf (None).
    return (None, out[0] if need_dx else None, out[1:1 + states], None, out[1 + states:],
            None, None, [None] * zoneouts, None, None if ints else [], None,
            None if reals else [], None)


scan_op.register_autograd(_backward, setup_context=_setup_context)
_scan_call = transformable(scan_op, _setup_context, _backward, scan_backward_op)


def scan(family: Family, cfg: CellConfig, w: dict, x: torch.Tensor, state, lengths,
         masks: StepMasks):
    """One layer in one direction, as :func:`lstmkit.kernels.reference.scan` computes it.

    Shape: x (T, B, I); state tensors (B, ...); lengths (B,) or None -> y (T, B, P), state.
    """
    (int_names, ints), (real_names, reals) = _options(cfg)
    state = [t.contiguous() for t in state_tensors(state)]
    names = tuple(name for name, t in w.items() if t is not None)
    weights = [w[name].contiguous() for name in names]
    zoneout = [] if masks.zoneout is None else [_zoneout(z) for z in masks.zoneout]
    save = torch.is_grad_enabled() and any(t.requires_grad for t in [x, *state, *weights])
    x = x.contiguous()
    if through_ops():
        y, *final = _scan_call(family.key, x, state, ",".join(names), weights, lengths,
                            masks.hidden, zoneout, int_names, ints, real_names, reals, save)
        final = final[:len(state)]
    else:
        options, constants = (int_names, ints, real_names, reals), (lengths, masks.hidden, zoneout)
        if save:
            y, *final = _Scan.apply((family, cfg, lengths, masks), options, constants,
                                    ",".join(names), x, *state, *weights)
        else:
            y, *final = _build.ops().scan_forward(family.key, x, state, ",".join(names), weights,
                                                  *constants, *options, False)
    return y, family.make_state(*final)


def _zoneout(z: torch.Tensor) -> torch.Tensor:
    """A zoneout weight (T, B, size) as the kernel reads it: evaluation's constant probability
    (an expanded scalar) as one row, rather than T * B copies of it."""
    if z.dim() == 3 and z.stride()[:2] == (0, 0):
        return z[0, 0].contiguous()
    return z.contiguous()


def bf16_dot_active() -> bool:
    """Whether bfloat16 products take the AVX-512 BF16 path on this CPU (else the fallback)."""
    return bool(_build.ops().bf16_dot_active())


def use_bf16_dot(wanted: bool) -> bool:
    """Let bfloat16 products take the AVX-512 BF16 path where the CPU has it (True, the
    default) or force the fallback (False); returns the previous setting."""
    return bool(_build.ops().use_bf16_dot(wanted))


def auto_defers(config: LayerConfig, device: torch.device, dtype: torch.dtype,
                training: bool) -> str | None:
    # The drop-in promise comes first: where torch.nn computes the configuration, "auto" gives
    # torch's own numbers bit for bit. This kernel is faster in training there (0.6-0.9x of
    # torch's time, docs/benchmarks.md) but rounds differently; backend="cpu" asks for it.
    # In 16 bits the promise has nothing to keep: torch rounds every intermediate to the dtype
    # (this kernel keeps float32 state and sums: closer to the float64 truth, the conformance
    # table's 16-bit rows), and on a CPU without native bfloat16 its path is 20-40x slower
    # than its own float32 one (docs/applications.md, "16-bit training").
    if config.is_torch_compatible and dtype not in SIXTEEN_BIT:
        return ("torch.nn computes this configuration: native gives its exact numbers "
                "(backend='cpu' is faster in training)")
    return None


BACKEND = Backend(name="cpu", declaration=DECLARATION, scan=scan, auto_devices=("cpu",),
                  auto_defers=auto_defers)
