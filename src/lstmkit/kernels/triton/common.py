"""What the LSTM and GRU kernels share: activations and their derivatives, the grid barrier, and
the launch plan (block sizes, persistent or per-step).

Dimensions: B batch, T time, H hidden units, P output units of h (proj_size or H), G gates;
BB, BH, BK the block sizes of a program's batch rows, hidden units and product depth.

Importing this module imports Triton; :mod:`lstmkit.kernels.triton` imports it on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from lstmkit.activations import CODES
from lstmkit.kernels import reference, second_order
from lstmkit.kernels.contract import StepMasks

ACT_CODES = CODES
"""Activation name -> the constexpr the kernels switch on (the order of ACTIVATIONS)."""
_SIGMOID, _TANH, _RELU, _HARD_SIGMOID, _SOFTSIGN, _SOFTPLUS, _ELU, _LEAKY_RELU = (
    tl.constexpr(ACT_CODES[n]) for n in ("sigmoid", "tanh", "relu", "hard_sigmoid", "softsign",
                                         "softplus", "elu", "leaky_relu"))


@triton.jit
def tanh(x):
    # 2σ(2x) - 1: Triton's interpreter has no libdevice tanh, and one code path serves both.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def act(x, KIND: tl.constexpr):
    """The activation ``KIND`` (a code of :data:`ACT_CODES`), as lstmkit.activations defines it."""
    if KIND == _SIGMOID:
        y = tl.sigmoid(x)
    elif KIND == _TANH:
        y = tanh(x)
    elif KIND == _RELU:
        y = tl.maximum(x, 0.0)
    elif KIND == _HARD_SIGMOID:
        y = tl.minimum(tl.maximum(x / 5.0 + 0.5, 0.0), 1.0)  # 0.2: a float32 literal in Triton
    elif KIND == _SOFTSIGN:
        y = x / (1.0 + tl.abs(x))
    elif KIND == _SOFTPLUS:  # torch's threshold: linear above 20
        y = tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
    elif KIND == _ELU:
        y = tl.where(x > 0.0, x, tl.exp(tl.minimum(x, 0.0)) - 1.0)
    elif KIND == _LEAKY_RELU:
        y = tl.where(x > 0.0, x, x / 100.0)
    else:
        y = x
    return y


@triton.jit
def act_grad(x, KIND: tl.constexpr):
    """d act(x) / dx, with torch's choices at the kinks (relu' = 0 at 0, clamp passes its ends)."""
    if KIND == _SIGMOID:
        s = tl.sigmoid(x)
        d = s * (1.0 - s)
    elif KIND == _TANH:
        y = tanh(x)
        d = 1.0 - y * y
    elif KIND == _RELU:
        d = tl.where(x > 0.0, 1.0, 0.0)
    elif KIND == _HARD_SIGMOID:
        u = x / 5.0 + 0.5
        d = tl.where((u >= 0.0) & (u <= 1.0), (x * 0.0 + 1.0) / 5.0, 0.0)
    elif KIND == _SOFTSIGN:
        q = 1.0 + tl.abs(x)
        d = 1.0 / (q * q)
    elif KIND == _SOFTPLUS:
        d = tl.where(x > 20.0, 1.0, tl.sigmoid(x))
    elif KIND == _ELU:
        d = tl.where(x > 0.0, 1.0, tl.exp(tl.minimum(x, 0.0)))
    elif KIND == _LEAKY_RELU:
        d = tl.where(x > 0.0, 1.0, (x * 0.0 + 1.0) / 100.0)
    else:
        d = x * 0.0 + 1.0
    return d.to(x.dtype)


@triton.jit
def clamp(a, clip, CLIP: tl.constexpr):
    """Clip pre-activations to [-clip, clip] when CLIP."""
    if CLIP:
        a = tl.minimum(tl.maximum(a, -clip), clip)
    return a


@triton.jit
def clamp_grad(a, clip, CLIP: tl.constexpr):
    """1 where the clip passes gradient (ends included, as torch's clamp), else 0."""
    if CLIP:
        g = tl.where((a >= -clip) & (a <= clip), 1.0, 0.0).to(a.dtype)
    else:
        g = a * 0.0 + 1.0
    return g


@triton.jit
def row(PTR, offs, mask, dtype: tl.constexpr):
    """A block of a parameter vector as a (1, BH) row in ``dtype``; 0 where masked."""
    return tl.load(PTR + offs, mask=mask, other=0.0).to(dtype)[None, :]


@triton.jit
def state_ptrs(BUF, t, rb, ru, B, U):
    """Pointers (BB, BU) into a (T, B, U) buffer at step t: rows rb (BB,), units ru (BU,)."""
    return BUF + (t * B + rb).to(tl.int64)[:, None] * U + ru[None, :]


@triton.jit
def grid_barrier(COUNT, slot, expected):
    """Wait until ``expected`` programs have arrived at ``COUNT[slot]``.

    Each step has its own slot, so a counter only ever rises to ``expected`` and a fast program
    cannot run ahead into a slower one's count. The CTA barriers make every thread's stores part
    of the release and every thread's later loads follow the acquire.
    """
    tl.debug_barrier()
    tl.atomic_add(COUNT + slot, 1, sem="release", scope="gpu")
    tl.atomic_poll(COUNT + slot, expected, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def step_sync(COUNT, slot, expected, SYNC: tl.constexpr):
    """End of a step: other programs' state is visible before the next step reads it.

    One program per batch tile (not SYNC) only needs its own threads to agree.
    """
    if SYNC:
        grid_barrier(COUNT, slot, expected)
    else:
        tl.debug_barrier()


@dataclass(frozen=True)
class Plan:
    """How a recurrence is launched.

    ``block_b`` x ``block_h``: the batch rows and hidden units one program owns. ``block_k``: the
    depth of one chunk of a recurrent product. ``persistent``: one launch loops over all steps
    (else one launch per step). ``sync``: programs of a batch tile meet at a grid barrier after
    each step (persistent with several hidden tiles; on a GPU the launch is cooperative so all
    programs are resident). ``hold``: the recurrent weights are loaded once, before the time loop,
    and stay in registers.
    """

    block_b: int
    block_h: int
    block_k: int
    persistent: bool
    sync: bool = False
    hold: bool = False
    num_warps: int = 4

    def grid(self, batch: int, hidden: int) -> tuple[int, int]:
        return triton.cdiv(batch, self.block_b), triton.cdiv(hidden, self.block_h)


_MIN_BLOCK = 16  # tl.dot's smallest tile side on NVIDIA GPUs
_TILE_ELEMENTS = 16384  # weight elements one program loads per chunk, or holds across steps
_SPLIT_BLOCK_H = 16  # hidden units per program when the hidden dimension is split
_SPLIT_BLOCK_K = 64


def pad(n: int) -> int:
    """The block size covering ``n``: a power of two, at least tl.dot's minimum."""
    return max(_MIN_BLOCK, triton.next_power_of_2(n))


def plan(gates: int, batch: int, hidden: int, depth: int, device: torch.device,
         single: bool) -> Plan:
    """The launch plan for a recurrence of ``gates`` x ``hidden`` units over products of
    ``depth`` (P for the forward product), ``batch`` rows.

    ``single``: the step needs all hidden units in one program (layer norm, projection, the
    GRU's reset-before form). Small layers also run in one program per batch tile, looping over
    time inside, the weights held in registers when they fit. Larger ones split the hidden units
    over programs that meet at a grid barrier each step when the whole grid fits on the GPU at
    once, else run one launch per step.
    """
    if single or hidden <= 64:  # 16 rows a program: whole rows are in registers; more programs
        block_b, block_h = _MIN_BLOCK, pad(hidden)
        fits = _TILE_ELEMENTS // (gates * block_h)
        block_k = max(_MIN_BLOCK, min(pad(depth), 1 << (fits.bit_length() - 1) if fits else 0))
        hold = block_k >= depth
        return Plan(block_b, block_h, block_k, persistent=True, hold=hold,
                    num_warps=4 if block_h <= 64 else 8)
    # Up to 64 rows a program, so that one stream of W_hh from L2 serves them all.
    block_b, block_h, block_k = min(pad(batch), 64), _SPLIT_BLOCK_H, min(_SPLIT_BLOCK_K, pad(depth))
    programs = triton.cdiv(batch, block_b) * triton.cdiv(hidden, block_h)
    resident = device.type == "cuda" and programs <= torch.cuda.get_device_properties(
        device).multi_processor_count
    # Eight warps: with four, float32 blocks spill registers (ptxas, sm_90).
    return Plan(block_b, block_h, block_k, persistent=resident, sync=resident, num_warps=8)


def precision(dtype: torch.dtype) -> str:
    """tl.dot's input precision: exact fp32 unless torch allows TF32 for matrix products."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def accumulator(dtype: torch.dtype) -> torch.dtype:
    """The dtype of carried cell states and saved gates: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def counters(plan_: Plan, grid: tuple[int, int], steps: int, device) -> torch.Tensor:
    """Zeroed arrival counters for the grid barrier: one per batch tile and step."""
    return torch.zeros(grid[0] if plan_.sync else 1, steps if plan_.sync else 1,
                       dtype=torch.int32, device=device)


def valid(lengths: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """(T, B, 1): 1 where step t is within sequence b's length (lengths (B,) on the device)."""
    t = torch.arange(steps, device=lengths.device)[:, None]
    return (t < lengths[None, :]).to(dtype)[..., None]


def launch(kernel, plan_: Plan, grid: tuple[int, int], steps: int, *args, **constexprs) -> None:
    """Run ``kernel`` over ``steps`` steps: once, looping inside (persistent), or once per step.

    The kernel's last two runtime arguments, after ``args``, are ``s_start, s_stop``: the range of
    step indices a launch covers (the kernel maps them to times, forwards or backwards).
    """
    if args[0].device.type != "cuda" and not isinstance(kernel, InterpretedFunction):
        raise RuntimeError("Triton's kernels were built for a GPU: set TRITON_INTERPRET=1 before "
                           "lstmkit's first Triton run to run them on the CPU")
    options = dict(num_warps=plan_.num_warps)
    if plan_.sync and grid[1] > 1:  # a grid barrier needs every program resident at once
        options["launch_cooperative_grid"] = True
    blocks = dict(BLOCK_B=plan_.block_b, BLOCK_H=plan_.block_h, BLOCK_K=plan_.block_k,
                  HOLD=plan_.hold and plan_.persistent, SYNC=plan_.sync)
    spans = [(0, steps)] if plan_.persistent else [(s, s + 1) for s in range(steps)]
    for start, stop in spans:
        kernel[grid](*args, start, stop, **blocks, **constexprs, **options)


def reference_gradients(family, cfg, names, drop, zoneout, lengths, gx, state, weights, needs,
                        grads) -> list:
    """A scan Function's gradients [d gx, *d state, *d weights (``names`` order, None where
    absent)] given ``grads`` of (y, *final state), as a differentiable graph for a second
    derivative (:mod:`lstmkit.kernels.second_order`): the reference's recurrence run again on
    ``gx`` (recomputed from x, so that its gradient reaches x and the input weights), the same
    masks and the lengths."""
    lens = None if lengths is None else lengths.long().cpu()
    masks = StepMasks(drop, None if zoneout is None else tuple(zoneout))
    run = second_order.scan_outputs(reference.recurrence, family, cfg, names, len(state), lens,
                                    masks)
    return second_order.graph_gradients(run, [gx, *state, *weights], needs, grads)

