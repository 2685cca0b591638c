"""The Triton sLSTM kernels (lstmkit/kernels/triton/slstm.py) against the functional scan in
torch: outputs, the final state and the gradients of the input terms, the recurrent matrix and
the initial state, in float64, over the options, lengths and the ways heads share programs;
16-bit inputs against the float64 truth of the same rounded inputs."""

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

from lstmkit.cells.slstm import sLSTMState  # noqa: E402
from lstmkit.functional import slstm  # noqa: E402
from lstmkit.kernels.triton import interpreting  # noqa: E402


def _inputs(B, T, NH, DH, device, dtype=torch.float64, seed=0, fresh=True):
    gen = torch.Generator().manual_seed(seed)
    H = NH * DH
    x = torch.randn(B, T, 4 * H, generator=gen, dtype=torch.float64)
    r = torch.randn(NH, DH, 4, DH, generator=gen, dtype=torch.float64) / DH ** 0.5
    state = [torch.zeros(B, H, dtype=torch.float64) for _ in range(4)] if fresh else \
        [torch.randn(B, H, generator=gen, dtype=torch.float64).abs() + 0.1 for _ in range(4)]
    state_dtype = torch.float32 if dtype.itemsize == 2 else dtype  # functional's 16-bit rule
    return ([t.to(device, dtype).requires_grad_() for t in [x, r]]
            + [t.to(device, state_dtype).requires_grad_() for t in state])


def _run(args, lengths=None, **options):
    x, r, *state = args
    h, final = slstm(x, r, state=sLSTMState(*state), lengths=lengths, return_state=True,
                     **options)
    return [h, *final, *torch.autograd.grad(probe_loss(h, *final), args)]


NAMES = ["h", "final h", "c", "n", "m", "grad x", "grad r",
         *(f"grad initial {n}" for n in "hcnm")]
CASES = {  # name -> (B, T, NH, DH; options; fresh state; lengths)
    "small heads share a program": ((3, 5, 4, 1), {}, True, [5, 2, 4]),
    "heads of 5, exp forget, paper": ((2, 6, 3, 5), dict(forget="exp", stabilizer="paper"),
                                      False, None),
    "NX-AI stabiliser from a used state": ((2, 4, 2, 8), {}, False, [4, 1]),
    "heads too large to hold": ((2, 3, 2, 80), {}, True, None),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_the_torch_scan_in_float64(name, device):
    sizes, options, fresh, lengths = CASES[name]
    args = _inputs(*sizes, device, fresh=fresh)
    lengths = None if lengths is None else torch.tensor(lengths)
    expected = _run(args, lengths, backend="torch", **options)
    actual = _run(args, lengths, backend="triton", **options)
    for label, a, e in zip(NAMES, actual, expected, strict=True):
        assert_close(a, e, torch.float64, msg=label)


def test_second_derivatives_match_the_torch_scan(device):
    """Grad of grad (a gradient penalty) through the kernels equals the torch scan's: their
    backward recomputes through it when a graph is asked for (lstmkit.kernels.second_order)."""
    args = _inputs(2, 4, 2, 3, device, fresh=False)

    def second(backend):
        x, r, *state = args
        h, final = slstm(x, r, state=sLSTMState(*state), lengths=torch.tensor([4, 2]),
                         return_state=True, backend=backend)
        first = torch.autograd.grad(probe_loss(h, *final), args, create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in first), args)

    for label, a, e in zip(["x", "r", "h0", "c0", "n0", "m0"], second("triton"), second("torch"),
                           strict=True):
        assert_close(a, e, torch.float64, msg=label)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_inputs_accumulate_in_float32(dtype, device):
    if dtype == torch.bfloat16 and interpreting():
        pytest.skip("Triton's interpreter computes bfloat16 arithmetic wrongly (numpy has no "
                    "bfloat16); bfloat16 is checked on a GPU (benchmarks/triton_gpu.py --tests)")
    args = _inputs(3, 12, 2, 16, device, dtype=dtype)
    truth = _run([t.detach().double().requires_grad_() for t in args], backend="torch")
    actual = _run(args, backend="triton")
    eps = torch.finfo(dtype).eps
    for label, a, e in zip(NAMES, actual, truth, strict=True):
        in_state = label not in ("h", "grad x", "grad r")  # the state: float32
        assert a.dtype == (torch.float32 if in_state else dtype), label
        error = float((a.double() - e).abs().max())
        assert error <= 2 * eps * float(e.abs().max()) + 1e-6, f"{label}: {error:.3g}"


def test_heads_beyond_the_limit_are_refused_or_left_to_torch(device):
    x, r = (t.detach() for t in _inputs(1, 2, 1, 257, device)[:2])
    with pytest.raises(ValueError, match="head size <= 256, got 257"):
        slstm(x, r, backend="triton")
    assert slstm(x, r).shape == (1, 2, 257)  # auto: torch
