"""lstmkit.functional.slstm against the cell's reference step, against NX-AI's vanilla sLSTM
(xlstm), streaming, lengths, and gradcheck."""

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

from lstmkit.cells.slstm import sLSTMConfig, sLSTMState, step
from lstmkit.functional import slstm


def inputs(seed: int, dtype=torch.float64, T: int | None = None):
    """Random sizes: x (B, T, 4H), r (NH, DH, 4, DH)."""
    g = torch.Generator().manual_seed(seed)
    B, NH, DH = (int(x) for x in torch.randint(1, 5, (3,), generator=g))
    T = T or int(torch.randint(1, 30, (1,), generator=g))
    x = torch.randn(B, T, 4 * NH * DH, generator=g, dtype=dtype)
    r = torch.randn(NH, DH, 4, DH, generator=g, dtype=dtype) / DH ** 0.5
    return x.requires_grad_(), r.requires_grad_()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("stabilizer", ["nxai", "paper"])
@pytest.mark.parametrize("forget", ["sigmoid", "exp"])
def test_scan_is_the_cell_step(seed, stabilizer, forget):
    x, r = inputs(seed)
    B, T, G = x.shape
    h, state = slstm(x, r, return_state=True, stabilizer=stabilizer, forget=forget)
    cfg = sLSTMConfig(1, G // 4, num_heads=r.shape[0], forget=forget, stabilizer=stabilizer)
    s = sLSTMState(*x.new_zeros(4, B, G // 4))
    hs = []
    for t in range(T):
        s = step(x[:, t], s, {"weight_hh": r}, cfg)
        hs.append(s.h)
    assert_close(h, torch.stack(hs, 1))
    for a, e in zip(state, s):
        assert_close(a, e)
    # The scan's hand-written backward against autograd through the reference step.
    ga = torch.autograd.grad(probe_loss(h, *state), (x, r))
    ge = torch.autograd.grad(probe_loss(torch.stack(hs, 1), *s), (x, r))
    for a, e, name in zip(ga, ge, ("x", "r")):
        assert_close(a, e, msg=f"gradient of {name}")


def test_stabilizers_give_the_same_outputs():
    x, r = inputs(3)
    nxai = slstm(x, r)
    paper = slstm(x, r, stabilizer="paper")
    assert_close(nxai, paper)
    for a, e in zip(torch.autograd.grad(probe_loss(nxai), (x, r)),
                    torch.autograd.grad(probe_loss(paper), (x, r))):
        assert_close(a, e)


def test_chunks_equal_one_call():
    x, r = inputs(4, T=17)
    h, state = slstm(x, r, return_state=True)
    s, pieces = None, []
    for lo, hi in ((0, 1), (1, 8), (8, 17)):
        out, s = slstm(x[:, lo:hi], r, state=s, return_state=True)
        pieces.append(out)
    assert_close(torch.cat(pieces, 1), h)
    for a, e in zip(s, state):
        assert_close(a, e)


def test_lengths_stop_each_sequence():
    x, r = inputs(5, T=9)
    x = x.detach()[:3] if x.shape[0] >= 3 else x.detach().repeat(3, 1, 1)
    lengths = torch.tensor([9, 4, 1])
    padded = x.clone()
    for b, n in enumerate(lengths):
        padded[b, n:] = float("nan")
    padded.requires_grad_()
    h, state = slstm(padded, r, lengths=lengths, return_state=True)
    # A sum of per-sequence losses: its gradients are the sums of the sequences' own.
    loss = sum(probe_loss(h[b:b + 1, :n], *(t[b:b + 1] for t in state))
               for b, n in enumerate(lengths))
    d_x, d_r = torch.autograd.grad(loss, (padded, r))
    expected_d_r = torch.zeros_like(r)
    for b, n in enumerate(lengths):
        xb = x[b:b + 1, :n].clone().requires_grad_()
        hb, sb = slstm(xb, r, return_state=True)
        assert_close(h[b:b + 1, :n], hb)
        assert torch.all(h[b, n:] == 0)
        for a, e in zip(state, sb):
            assert_close(a[b:b + 1], e)
        d_xb, d_rb = torch.autograd.grad(probe_loss(hb, *sb), (xb, r))
        assert_close(d_x[b:b + 1, :n], d_xb)
        assert torch.all(d_x[b, n:] == 0)
        expected_d_r += d_rb
    assert_close(d_r, expected_d_r)


def test_gradcheck():
    x, r = inputs(6, T=4)
    x = x.detach()[:2, :, :].requires_grad_()
    B, H = x.shape[0], x.shape[-1] // 4
    state = [torch.rand(B, H, dtype=torch.float64).requires_grad_() for _ in range(4)]

    def fn(x, r, *s):
        h, out = slstm(x, r, state=s, return_state=True)
        return (h, *out)

    assert torch.autograd.gradcheck(fn, (x, r, *state))
    assert torch.autograd.gradcheck(lambda x, r: slstm(x, r), (x, r))  # from a fresh state


def test_bad_input_is_refused():
    x, r = (t.detach() for t in inputs(7))
    with pytest.raises(ValueError, match="r: expected shape"):
        slstm(x, r[:, :, :3])
    with pytest.raises(ValueError, match="x: expected shape"):
        slstm(x[..., 1:], r)
    with pytest.raises(ValueError, match="stabilizer: expected one of"):
        slstm(x, r, stabilizer="max")
    with pytest.raises(ValueError, match="state.h: expected shape"):
        slstm(x, r, state=(x[:, 0, :1],) * 4)


# NX-AI's vanilla sLSTM, when installed (the "xlstm" extra).

def nxai_cell(NH: int, DH: int, dtype):
    cell_module = pytest.importorskip("xlstm.blocks.slstm.cell", reason="xlstm is not "
                                      "installed (pip install 'lstmkit[xlstm]')")
    config = cell_module.sLSTMCellConfig(hidden_size=NH * DH, num_heads=NH, backend="vanilla",
                                         dtype="float32", enable_automatic_mixed_precision=False)
    return cell_module.sLSTMCell(config).to(dtype)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_nxai_vanilla_slstm(seed, dtype):
    x64, r64 = inputs(seed)
    NH, DH = r64.shape[:2]
    cell = nxai_cell(NH, DH, dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cell._recurrent_kernel_.copy_(cell._recurrent_kernel_ext2int(r64.to(dtype)))
        cell._bias_.normal_(generator=g)
    x = x64.detach().to(dtype).requires_grad_()
    y, s = cell(x)  # y (B, NH, T, DH), s (4, B, H)
    theirs = (y.permute(0, 2, 1, 3).flatten(2), *s)
    bias = cell.bias.clone().transpose(0, 1).flatten()  # (NH, 4, DH) -> gate-major (4H,)
    r = cell.recurrent_kernel.clone().requires_grad_()
    h, state = slstm(x + bias, r, return_state=True)
    ours = (h, *state)
    if dtype == torch.float64:
        for a, e in zip(ours, theirs):
            assert_close(a, e)
        ga = torch.autograd.grad(probe_loss(*ours), (x, r))
        ge = torch.autograd.grad(probe_loss(*theirs), (x, cell._recurrent_kernel_))
        assert_close(ga[0], ge[0], msg="gradient of x")
        assert_close(ga[1], cell._recurrent_kernel_int2ext(ge[1]), msg="gradient of r")
    else:  # both against float64 truth
        truth = slstm(x64.detach() + bias.double(), r64.detach())
        bound = 1e-5 * (1 + truth.abs().max())
        assert (h.double() - truth).abs().max() <= bound
        assert (theirs[0].double() - truth).abs().max() <= bound


def test_empty_sequence_carries_the_state():
    x, r = inputs(8)
    x = x.detach()[:, :0].requires_grad_()
    state = [torch.rand(x.shape[0], x.shape[-1] // 4, dtype=torch.float64) for _ in range(4)]
    h, out = slstm(x, r, state=state, return_state=True)
    assert h.shape == (x.shape[0], 0, x.shape[-1] // 4)
    for a, e in zip(out, state):
        assert torch.equal(a, e)
    (h.sum() + out.h.sum()).backward()
    assert torch.equal(r.grad, torch.zeros_like(r))
