"""lstmkit.functional.mlstm: its three forms against each other, against the step, against
NX-AI's mlstm_kernels (parallel, chunkwise and recurrent native kernels), and gradcheck."""

import math

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

from lstmkit.cells.mlstm import mLSTMState, step
from lstmkit.functional import mlstm


def inputs(seed: int, dtype=torch.float64, T: int | None = None):
    """Random sizes and values from ``seed``: q, k, v, i, f and the sizes."""
    g = torch.Generator().manual_seed(seed)
    B, NH = (int(x) for x in torch.randint(1, 4, (2,), generator=g))
    DK, DV = (int(x) for x in torch.randint(1, 9, (2,), generator=g))
    T = T or int(torch.randint(1, 50, (1,), generator=g))
    q = torch.randn(B, NH, T, DK, generator=g, dtype=dtype)
    k = torch.randn(B, NH, T, DK, generator=g, dtype=dtype)
    v = torch.randn(B, NH, T, DV, generator=g, dtype=dtype)
    i = torch.randn(B, NH, T, generator=g, dtype=dtype)
    f = torch.randn(B, NH, T, generator=g, dtype=dtype) + 2.0
    return [t.requires_grad_() for t in (q, k, v, i, f)]


def run(form, args, **options):
    h, state = mlstm(*args, form=form, return_state=True, **options)
    return (h, *state)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("form", ["parallel", "chunkwise"])
@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_forms_equal_the_recurrent_form(seed, form, forget):
    args = inputs(seed)
    if forget == "exp":  # keep exp(f~) a forget gate below 1 most of the time
        args[4] = (args[4] - 4.0).detach().requires_grad_()
    expected = run("recurrent", args, forget=forget)
    actual = run(form, args, chunk_size=1 + seed * 5, forget=forget)
    for a, e in zip(actual, expected):
        assert_close(a, e)
    ga = torch.autograd.grad(probe_loss(*actual[:1]), args)
    ge = torch.autograd.grad(probe_loss(*expected[:1]), args)
    for a, e, name in zip(ga, ge, "qkvif"):
        assert_close(a, e, msg=f"gradient of {name}")


def test_recurrent_form_is_the_cell_step():
    q, k, v, i, f = inputs(5)
    h, state = mlstm(q, k, v, i, f, form="recurrent", return_state=True)
    B, NH, _, DK = q.shape
    s = mLSTMState(q.new_zeros(B, NH, DK, v.shape[-1]), q.new_zeros(B, NH, DK), q.new_zeros(B, NH))
    for t in range(q.shape[2]):
        h_t, s = step(q[:, :, t], k[:, :, t], v[:, :, t], i[:, :, t], f[:, :, t], s)
        assert_close(h[:, :, t], h_t)
    for a, e in zip(state, s):
        assert_close(a, e)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_chunks_and_steps_equal_one_call(form):
    args = inputs(6, T=23)
    h, state = mlstm(*args, form=form, chunk_size=4, return_state=True)
    s, pieces = None, []
    for lo, hi in ((0, 1), (1, 9), (9, 10), (10, 23)):
        part = [t[:, :, lo:hi] for t in args]
        out, s = mlstm(*part, form=form, chunk_size=4, state=s, return_state=True)
        pieces.append(out)
    assert_close(torch.cat(pieces, 2), h)
    for a, e in zip(s, state):
        assert_close(a, e)


def test_padding_chunks_leave_the_state_unchanged():
    args = inputs(7, T=10)
    _, exact = mlstm(*args, chunk_size=5, return_state=True)
    _, padded = mlstm(*args, chunk_size=7, return_state=True)  # 10 = 7 + 3, padded to 14
    for a, e in zip(padded, exact):
        assert_close(a, e)


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_lengths_stop_each_sequence(form, forget):
    q, k, v, i, f = (t.detach() for t in inputs(12, T=11))
    q, k, v, i, f = (t.expand(3, *t.shape[1:]).clone() for t in (q, k, v, i, f))
    lengths = torch.tensor([11, 5, 1])
    padded = [t.clone() for t in (q, k, v, i, f)]
    for t in padded:
        for b, n in enumerate(lengths):
            t[b, :, n:] = float("nan")
    h, state = mlstm(*padded, form=form, chunk_size=4, lengths=lengths, return_state=True,
                     forget=forget)
    for b, n in enumerate(lengths):
        hb, sb = mlstm(*(t[b:b + 1, :, :n] for t in (q, k, v, i, f)), form=form, chunk_size=4,
                       return_state=True, forget=forget)
        assert_close(h[b:b + 1, :, :n], hb)
        assert torch.all(h[b, :, n:] == 0)
        for a, e in zip(state, sb):
            assert_close(a[b:b + 1], e)


def test_float32_is_close_to_float64_truth():
    args64 = inputs(8, T=64)
    truth = mlstm(*args64, form="recurrent")
    scale = truth.abs().max()
    for form in ("parallel", "chunkwise", "recurrent"):
        h = mlstm(*[t.detach().float() for t in args64], form=form, chunk_size=16).double()
        assert (h - truth).abs().max() <= 1e-5 * (1 + scale), form


@pytest.mark.parametrize("form", ["parallel", "chunkwise", "recurrent"])
def test_gradcheck(form):
    args = [t.detach()[..., :5].requires_grad_() if t.dim() == 3 else
            t.detach()[:, :, :5, :3].requires_grad_() for t in inputs(9, T=5)]
    B, NH, _, DK = args[0].shape
    DV = args[2].shape[-1]
    g = torch.Generator().manual_seed(1)
    state = [torch.randn(B, NH, DK, DV, generator=g, dtype=torch.float64).requires_grad_(),
             torch.randn(B, NH, DK, generator=g, dtype=torch.float64).requires_grad_(),
             torch.randn(B, NH, generator=g, dtype=torch.float64).requires_grad_()]

    def fn(*xs):
        h, s = mlstm(*xs[:5], form=form, chunk_size=2, state=xs[5:], return_state=True)
        return (h, *s)

    assert torch.autograd.gradcheck(fn, (*args, *state))


def test_bad_input_is_refused():
    q, k, v, i, f = (t.detach() for t in inputs(10, T=4))
    with pytest.raises(ValueError, match="form: expected one of"):
        mlstm(q, k, v, i, f, form="scan")
    with pytest.raises(ValueError, match="k: expected shape"):
        mlstm(q, k[..., :0], v, i, f)
    with pytest.raises(ValueError, match="i: expected shape"):
        mlstm(q, k, v, i[..., :2], f)
    with pytest.raises(ValueError, match="chunk_size: expected an int >= 1"):
        mlstm(q, k, v, i, f, chunk_size=0)
    with pytest.raises(ValueError, match=r"state.m: expected shape"):
        mlstm(q, k, v, i, f, state=(q.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1]),
                                    q.new_zeros(*q.shape[:2], q.shape[-1]), q.new_zeros(1)))


# NX-AI's kernels, when installed (the "xlstm" extra).

def nxai_kernels():
    return pytest.importorskip("mlstm_kernels.torch", reason="mlstm_kernels is not installed "
                               "(pip install 'lstmkit[xlstm]')")


def grads(outputs, args):
    return torch.autograd.grad(probe_loss(*outputs), args)


@pytest.mark.parametrize("seed", range(4))
def test_parallel_matches_nxai_parallel_kernel(seed):
    kernels = nxai_kernels()
    args = inputs(seed)
    theirs = kernels.get_mlstm_kernel("parallel--native_autograd")(*args)
    # NX-AI's parallel form starts with no stabiliser at all: m_0 = -inf.
    B, NH, _, DK = args[0].shape
    none = (args[0].new_zeros(B, NH, DK, args[2].shape[-1]), args[0].new_zeros(B, NH, DK),
            args[0].new_full((B, NH), -math.inf))
    expected = grads([theirs], args)
    for form in ("parallel", "chunkwise", "recurrent"):
        ours = mlstm(*args, form=form, chunk_size=8, state=none)
        assert_close(ours, theirs)
        for a, e in zip(grads([ours], args), expected):
            assert_close(a, e)


@pytest.mark.parametrize("seed", range(4))
def test_forms_match_nxai_chunkwise_and_recurrent_kernels(seed):
    kernels = nxai_kernels()
    from mlstm_kernels.torch.recurrent.native_sequence import mlstm_recurrent_sequence__native_fw
    args = inputs(seed, T=8 * (1 + seed))
    h_c, (C, n, m) = kernels.get_mlstm_kernel("chunkwise--native_autograd")(
        *args, chunk_size=8, return_last_states=True)
    h_r, _ = mlstm_recurrent_sequence__native_fw(*args, return_last_states=True,
                                                 dtype_state=torch.float64)
    theirs = (h_c, C, n, m.squeeze(-1))
    expected = grads(theirs, args)
    for form in ("parallel", "chunkwise", "recurrent"):
        ours = run(form, args, chunk_size=8)
        for a, e in zip(ours, theirs):
            assert_close(a, e)
        assert_close(ours[0], h_r)
        for a, e in zip(grads(ours, args), expected):
            assert_close(a, e)


def test_float32_error_matches_nxai_level():
    """Both implementations, in float32, against lstmkit's float64 recurrent truth."""
    kernels = nxai_kernels()
    args64 = inputs(11, T=128)
    truth = mlstm(*args64, form="recurrent")
    args32 = [t.detach().float() for t in args64]
    theirs = kernels.get_mlstm_kernel("chunkwise--native_autograd")(*args32, chunk_size=64)
    ours = mlstm(*args32, chunk_size=64)
    scale = 1 + truth.abs().max()
    assert (theirs.double() - truth).abs().max() <= 1e-5 * scale
    assert (ours.double() - truth).abs().max() <= 1e-5 * scale
