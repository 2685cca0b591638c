"""The lean ``layer.step`` (lstmkit/layers/fused_step.py): where it applies, that it equals the
float64 truth to float32 rounding, that it follows weight changes, and that every bad input is
still refused with the boundary's error."""

import pytest
import torch
from tolerances import conformance_bound

import lstmkit
from lstmkit import LayerConfig, ModelConfig, SequenceModel, cell_config
from lstmkit.cells.lstm import LSTMState
from lstmkit.kernels.cpu import _build
from lstmkit.layers import fused_step

pytestmark = pytest.mark.skipif(_build.problem() is not None,
                                reason=f"the cpu backend {_build.problem()}")
IN, H, T, B = 3, 5, 6, 2


def steps(layer, x, state=None):
    ys = []
    for t in range(x.shape[0]):
        y, state = layer.step(x[t], state)
        ys.append(y)
    return torch.stack(ys), state


def assert_near_truth(got, truth, reduction):
    assert got.dtype == torch.float32
    error = float((got.double() - truth).abs().max())
    assert error <= conformance_bound(truth, None, torch.float32, reduction)


@pytest.mark.parametrize("backend", ["auto", "cpu"])
@pytest.mark.parametrize("batched", [True, False])
def test_steps_equal_the_float64_sequence(backend, batched):
    torch.manual_seed(0)
    layer = lstmkit.LSTM(IN, H, num_layers=2, backend=backend).eval()
    exact = lstmkit.LSTM(IN, H, num_layers=2, dtype=torch.float64, backend="reference").eval()
    exact.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    x = torch.randn(T, B, IN) if batched else torch.randn(T, IN)
    with torch.no_grad():
        assert fused_step.step(layer, x[0], None) is not None
        y, (h, c) = steps(layer, x)
        want, (want_h, want_c) = exact(x.double())
    reduction = T * (IN + 2 * H) * 2
    for got, truth in ((y, want), (h, want_h), (c, want_c)):
        assert got.shape == truth.shape
        assert_near_truth(got, truth, reduction)


def test_a_weight_change_is_followed():
    torch.manual_seed(0)
    layer = lstmkit.LSTM(IN, H).eval()
    x = torch.randn(B, IN)
    with torch.no_grad():
        before, _ = layer.step(x)
        layer.weight_ih_l0.mul_(-1.0)  # in place, as an optimizer step
        after, _ = layer.step(x)
        want, _ = layer.forward(x[None])
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, want[0], rtol=1e-5, atol=1e-6)


def test_where_it_does_not_apply():
    torch.manual_seed(0)
    x = torch.randn(B, IN)
    plain = lstmkit.LSTM(IN, H)
    assert fused_step.step(plain, x, None) is None  # a gradient is wanted
    with torch.no_grad():
        assert fused_step.step(plain, x, None) is not None
        assert fused_step.step(plain, torch.randn(fused_step.MAX_ROWS + 1, IN), None) is None
        for layer in (lstmkit.LSTM(IN, H, backend="native"), lstmkit.LSTM(IN, H, peephole=True),
                      lstmkit.LSTM(IN, H, proj_size=2), lstmkit.GRU(IN, H),
                      lstmkit.LSTM(IN, H, num_layers=2, dropout=0.5).train()):
            assert fused_step.step(layer, x, None) is None, layer
        double = lstmkit.LSTM(IN, H, dtype=torch.float64)
        assert fused_step.step(double, x.double(), None) is None
        plain.double()  # the parameters' dtype changed after a fused step
        assert fused_step.step(plain, x, None) is None


def test_gradients_flow_where_one_is_wanted():
    torch.manual_seed(0)
    layer = lstmkit.LSTM(IN, H)
    y, _ = layer.step(torch.randn(B, IN))
    y.sum().backward()
    assert layer.weight_hh_l0.grad is not None


@pytest.mark.parametrize("state_type", [lambda h, c: (h, c), LSTMState], ids=["tuple", "LSTMState"])
def test_bad_inputs_are_refused_as_before(state_type):
    """A plain tuple takes the general path; a malformed LSTMState reaches the op, whose
    refusal sends it there too: either way the boundary names the problem."""
    layer = lstmkit.LSTM(IN, H, num_layers=2).eval()
    x = torch.randn(B, IN)
    state = layer.init_state(B)
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"hx.h: expected shape \(2, 2, 5\), got"):
            layer.step(x, state_type(state.h[:1], state.c))
        with pytest.raises(ValueError, match=r"hx.c: expected shape \(2, 2, 5\), got"):
            layer.step(x, state_type(state.h, state.c[:, :1]))
        with pytest.raises(TypeError, match="hx.c: expected dtype torch.float32"):
            layer.step(x, state_type(state.h, state.c.double()))
        with pytest.raises(ValueError, match=r"hx.h: expected shape \(2, 1, 5\), got"):
            layer.step(torch.randn(1, IN), state_type(*state))  # one row against a state of two
        with pytest.raises(TypeError, match=r"hx: expected a tuple \(h, c\)"):
            layer.step(x, state.h)
        with pytest.raises(ValueError, match=r"x_t: expected shape \(B, 3\)"):
            layer.step(torch.randn(B, IN + 1), state)
        with pytest.raises(TypeError, match="x_t: expected dtype torch.float32"):
            layer.step(x.double(), state)


def test_output_does_not_alias_the_state():
    layer = lstmkit.LSTM(IN, H).eval()
    with torch.no_grad():
        y, state = layer.step(torch.randn(B, IN))
        h = state.h.clone()
        y.zero_()
    torch.testing.assert_close(state.h, h, rtol=0, atol=0)


@pytest.mark.parametrize("hooked", [False, True])
def test_model_step_applies_the_head(hooked):
    torch.manual_seed(0)
    config = ModelConfig(LayerConfig(cell_config("lstm", IN, H), batch_first=True), 4)
    model = SequenceModel(config).eval()
    if hooked:  # a hook on the head must still run: the head is then called as a module
        model.head.register_forward_hook(lambda module, args, out: out * 2)
    exact = SequenceModel(config, dtype=torch.float64).eval()
    exact.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    x = torch.randn(B, T, IN)
    state, ys = None, []
    with torch.no_grad():
        for t in range(T):
            y, state = model.step(x[:, t], state)
            ys.append(y)
        want, _ = exact(x.double())
    assert_near_truth(torch.stack(ys, 1), want * (2 if hooked else 1), T * (IN + H) + H)
