"""The Triton kernels as torch.library custom operators (lstmkit/kernels/triton/ops.py):
torch.library.opcheck on each (schema, fake kernel, registered autograd, AOT dispatch with
dynamic shapes), and torch.compile(fullgraph=True, dynamic=True) over Triton layers equal to
eager, forward and gradients, with one graph for two (T, B).

Under Triton's interpreter on the CPU (conftest.py), in float64 so that any CPU agrees, on tiny
sizes: the interpreter runs a kernel's every program in Python.
"""

from __future__ import annotations

import pytest
import torch
from support import parts, probe_loss
from tolerances import assert_close

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

import lstmkit  # noqa: E402
from lstmkit.config import LayerConfig, cell_config  # noqa: E402
from lstmkit.layers import layer_from_config  # noqa: E402

F64 = dict(dtype=torch.float64)
LENGTHS = torch.tensor([4, 2], dtype=torch.int32)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _leaf(*shape) -> torch.Tensor:
    return torch.randn(*shape, **F64).requires_grad_()


def _scan_args(family: str, lengths, save: bool, **options):
    """A call of lstmkit::triton_scan as the kernels' scan makes it: T=4, B=2, H=4."""
    from lstmkit.kernels.triton import gru, lstm, ops

    kernels = {"lstm": lstm, "gru": gru}[family]
    cfg = cell_config(family, 3, 4, **options)
    layer = layer_from_config(LayerConfig(cfg, backend="triton"), **F64)
    weights = layer.cell_weights()[0][0]
    names = [name for name in kernels.WEIGHTS if weights.get(name) is not None]
    gates, out = {"lstm": 4, "gru": 3}[family], cfg.output_size
    state = [_leaf(2, out)] + ([_leaf(2, 4)] if family == "lstm" else [])
    zoneout = [torch.rand(4, 2, out, **F64)] + ([torch.rand(4, 2, 4, **F64)]
                                                 if family == "lstm" else [])
    return (ops._text(cfg), _leaf(4, 2, gates * 4), state, ",".join(names),
            [weights[n].detach().clone().requires_grad_() for n in names],
            torch.bernoulli(torch.full((2, out), 0.7, **F64)), zoneout, lengths, save)


@pytest.mark.parametrize(("family", "lengths", "save", "options"), [
    ("lstm", LENGTHS, True, {"peephole": True, "layer_norm": True, "proj_size": 3,
                             "cell_clip": 0.5}),
    ("lstm", None, False, {"coupled": True}),
    ("gru", LENGTHS, True, {"reset_after": False}),
], ids=["lstm variants lengths", "lstm coupled unsaved", "gru reset before"])
def test_opcheck_triton_scan(family, lengths, save, options):
    from lstmkit.kernels.triton import ops

    torch.library.opcheck(ops.scan_op, _scan_args(family, lengths, save, **options))


def test_opcheck_triton_slstm_scan():
    from lstmkit.kernels.triton import ops

    r = (torch.randn(2, 2, 4, 2, **F64) / 2).requires_grad_()  # (NH, DH, 4, DH): H = 4
    state = [_leaf(2, 4), _leaf(2, 4), torch.rand(2, 4, **F64).add(1).requires_grad_(),
             _leaf(2, 4)]  # h, c, n > 0, m
    torch.library.opcheck(ops.slstm_op, (_leaf(4, 2, 16), r, state, LENGTHS, "sigmoid", "nxai",
                                         True))


def test_opcheck_triton_mlstm_chunkwise():
    """On what lstmkit.kernels.triton.mlstm.chunkwise passes: T' = 4 steps in 2 chunks of 2."""
    from lstmkit.kernels.triton import ops

    heads, steps, keys, values = 2, 4, 2, 3  # BH, T', DK, E
    stabilised = torch.rand(heads, steps, **F64).neg()  # exponents <= 0, as the stabiliser keeps
    args = (_leaf(heads, steps, keys), _leaf(heads, steps, keys), _leaf(heads, steps, values),
            *(stabilised.clone().requires_grad_() for _ in range(3)),
            torch.rand(heads, 2, **F64).neg().requires_grad_(),
            stabilised.clone().requires_grad_(), _leaf(heads, keys, values), 2, keys ** -0.5)
    torch.library.opcheck(ops.mlstm_op, args)


SHAPES = ((5, 6), (7, 8))
"""(T, B): one graph must serve both. None equals a fixed size (I=3, H=4, P=2): duck
sizing gives equal sizes one symbol."""

CASES = {
    "lstm variants": lambda: lstmkit.LSTM(3, 4, backend="triton", peephole=True,
                                          layer_norm=True, proj_size=2, zoneout=0.2, **F64),
    "gru": lambda: lstmkit.GRU(3, 4, backend="triton", **F64),
    "slstm": lambda: layer_from_config(LayerConfig(cell_config("slstm", 3, 4, num_heads=2),
                                                   backend="triton_xlstm"), **F64),
}
"""An LSTM with the options that change the kernels' saved buffers (evaluation: zoneout's
expectation), the GRU, and an xLSTM family, each on its Triton backend. (The mLSTM compiles as
well, one graph equal to eager, but tracing its chunkwise form costs 20 s here: its operator
is checked by opcheck, whose AOT dispatch runs it with dynamic shapes.)"""


def _run(layer, x, lengths):
    x = x.detach().requires_grad_()
    y, state = layer(x, lengths=lengths)
    grads = torch.autograd.grad(probe_loss(y, *parts(state)), [x, *layer.parameters()])
    return [y, *parts(state), *grads]


@pytest.mark.parametrize("name", CASES)
def test_compile_one_graph_for_two_lengths_and_batches(name):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch.manual_seed(0)
    layer = CASES[name]().eval()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, backend=counter, fullgraph=True, dynamic=True)
    graphs = []
    for steps, batch in SHAPES:  # fullgraph: a graph break raises
        x = torch.randn(steps, batch, 3, **F64)
        lengths = torch.arange(batch) % steps + 1  # ragged, one of full length
        for got, expected in zip(_run(compiled, x, lengths), _run(layer, x, lengths),
                                 strict=True):
            assert_close(got, expected, torch.float64)
        graphs.append(counter.frame_count)
    assert graphs[0] == graphs[-1], f"recompiled: frames after each shape {graphs}"


def test_per_sample_gradients_from_vmap_of_grad_equal_autograd():
    """torch.func over the operator (lstmkit._transforms): its vmap rule loops the kernel."""
    from torch.func import functional_call, grad, vmap

    layer = lstmkit.GRU(3, 4, backend="triton", **F64)
    params = dict(layer.named_parameters())

    def loss(p, xi):  # one sequence (T, I) as a batch of one
        y, _ = functional_call(layer, p, (xi.unsqueeze(1),))
        return (y * torch.linspace(-1, 1, y.shape[-1], **F64)).sum()

    xs = torch.randn(2, 5, 3, **F64)
    got = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for index, xi in enumerate(xs):
        expected = torch.autograd.grad(loss(params, xi), list(params.values()))
        for name, want in zip(params, expected, strict=True):
            assert_close(got[name][index], want, torch.float64)


def test_exported_program_equals_eager_at_new_sizes_after_save_and_load():
    import io

    layer = CASES["lstm variants"]().eval()
    steps, batch = torch.export.Dim("time", min=2), torch.export.Dim("batch", min=2)
    program = torch.export.export(
        layer, (torch.randn(5, 6, 3, **F64),), {"lengths": torch.tensor([5, 4, 3, 3, 2, 1])},
        dynamic_shapes={"input": {0: steps, 1: batch}, "lengths": {0: batch}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    x, lengths = torch.randn(7, 3, 3, **F64), torch.tensor([7, 2, 5])
    with torch.no_grad():
        (y, state), (want, want_state) = loaded(x, lengths=lengths), layer(x, lengths=lengths)
    for got, expected in zip([y, *parts(state)], [want, *parts(want_state)], strict=True):
        assert_close(got, expected, torch.float64)
