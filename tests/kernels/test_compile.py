"""torch.compile over lstmkit layers: the backends' custom operators (kernels/native.py,
kernels/cpu) keep the graph whole and symbolic in T and B.

Compiled with "aot_eager" (dynamo, then AOT autograd's forward and backward graphs, run eagerly):
the part that must not break. Inductor is left to benchmarks/compile.py: its C++ compile costs
tens of seconds.
Everything in float64, so that compiled and eager agree to float64's tolerance on any CPU.
Shapes avoid sizes 0 and 1, which dynamic shapes specialise on by design (see SHAPES).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from support import cpu_scan_args, parts, probe_loss
from tolerances import assert_close
from torch._dynamo.testing import CompileCounterWithBackend

import lstmkit
from lstmkit.kernels.cpu import _build

SHAPES = ((5, 6), (7, 8), (9, 5))
"""(T, B): one graph must serve them all. None equals a fixed size (I=3, H=4, P=2): dynamo's
duck sizing gives equal sizes one symbol, and a fixed size would then pin T or B to it."""

CASES = {
    "lstm": (lstmkit.LSTM, {}),
    "lstm 2 layers bidirectional": (lstmkit.LSTM, {"num_layers": 2, "bidirectional": True}),
    "lstm proj": (lstmkit.LSTM, {"proj_size": 2}),
    "gru": (lstmkit.GRU, {}),
    "rnn relu": (lstmkit.RNN, {"nonlinearity": "relu"}),
    "lstm peephole": (lstmkit.LSTM, {"peephole": True}),
    "lstm layer_norm proj bidirectional": (lstmkit.LSTM, {"layer_norm": True, "proj_size": 2,
                                                          "bidirectional": True}),
    "lstm cell_clip coupled zoneout": (lstmkit.LSTM, {"cell_clip": 0.5, "coupled": True,
                                                      "zoneout": 0.2}),
    "gru reset before, 2 layers": (lstmkit.GRU, {"reset_after": False, "num_layers": 2}),
    "rnn cpu": (lstmkit.RNN, {"backend": "cpu"}),
    "lstm reference peephole proj zoneout": (lstmkit.LSTM, {"backend": "reference",
                                                            "peephole": True, "proj_size": 2,
                                                            "zoneout": 0.2}),
    "gru reference bidirectional": (lstmkit.GRU, {"backend": "reference",
                                                  "bidirectional": True}),
    "slstm 2 heads": (lstmkit.sLSTM, {"num_heads": 2}),
    "mlstm 2 heads": (lstmkit.mLSTM, {"num_heads": 2}),
    "mlstm chunks of 3": (lstmkit.mLSTM, {"num_heads": 2, "chunk_size": 3}),
    "mlstm chunks of 6": (lstmkit.mLSTM, {"chunk_size": 6}),
    "mlstm parallel": (lstmkit.mLSTM, {"form": "parallel"}),
    "mlstm recurrent": (lstmkit.mLSTM, {"form": "recurrent"}),
}
"""Plain configurations ("auto" takes native), variants ("auto" takes cpu), the reference
(what "auto" takes where no fused backend computes a configuration: its Python loop over time
unrolled into a graph per T) and the xLSTM families (their scans: the sLSTM's one custom
operator, the mLSTM's torch forms one operator too). The mLSTM's short chunks make SHAPES
span 1-3 chunks, with and without padding: traced as torch ops, the chunk count put a guard on
T."""


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Every layer is a new graph of the one code object RecurrentLayer.forward: forget the
    earlier tests' (dynamo keeps 8 per code object)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _layer(name: str, training: bool = False):
    cls, options = CASES[name]
    backend = options.get("backend", "auto")
    layer = cls(3, 4, dtype=torch.float64, **options).train(training)
    if getattr(layer, "backend", None) and layer.backend().name == "cpu" \
            and (reason := _build.problem()):
        pytest.skip(f"the cpu backend {reason}")
    return layer, backend


def _run(layer, x):
    """[y, state tensors..., gradients of the input and every parameter]."""
    x = x.detach().requires_grad_()
    y, state = layer(x)
    grads = torch.autograd.grad(probe_loss(y, *parts(state)), [x, *layer.parameters()])
    return [y, *parts(state), *grads]


@pytest.mark.parametrize("name", CASES)
def test_one_graph_for_every_length_and_batch(name):
    layer, _ = _layer(name)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, backend=counter, fullgraph=True, dynamic=True)
    graphs = []
    for steps, batch in SHAPES:  # fullgraph: a graph break raises
        x = torch.randn(steps, batch, 3, dtype=torch.float64)
        for got, expected in zip(_run(compiled, x), _run(layer, x)):
            assert_close(got, expected, torch.float64)
        graphs.append(counter.frame_count)
    # One frame, compiled once: a float of the config read as a symbol would make dynamo
    # restart its analysis (two frames counted), a guard on T or B a recompile.
    assert graphs == [1] * len(SHAPES), f"frames compiled after each shape: {graphs}"


def test_training_with_dropout_between_layers_gives_the_gradient_of_its_own_draw():
    """The compiled native op redraws the forward's dropout masks in its backward: the
    gradient is the one of the function it computed (checked by finite differences)."""
    layer = lstmkit.LSTM(2, 3, num_layers=2, dropout=0.5, dtype=torch.float64).train()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True, dynamic=True)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    y, _ = compiled(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    step = torch.zeros_like(x)
    step[1, 0, 1] = 1e-6
    torch.manual_seed(0)
    up = compiled(x.detach() + step)[0].sum()
    torch.manual_seed(0)
    down = compiled(x.detach() - step)[0].sum()
    assert abs((up - down).item() / 2e-6 - grad[1, 0, 1].item()) < 1e-6


@pytest.mark.parametrize(("family", "options"), [
    ("lstm", {}), ("lstm", {"layer_norm": True, "proj_size": 2, "peephole": True}),
    ("gru", {"reset_after": False}), ("rnn", {"nonlinearity": "relu"})])
def test_opcheck_cpu_scan(family, options):
    if reason := _build.problem():
        pytest.skip(f"the cpu backend {reason}")
    from lstmkit.kernels import cpu

    cls = {"lstm": lstmkit.LSTM, "gru": lstmkit.GRU, "rnn": lstmkit.RNN}[family]
    layer = cls(3, 4, dtype=torch.float64, backend="cpu", **options)
    for save in (True, False):
        torch.library.opcheck(cpu.scan_op, cpu_scan_args(layer, 5, 2, save))


@pytest.mark.parametrize(("cls", "options"), [
    (lstmkit.LSTM, {"num_layers": 2, "bidirectional": True}), (lstmkit.LSTM, {"proj_size": 2}),
    (lstmkit.GRU, {}), (lstmkit.RNN, {"nonlinearity": "relu"})])
def test_opcheck_native_stack(cls, options):
    from lstmkit.kernels import native

    layer = cls(3, 4, dtype=torch.float64, **options)
    flat = [t.detach().clone().requires_grad_() for t in native._flat(layer.cell_weights())]
    hx = [s.normal_().requires_grad_() for s in parts(layer.init_state(2))]
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    text = native._text(layer.config)
    torch.library.opcheck(native.stack_op, (text, x, hx, flat, None, False, None))
    lengths = torch.tensor([5, 3])
    torch.library.opcheck(native.stack_op, (text, x, hx, flat, lengths, False, None))


def test_torchscript_refuses_with_the_reason_and_the_alternatives():
    from lstmkit.config import LayerConfig
    from lstmkit.models import ModelConfig, SequenceModel

    model = SequenceModel(ModelConfig(LayerConfig(lstmkit.cell_config("lstm", 3, 4),
                                                  batch_first=True), output_size=2))
    for module in (lstmkit.GRU(3, 4), model):
        with pytest.raises(NotImplementedError, match="torch.export.export"):
            torch.jit.script(module)
    torch.jit.script(lstmkit.LSTM(3, 4).to_torch())  # the way the message names


def test_opcheck_slstm_scan():
    slstm = importlib.import_module("lstmkit.functional.slstm")  # the module, not the function

    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(5, 2, 3, 8, generator=gen, dtype=torch.float64)  # (T, NH, B, 4 DH)
    weight = torch.randn(2, 2, 8, generator=gen, dtype=torch.float64) / 2
    state = [torch.zeros(2, 3, 2, dtype=torch.float64) for _ in range(4)]
    keep = (torch.arange(5)[:, None] < torch.tensor([5, 2, 4])[None, :])[:, None, :, None]
    for mask in (None, keep):
        args = (xs.requires_grad_(), weight.requires_grad_(),
                *(t.clone().requires_grad_() for t in state), mask, "sigmoid", "nxai")
        torch.library.opcheck(slstm.scan_op, args)


def test_opcheck_mlstm_scan():
    mlstm = importlib.import_module("lstmkit.functional.mlstm")  # the module, not the function

    gen = torch.Generator().manual_seed(0)
    B, NH, T, DK, DV = 2, 2, 7, 3, 4
    q, k = (torch.randn(B, NH, T, DK, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, NH, T, DV, generator=gen, dtype=torch.float64)
    i, f = (torch.randn(B, NH, T, generator=gen, dtype=torch.float64) for _ in range(2))
    state = (torch.randn(B, NH, DK, DV, generator=gen, dtype=torch.float64),
             torch.randn(B, NH, DK, generator=gen, dtype=torch.float64).abs(),
             torch.randn(B, NH, generator=gen, dtype=torch.float64))
    for form, chunk, forget in (("chunkwise", 3, "sigmoid"), ("chunkwise", 7, "exp"),
                                ("parallel", 4, "sigmoid"), ("recurrent", 4, "exp")):
        args = (*(t.clone().requires_grad_() for t in (q, k, v, i, f, *state)), form, chunk,
                1e-6, forget)
        torch.library.opcheck(mlstm.scan_op, args)
    # As the layer passes them: q, k, v transposed views (B, T, NH, D) -> (B, NH, T, D). The
    # fake kernels promise contiguous results, and inductor checks the strides it gets.
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    assert not q.is_contiguous()
    for chunk in (3, 7, 8):  # one chunk: autograd gives k's gradient transposed
        args = (q, k, v, i, f, *state, "chunkwise", chunk, 1e-6, "sigmoid")
        outputs = mlstm.scan_op(*args)
        grads = mlstm.scan_backward_op(*args, [torch.randn_like(t) for t in outputs])
        for t in (*outputs, *grads):
            assert t.is_contiguous()


def test_an_xlstm_block_stack_is_one_frame_for_every_length_and_batch():
    """The NX-AI block stack around both scans: its LayerNorms' eps, its width factors and the
    mLSTM's default eps are floats that dynamo would read as symbols and restart on (at AOT
    autograd's pass over the graph's Python scalars)."""
    from lstmkit.layers.xlstm_blocks import xLSTM, xLSTMConfig

    config = xLSTMConfig.from_pattern(8, "mLSTM:sLSTM 1:1", 2, input_size=3, mlstm_heads=2,
                                      slstm_heads=2, round_to=8, chunk_size=3, dropout=0.1)
    model = xLSTM(config).to(torch.float64).eval()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    graphs = []
    for steps, batch in SHAPES:  # forward only: the scans' backwards are the tests' above
        x = torch.randn(batch, steps, 3, dtype=torch.float64)
        with torch.no_grad():
            for got, expected in zip(parts(compiled(x)), parts(model(x))):
                assert_close(got, expected, torch.float64)
        graphs.append(counter.frame_count)
    assert graphs == [1] * len(SHAPES), f"frames compiled after each shape: {graphs}"


def test_opcheck_reference_scan():
    """Its fake kernel runs one step on fake tensors for the shapes, for any family: with
    lengths, a recurrent-dropout mask and zoneout's weights; with lengths; in 16 bits."""
    from lstmkit.cells.base import zero_state
    from lstmkit.kernels import reference

    gen = torch.Generator().manual_seed(0)
    for layer, dtype, extras in (
            (lstmkit.LSTM(3, 4, peephole=True, proj_size=2), torch.float64, "all"),
            (lstmkit.GRU(3, 4), torch.float64, "lengths"), (lstmkit.RNN(3, 4), torch.bfloat16, "")):
        weights = layer.cell_weights()[0][0]
        state = [torch.randn(t.shape, generator=gen).to(dtype) for t in
                 parts(zero_state(layer.family, layer.config.cell, (2,), torch.empty(0)))]
        hidden = torch.bernoulli(torch.full(state[0].shape, 0.5), generator=gen).to(dtype)
        zoneout = [torch.full((5, *t.shape), 0.3, dtype=dtype) for t in state]
        args = (reference._text(layer.config.cell, tuple(weights)),
                [w.detach().to(dtype).requires_grad_() for w in weights.values()],
                torch.randn(5, 2, 3, generator=gen).to(dtype).requires_grad_(),
                [t.requires_grad_() for t in state],
                torch.tensor([5, 3]) if extras else None, hidden if extras == "all" else None,
                zoneout if extras == "all" else [])
        torch.library.opcheck(reference.scan_op, args)
