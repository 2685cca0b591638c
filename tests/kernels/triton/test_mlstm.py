"""The Triton chunkwise mLSTM kernels (lstmkit/kernels/triton/mlstm.py) against the recurrent
form in torch: outputs, the final state and the gradients of every input and of the initial state,
in float64, over chunk sizes, lengths, options and multi-block heads; 16-bit inputs against the
float64 truth of the same rounded inputs; the functional API's backend selection."""

import math

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

from lstmkit.cells.mlstm import mLSTMState  # noqa: E402
from lstmkit.functional import mlstm  # noqa: E402
from lstmkit.kernels.triton import interpreting  # noqa: E402


def _inputs(B, NH, T, DK, DV, device, dtype=torch.float64, seed=0, state=True):
    gen = torch.Generator().manual_seed(seed)
    args = [torch.randn(B, NH, T, DK, generator=gen, dtype=torch.float64) for _ in range(2)]
    args += [torch.randn(B, NH, T, DV, generator=gen, dtype=torch.float64)]
    args += [2 * torch.randn(B, NH, T, generator=gen, dtype=torch.float64),  # i~
             3 + torch.randn(B, NH, T, generator=gen, dtype=torch.float64)]  # f~: long memory
    initial = [torch.randn(B, NH, DK, DV, generator=gen, dtype=torch.float64),
               torch.randn(B, NH, DK, generator=gen, dtype=torch.float64).abs(),
               torch.randn(B, NH, generator=gen, dtype=torch.float64)] if state else \
        [torch.zeros(shape, dtype=torch.float64) for shape in ((B, NH, DK, DV), (B, NH, DK),
                                                               (B, NH))]
    state_dtype = torch.float32 if dtype.itemsize == 2 else dtype  # functional's 16-bit rule
    return ([t.to(device, dtype).requires_grad_() for t in args]
            + [t.to(device, state_dtype).requires_grad_() for t in initial])


def _run(args, lengths=None, **options):
    """[h, C, n, m, gradients of q, k, v, i, f, C0, n0, m0] through probe_loss."""
    q, k, v, i, f, C, n, m = args
    h, state = mlstm(q, k, v, i, f, state=mLSTMState(C, n, m), lengths=lengths,
                     return_state=True, **options)
    return [h, *state, *torch.autograd.grad(probe_loss(h, *state), args)]


NAMES = ["h", "C", "n", "m", *(f"grad {n}" for n in ("q", "k", "v", "i", "f", "C0", "n0", "m0"))]

CASES = {  # name -> (sizes B, NH, T, DK, DV; options; lengths)
    "chunks of 16, T not a multiple": ((2, 2, 37, 8, 6), dict(chunk_size=16), None),
    "one partial chunk, lengths": ((3, 1, 7, 4, 4), dict(chunk_size=64), [7, 2, 5]),
    "chunks of 5, exp forget, eps 0": ((1, 2, 12, 3, 5), dict(chunk_size=5, forget="exp",
                                                             eps=0.0), [12]),
    "blocks of keys and values": ((1, 1, 20, 80, 70), dict(chunk_size=16), None),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_the_recurrent_form_in_float64(name, device):
    sizes, options, lengths = CASES[name]
    args = _inputs(*sizes, device)
    lengths = None if lengths is None else torch.tensor(lengths)
    expected = _run(args, lengths, form="recurrent", backend="torch",
                    **{k: v for k, v in options.items() if k != "chunk_size"})
    actual = _run(args, lengths, form="chunkwise", backend="triton", **options)
    for label, a, e in zip(NAMES, actual, expected, strict=True):
        assert_close(a, e, torch.float64, msg=label)


def test_second_derivatives_match_the_chunkwise_form_in_torch(device):
    """Grad of grad (a gradient penalty) through the kernels equals torch's chunkwise form's:
    their backward recomputes the kernels' two maps in torch when a graph is asked for."""
    args = _inputs(1, 2, 11, 3, 4, device)

    def second(backend):
        q, k, v, i, f, C, n, m = args
        h, state = mlstm(q, k, v, i, f, state=mLSTMState(C, n, m), lengths=torch.tensor([9]),
                         return_state=True, chunk_size=4, backend=backend)
        first = torch.autograd.grad(probe_loss(h, *state), args, create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in first), args)

    for label, a, e in zip(NAMES[4:], second("triton"), second("torch"), strict=True):
        assert_close(a, e, torch.float64, msg=label)


def test_a_zero_state_and_state_carried_between_calls(device):
    args = _inputs(2, 2, 24, 4, 4, device, state=False)
    q, k, v, i, f, C, n, m = (t.detach() for t in args)
    whole, last = mlstm(q, k, v, i, f, chunk_size=16, return_state=True, backend="triton")
    first, mid = mlstm(q[:, :, :9], k[:, :, :9], v[:, :, :9], i[..., :9], f[..., :9],
                       chunk_size=16, return_state=True, backend="triton")
    second, end = mlstm(q[:, :, 9:], k[:, :, 9:], v[:, :, 9:], i[..., 9:], f[..., 9:],
                        chunk_size=16, state=mid, return_state=True, backend="triton")
    assert_close(torch.cat([first, second], 2), whole, torch.float64)
    for a, e in zip(end, last):
        assert_close(a, e, torch.float64)
    assert_close(whole, mlstm(q, k, v, i, f, form="recurrent"), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_inputs_accumulate_in_float32(dtype, device):
    """The result is the float64 one of the same (rounded) inputs up to the rounding of the
    16-bit outputs: the state and every product stay in float32."""
    if dtype == torch.bfloat16 and interpreting():
        pytest.skip("Triton's interpreter computes bfloat16 arithmetic wrongly (numpy has no "
                    "bfloat16); bfloat16 is checked on a GPU (benchmarks/triton_gpu.py --tests)")
    args = _inputs(2, 2, 40, 16, 16, device, dtype=dtype, state=False)
    truth = _run([t.detach().double().requires_grad_() for t in args], form="recurrent",
                 backend="torch")
    actual = _run(args, chunk_size=16, backend="triton")
    eps = torch.finfo(dtype).eps
    for label, a, e in zip(NAMES, actual, truth, strict=True):
        in_state = label in ("C", "n", "m") or label.endswith("0")
        assert a.dtype == (torch.float32 if in_state else dtype), label  # the state: float32
        error = float((a.double() - e).abs().max())
        assert error <= 2 * eps * float(e.abs().max()) + 1e-6, f"{label}: {error:.3g}"


def test_backend_selection(monkeypatch, device):
    q, k, v, i, f = _inputs(1, 1, 4, 2, 2, device)[:5]
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', 'torch', "
                                         r"'triton'\), got 'cuda'"):
        mlstm(q, k, v, i, f, backend="cuda")
    with pytest.raises(ValueError, match="computes the chunkwise form only, got form='parallel'"):
        mlstm(q, k, v, i, f, form="parallel", backend="triton")
    if device.type == "cpu":
        from lstmkit.kernels.triton import mlstm as kernels

        def fail(*args):
            raise AssertionError("auto ran the Triton kernels on a CPU tensor")

        monkeypatch.setattr(kernels, "chunkwise", fail)
        mlstm(q, k, v, i, f)  # auto: torch on the CPU
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(ValueError, match="backend='triton': Triton runs on CUDA devices"):
            mlstm(q, k, v, i, f, backend="triton")


def test_stabiliser_of_a_long_sequence_keeps_its_precision(device):
    """Log forget gates summed over many chunks (about -1e4 here) must not reach m: the
    chunk-level stabiliser is summed in float64."""
    B, NH, T, D = 1, 1, 2048, 2
    args = _inputs(B, NH, T, D, D, device, dtype=torch.float32, state=False)
    q, k, v, i, _, *_ = (t.detach() for t in args)
    f = torch.full((B, NH, T), -5.0, device=device)  # log f ~ -5 per step
    _, state = mlstm(q, k, v, i, f, chunk_size=64, return_state=True, backend="triton")
    _, exact = mlstm(*(t.double() for t in (q, k, v, i, f)), form="recurrent",
                     return_state=True)
    assert math.isclose(float(state.m), float(exact.m), rel_tol=0, abs_tol=1e-4)
