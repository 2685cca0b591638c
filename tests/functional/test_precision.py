"""16-bit inputs with float32 state and arithmetic: lstmkit.functional and the xlstm backend in
bfloat16 and float16, bounded against float64 computed from the same (rounded) inputs, so the
bound measures the kernel and not the inputs' rounding."""

import pytest
import torch

from lstmkit.config import LayerConfig, cell_config
from lstmkit.functional import mlstm, slstm
from lstmkit.layers import layer_from_config

HALF = [torch.bfloat16, torch.float16]


def _rounded(tensors, dtype):
    """The 16-bit inputs (leaves) and the float64 copies of exactly their values."""
    low = [t.to(dtype).requires_grad_() for t in tensors]
    return low, [t.detach().double().requires_grad_() for t in low]


def _assert_within_rounding(actual, truth, dtype, name, slack=1.0):
    """Each element within a few units of rounding of ``dtype`` of its float64 truth, plus a
    floor for the float32 arithmetic (far below 16-bit rounding)."""
    eps = torch.finfo(dtype).eps
    bound = slack * eps * truth.abs() + 1e-4 * float(truth.abs().max())
    error = (actual.double() - truth).abs()
    assert (error <= bound).all(), f"{name}: error {float(error.max()):.3g}, bound at the " \
                                   f"worst element {float(bound.flatten()[error.argmax()]):.3g}"


def _mlstm_inputs(seed, T=37):
    g = torch.Generator().manual_seed(seed)
    q, k, v = torch.randn(3, 2, 3, T, 8, generator=g).unbind(0)
    i, f = torch.randn(2, 2, 3, T, generator=g).unbind(0)
    return [q, k, v, i, f + 2.0]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("form", ["chunkwise", "parallel", "recurrent"])
def test_mlstm_16_bit_inputs_float32_state(dtype, form):
    low, exact = _rounded(_mlstm_inputs(0), dtype)
    h, state = mlstm(*low, form=form, chunk_size=8, return_state=True)
    truth, truth_state = mlstm(*exact, form=form, chunk_size=8, return_state=True)
    assert h.dtype == dtype and all(t.dtype == torch.float32 for t in state)
    _assert_within_rounding(h, truth.detach(), dtype, "h")
    for name, s, t in zip("Cnm", state, truth_state):  # float32 state: float32 accuracy
        torch.testing.assert_close(s.double(), t.detach(), rtol=1e-4, atol=1e-4, msg=name)
    probe = torch.randn(h.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    h.backward(probe)
    truth.backward(probe.double())
    for name, a, b in zip("qkvif", low, exact):
        assert a.grad.dtype == dtype
        _assert_within_rounding(a.grad, b.grad, dtype, f"d{name}", slack=2.0)


@pytest.mark.parametrize("dtype", HALF)
def test_mlstm_16_bit_chunks_carry_a_float32_state(dtype):
    low, _ = _rounded(_mlstm_inputs(2, T=20), dtype)
    whole = mlstm(*low, chunk_size=4)
    first, state = mlstm(*(t[..., :9, :] if t.dim() == 4 else t[..., :9] for t in low),
                         chunk_size=4, return_state=True)
    rest = mlstm(*(t[..., 9:, :] if t.dim() == 4 else t[..., 9:] for t in low), chunk_size=4,
                 state=state)
    torch.testing.assert_close(torch.cat([first, rest], 2), whole, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"state.C: expected torch.float32 \(the state of"):
        mlstm(*low, state=tuple(t.to(dtype) for t in state))


@pytest.mark.parametrize("dtype", HALF)
def test_slstm_16_bit_inputs_float32_state(dtype):
    g = torch.Generator().manual_seed(3)
    low, exact = _rounded([torch.randn(2, 29, 32, generator=g),
                           0.3 * torch.randn(4, 2, 4, 2, generator=g)], dtype)
    h, state = slstm(*low, return_state=True)
    truth, truth_state = slstm(*exact, return_state=True)
    assert h.dtype == dtype and all(t.dtype == torch.float32 for t in state)
    _assert_within_rounding(h, truth.detach(), dtype, "h")
    probe = torch.randn(h.shape, generator=g).to(dtype)
    h.backward(probe)
    truth.backward(probe.double())
    for name, a, b in zip(("x", "r"), low, exact):
        # dr sums over B * T steps in float32 before its one rounding
        _assert_within_rounding(a.grad, b.grad, dtype, f"d{name}", slack=2.0)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("family", ["slstm", "mlstm"])
def test_xlstm_backend_runs_16_bit_layers(dtype, family):
    """A 16-bit layer's products round their outputs to 16 bits (torch's rule), so its error
    grows with those roundings: bounded by a multiple of the dtype's eps, against the float64
    layer with the same (rounded) weights."""
    config = LayerConfig(cell_config(family, 6, 16, num_heads=2), num_layers=2,
                         batch_first=True, backend="xlstm")
    torch.manual_seed(0)
    layer = layer_from_config(config, dtype=dtype)
    exact = layer_from_config(config, dtype=torch.float64)
    exact.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    x = torch.randn(3, 11, 6).to(dtype)
    lengths = torch.tensor([11, 6, 2])
    y, state = layer(x, lengths=lengths)
    truth, truth_state = exact(x.double(), lengths=lengths)
    assert y.dtype == dtype and all(t.dtype == dtype for t in state)
    truth = truth.detach()
    scale = float(truth.abs().max())
    assert float((y.double() - truth).abs().max()) <= 16 * torch.finfo(dtype).eps * scale
    y2, _ = layer(x[:, :4], state)  # a 16-bit state goes back in
    assert y2.dtype == dtype
