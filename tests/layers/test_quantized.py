"""lstmkit.quantize_dynamic (lstmkit/layers/quantized.py): the per-row int8 rounding, how far
the int8 model may be from the float one (a bound from the quantisation step), and the layer's
interface (shapes, states, step, modes, errors). The kernel's own agreement with the
dequantised layer is tests/kernels/cpu/test_quant.py."""

import copy
import io

import pytest
import torch
from support import parts, probe_loss

import lstmkit
from lstmkit import GRU, LSTM, RNN, ModelConfig, SequenceModel
from lstmkit.config import LayerConfig, cell_config
from lstmkit.layers.quantized import (
    MATRICES,
    QuantizedLayer,
    dequantize_weight,
    quantize_dynamic,
    quantize_weight,
)

IN, H, T, B = 6, 10, 8, 3


def test_rounding_is_within_half_a_step_of_each_row():
    rows = torch.logspace(-3, 1, 12, dtype=torch.float64)[:, None]  # magnitudes 1e-3..10
    w = torch.randn(12, 9, dtype=torch.float64) * rows
    w[4] = 0.0
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (12,)
    assert int(q.abs().max()) == 127 and int(q.min()) >= -127
    assert torch.all(q[torch.arange(12) != 4].abs().amax(1) == 127)  # each row uses its range
    assert torch.all(q[4] == 0) and float(scale[4]) == 1.0
    error = (dequantize_weight(q, scale).double() - w).abs()
    # half a step, plus the float32 rounding of w / s and of s * q
    assert torch.all(error <= scale.double()[:, None] * (0.5 + 1e-5))


def test_refuses_a_non_matrix():
    with pytest.raises(ValueError, match="expected a matrix"):
        quantize_weight(torch.ones(3))


def _first_order_bound(layer64, x, hx, loss_of):
    """|L(W + ΔW) - L(W)| <= Σ |∂L/∂W| |ΔW| + O(ΔW²) with |ΔW| <= s / 2 per row: the bound
    that rounding to the int8 grid allows for a loss L, at first order."""
    loss = loss_of(layer64(x, hx))
    named = dict(layer64.named_parameters())
    grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
    bound = 0.0
    for (name, p), g in zip(named.items(), grads):
        if g is not None and name.split("_l")[0] in MATRICES:
            _, scale = quantize_weight(p)
            bound += float((g.abs() * scale.double()[:, None] / 2).sum())
    return float(loss.detach()), bound


CASES = {
    "lstm": (LSTM, dict(num_layers=2)),
    "lstm peephole, projection": (LSTM, dict(peephole=True, proj_size=4)),
    "lstm layer norm, coupled": (LSTM, dict(layer_norm=True, coupled=True)),
    "gru": (GRU, {}), "rnn": (RNN, dict(bidirectional=True)),
}


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("name", CASES)
def test_int8_model_within_the_bound_of_the_quantisation_step(name, backend):
    cls, options = CASES[name]
    layer = cls(IN, H, backend="reference", **options).eval()
    int8 = quantize_dynamic(layer, backend=backend)
    x = torch.randn(T, B, IN)
    hx = tuple(parts(layer.init_state(B)))
    hx = hx if len(hx) > 1 else hx[0]
    layer64 = copy.deepcopy(layer).double()
    x64 = x.double()
    hx64 = tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx.double()
    for probe in range(3):  # three different weighted sums of every output
        def loss_of(out, probe=probe):
            y, state = out
            return probe_loss(y * (probe + 1), *parts(state)[:probe])

        float_loss, bound = _first_order_bound(layer64, x64, hx64, loss_of)
        with torch.no_grad():
            int8_loss = float(loss_of(int8(x, hx)))
        # Twice the first-order bound covers the second-order term at this step size; the
        # floor covers float32 rounding of a sum over a few hundred outputs.
        assert bound > 0
        assert abs(int8_loss - float_loss) <= 2 * bound + 1e-4 * max(1.0, abs(float_loss))


def test_a_sequence_model_keeps_its_interface():
    config = ModelConfig(LayerConfig(cell_config("lstm", input_size=IN, hidden_size=H,
                                                 peephole=True), batch_first=True), 2,
                         pooling="last")
    model = SequenceModel(config)
    int8 = lstmkit.quantize_dynamic(model)
    assert isinstance(int8.rnn, QuantizedLayer) and not isinstance(model.rnn, QuantizedLayer)
    assert model.training and not int8.training  # a copy, in evaluation mode
    assert int8.head.weight.dtype == torch.float32
    assert int8.rnn.weight_hh_l0.dtype == torch.int8
    assert int8.rnn.weight_peephole_l0.dtype == torch.float32
    assert not list(int8.parameters())[1:] or all(p.dtype == torch.float32
                                                  for p in int8.parameters())
    x = torch.randn(B, T, IN)
    y, state = int8(x)
    assert y.shape == (B, 2)
    # step by step equals one call
    outputs, s = [], None
    for t in range(T):
        out, s = int8.step(x[:, t], s)
        outputs.append(out)
    torch.testing.assert_close(outputs[-1], y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s.h, state.h, rtol=1e-6, atol=1e-6)


def test_unbatched_and_packed_input():
    int8 = quantize_dynamic(GRU(IN, H, batch_first=True))
    x = torch.randn(T, IN)
    y, h = int8(x)
    assert y.shape == (T, H) and h.shape == (1, H)
    batch = torch.randn(2, T, IN)
    packed = torch.nn.utils.rnn.pack_padded_sequence(batch, torch.tensor([T, 3]),
                                                     batch_first=True)
    out, h = int8(packed)
    y, _ = int8(batch, lengths=torch.tensor([T, 3]))
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
    torch.testing.assert_close(padded, y)


def test_training_mode_and_bad_input_raise():
    int8 = quantize_dynamic(LSTM(IN, H))
    with pytest.raises(TypeError, match="float32"):
        int8(torch.randn(T, B, IN, dtype=torch.float64))
    int8.train()
    with pytest.raises(RuntimeError, match="evaluation mode"):
        int8(torch.randn(T, B, IN))
    with pytest.raises(ValueError, match="backend: expected one of"):
        quantize_dynamic(LSTM(IN, H), backend="triton")
    with pytest.raises(ValueError, match="found none"):
        quantize_dynamic(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="float lstmkit RecurrentLayer"):
        QuantizedLayer(int8)
    with pytest.raises(NotImplementedError, match="fixed int8 weights"):
        int8.reset_parameters()


def test_auto_takes_the_cpu_kernel_and_falls_back_to_the_reference():
    from lstmkit.kernels.cpu import _build

    if _build.problem() is None:
        assert quantize_dynamic(LSTM(IN, H)).backend().name == "cpu"
    # a family the cpu kernel does not declare runs on the reference with dequantised weights
    slstm = lstmkit.layers.layer_from_config(LayerConfig(cell_config("slstm", input_size=IN,
                                                                      hidden_size=8)))
    int8 = quantize_dynamic(slstm)
    assert int8.backend().name == "reference"
    y, _ = int8(torch.randn(T, B, IN))
    assert y.shape == (T, B, 8)


def test_an_int8_model_saves_and_loads_as_itself(tmp_path):
    from lstmkit import checkpoint

    config = ModelConfig(LayerConfig(cell_config("lstm", input_size=IN, hidden_size=H,
                                                 proj_size=4), num_layers=2, batch_first=True), 3)
    int8 = lstmkit.quantize_dynamic(SequenceModel(config), backend="reference")
    checkpoint.save(tmp_path / "m.safetensors", int8, note="kept")
    back = checkpoint.load(tmp_path / "m.safetensors")
    assert isinstance(back.rnn, QuantizedLayer) and back.rnn.quant_backend == "reference"
    assert back.rnn.weight_hh_l1.dtype == torch.int8 and back.meta == {"note": "kept"}
    for name, value in int8.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0)
    x = torch.randn(B, T, IN)
    torch.testing.assert_close(back(x)[0], int8(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize(("cls", "options", "activations", "backend"), [
    (LSTM, dict(peephole=True, proj_size=4, num_layers=2), "float", "cpu"),
    (LSTM, dict(proj_size=4), "int8", "cpu"), (GRU, dict(bidirectional=True), "float", "cpu"),
    (RNN, {}, "float", "cpu"), (LSTM, dict(proj_size=4), "int8", "reference"),
    (GRU, {}, "float", "reference")])
def test_compiles_and_exports_with_dynamic_length_and_batch(cls, options, activations, backend):
    """The int8 scans are custom operators (lstmkit::cpu_quant_scan; the reference's
    lstmkit::reference_scan, its int8 activations' rounding named in its config): one graph
    for several (T, B), and an exported program that equals eager at new sizes after
    save/load, with float or int8 activations."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from lstmkit.kernels.cpu import _build

    if backend == "cpu" and (reason := _build.problem()):
        pytest.skip(f"the cpu backend {reason}")
    int8 = quantize_dynamic(cls(IN, H, backend="cpu", **options), backend=backend,
                            activations=activations)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(int8, backend=counter, fullgraph=True, dynamic=True)
    frames = []
    for steps, batch in ((5, 3), (9, 4), (7, 2)):
        x = torch.randn(steps, batch, IN)
        for got, expected in zip((compiled(x)[0], *parts(compiled(x)[1])),
                                 (int8(x)[0], *parts(int8(x)[1]))):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the same kernel
        frames.append(counter.frame_count)
    torch._dynamo.reset()
    assert frames == [1] * 3, f"frames compiled after each shape: {frames}"

    class Outputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.int8 = int8

        def forward(self, x):
            return self.int8(x)[0]

    dims = {0: torch.export.Dim("time", min=2), 1: torch.export.Dim("batch", min=2)}
    program = torch.export.export(Outputs(), (torch.randn(5, 3, IN),), dynamic_shapes={"x": dims})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    x = torch.randn(11, 6, IN)
    torch.testing.assert_close(loaded(x), int8(x)[0], rtol=0, atol=0)


def test_opcheck_the_int8_scan():
    from lstmkit.kernels.cpu import _build, _options, quant

    if reason := _build.problem():
        pytest.skip(f"the cpu backend {reason}")
    int8 = quantize_dynamic(LSTM(IN, H, backend="cpu", layer_norm=True, proj_size=4))
    weights = int8._cell_parameters(0, 0)
    names = [n for n, t in weights.items() if t is not None]
    (int_names, ints), (real_names, reals) = _options(int8.config.cell)
    state = [torch.randn(B, 4), torch.randn(B, H)]
    args = ("lstm", torch.randn(T, B, IN), state, ",".join(names), [weights[n] for n in names],
            None, [], int_names, ints, real_names, reals)
    torch.library.opcheck(quant.scan_op, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("backend", ["auto", "cpu", "reference"])
def test_a_plain_lstm_steps_as_its_forward(backend, layers):
    """The plain float32 LSTM is what layer.step's fused path takes: an int8 one must step
    with its dequantised weights (it once stepped with the raw integers), alone and under a
    SequenceModel's head."""
    model = SequenceModel(ModelConfig(LayerConfig(cell_config("lstm", IN, H), num_layers=layers,
                                                  batch_first=True), 2))
    int8 = quantize_dynamic(model, backend=backend)
    x = torch.randn(B, T, IN)
    with torch.no_grad():
        y, state = int8(x)
        layer_y, _ = int8.rnn(x)
        s, r = None, None
        for t in range(T):
            out, s = int8.step(x[:, t], s)
            h, r = int8.rnn.step(x[:, t], r)
            torch.testing.assert_close(h, layer_y[:, t], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, y[:, -1], rtol=1e-5, atol=1e-5)
    for got, expected in zip(parts(s), parts(state)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    from lstmkit.kernels.cpu import _build

    plan = int8.rnn.__dict__["_fused_step"]  # the int8 single-stream kernel, where it applies
    fused = backend != "reference" and _build.problem() is None
    assert (plan.reason is None and plan.packed() is not None) == fused, plan.reason
    with pytest.raises(RuntimeError, match="expected evaluation mode"):  # as forward does
        int8.train().step(x[:, 0])
