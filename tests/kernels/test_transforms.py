"""torch.func transforms over the fused backends (lstmkit/_transforms.py), and lengths= under
torch.compile and torch.export: each equals eager, in float64 so that any CPU agrees."""

from __future__ import annotations

import io

import pytest
import torch
from tolerances import assert_close
from torch.func import functional_call, grad, stack_module_state, vmap

import lstmkit
from lstmkit.kernels.cpu import _build

CASES = {
    "native lstm": (lstmkit.LSTM, {}),
    "native gru 2 layers": (lstmkit.GRU, {"num_layers": 2}),
    "cpu lstm peephole": (lstmkit.LSTM, {"peephole": True}),
    "cpu gru": (lstmkit.GRU, {"backend": "cpu"}),
    "xlstm slstm": (lstmkit.sLSTM, {"num_heads": 2}),
}


def _layer(name: str, **extra):
    cls, options = CASES[name]
    layer = cls(3, 4, dtype=torch.float64, **options, **extra)
    if getattr(layer, "backend", None) and layer.backend().name == "cpu" \
            and (reason := _build.problem()):
        pytest.skip(f"the cpu backend {reason}")
    return layer


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", CASES)
def test_vmap_over_inputs_and_over_stacked_weights_equals_a_loop(name):
    layers = [_layer(name) for _ in range(3)]
    x = torch.randn(3, 5, 2, 3, dtype=torch.float64)
    out = vmap(lambda xi: layers[0](xi)[0])(x)
    assert_close(out, torch.stack([layers[0](xi)[0] for xi in x]), torch.float64)
    params, buffers = stack_module_state(layers)  # an ensemble: weights vmapped too
    out = vmap(lambda p, b: functional_call(layers[0], (p, b), (x[0],))[0])(params, buffers)
    assert_close(out, torch.stack([layer(x[0])[0] for layer in layers]), torch.float64)


@pytest.mark.parametrize("name", CASES)
def test_per_sample_gradients_from_vmap_of_grad_equal_autograd(name):
    layer = _layer(name)
    params = dict(layer.named_parameters())

    def loss(p, xi):  # one sequence (T, I) as a batch of one
        y, _ = functional_call(layer, p, (xi.unsqueeze(1),))
        return (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum()

    xs = torch.randn(3, 5, 3, dtype=torch.float64)
    got = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for index, xi in enumerate(xs):
        expected = torch.autograd.grad(loss(params, xi), list(params.values()))
        for name_, want in zip(params, expected):
            assert_close(got[name_][index], want, torch.float64)


@pytest.mark.parametrize("name", CASES)
def test_higher_order_transforms_equal_eager_autograd(name):
    """grad of grad, jvp and hessian under torch.func equal eager autograd's (whose second
    derivatives the conformance table checks on every backend). They gave a second derivative
    of exactly 0 and refused jvp: the operators' registered backwards are once
    differentiable, so the layers now run the reference's ops under such transforms."""
    layer = _layer(name)
    weight = torch.randn(4, 2, 4, dtype=torch.float64)

    def loss(x):
        return (weight * layer(x)[0] ** 2).sum()

    x, v = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    leaf = x.clone().requires_grad_()
    (first,) = torch.autograd.grad(loss(leaf), leaf, create_graph=True)
    (second,) = torch.autograd.grad((first ** 2).sum(), leaf)
    assert second.abs().max() > 0
    assert_close(grad(lambda x: (grad(loss)(x) ** 2).sum())(x), second, torch.float64)
    assert_close(torch.func.jvp(loss, (x,), (v,))[1], (first * v).sum(), torch.float64)
    assert_close(torch.func.hessian(loss)(x), torch.autograd.functional.hessian(loss, x),
                 torch.float64)


@pytest.mark.parametrize("name", ["native lstm", "cpu lstm peephole"])
def test_compiled_lengths_make_one_graph_equal_to_eager_and_bad_ones_raise(name):
    from torch._dynamo.testing import CompileCounterWithBackend

    layer = _layer(name)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, backend=counter, fullgraph=True, dynamic=True)
    frames = []
    for steps, batch in ((5, 6), (7, 8), (9, 5)):
        x = torch.randn(steps, batch, 3, dtype=torch.float64, requires_grad=True)
        lengths = torch.randint(2, steps + 1, (batch,))
        y, state = compiled(x, lengths=lengths)
        want, want_state = layer(x, lengths=lengths)
        assert_close(y, want, torch.float64)
        assert_close(state.c, want_state.c, torch.float64)
        assert_close(torch.autograd.grad(y.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0],
                     torch.float64)
        frames.append(counter.frame_count)
    assert frames[0] == frames[-1], f"recompiled: frames after each shape {frames}"
    with pytest.raises(RuntimeError, match=r"lengths: expected values in 1\.\.T"):
        compiled(torch.randn(4, 6, 3, dtype=torch.float64),
                 lengths=torch.tensor([4, 0, 1, 2, 3, 4]))


class _WithLengths(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, lengths):
        return self.layer(x, lengths=lengths)[0]


@pytest.mark.parametrize("name", ["native lstm", "cpu lstm peephole"])
def test_exported_program_with_lengths_equals_eager_at_new_sizes(name):
    model = _WithLengths(_layer(name)).eval()
    steps, batch = torch.export.Dim("time", min=2), torch.export.Dim("batch", min=2)
    program = torch.export.export(
        model, (torch.randn(5, 6, 3, dtype=torch.float64), torch.tensor([5, 4, 3, 3, 2, 1])),
        dynamic_shapes={"x": {0: steps, 1: batch}, "lengths": {0: batch}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    for t, b in ((7, 3), (2, 5)):
        x, lengths = torch.randn(t, b, 3, dtype=torch.float64), torch.randint(1, t + 1, (b,))
        with torch.no_grad():
            assert_close(loaded(x, lengths), model(x, lengths), torch.float64)
    with pytest.raises(RuntimeError, match=r"lengths: expected values in 1\.\.T"):
        loaded(torch.randn(3, 2, 3, dtype=torch.float64), torch.tensor([4, 1]))
