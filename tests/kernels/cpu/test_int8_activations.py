"""Int8 activations (``quantize_dynamic(..., activations="int8")``): the cpu kernel's integer
products (kernels/cpu/int8_dot.h) against the specification, the reference scan with each
product's left operand through ``round_rows`` (layers/quantized.py); its AVX2 and portable sums
against each other, bit for bit; one call over a sequence against stepping it, bit for bit;
and the interface around it (the fused step, checkpoints, the runtime export; compile and
export are in tests/layers/test_quantized.py)."""

import pytest
import torch
from support import cpu_flags, parts
from tolerances import assert_conforms

from lstmkit import GRU, LSTM, RNN, ModelConfig, SequenceModel
from lstmkit.config import LayerConfig, cell_config
from lstmkit.kernels.contract import StepMasks
from lstmkit.kernels.cpu import _build, quant
from lstmkit.layers.quantized import quantize_dynamic, round_rows

IN, H = 37, 7  # 37 inputs: one 32-byte block of the AVX2 sums and a tail

pytestmark = pytest.mark.skipif(_build.problem() is not None,
                                reason=f"the cpu backend {_build.problem()}")

LAYERS = {
    "lstm": (LSTM, {}),
    "lstm no bias": (LSTM, dict(bias=False)),
    "lstm peephole, coupled, clip": (LSTM, dict(peephole=True, coupled=True, cell_clip=0.5)),
    "lstm layer norm": (LSTM, dict(layer_norm=True)),
    "lstm projection": (LSTM, dict(proj_size=4)),
    "lstm activations": (LSTM, dict(gate_activation="hard_sigmoid", cell_activation="softsign")),
    "gru": (GRU, {}), "gru reset before": (GRU, dict(reset_after=False)),
    "rnn tanh": (RNN, {}), "rnn relu": (RNN, dict(nonlinearity="relu")),
}


def _float(name, **more):
    cls, options = LAYERS[name]
    return cls(IN, H, backend="reference", **options, **more).eval()


def _state(layer, batch):
    hx = tuple(0.5 * torch.randn_like(h) for h in parts(layer.init_state(batch)))
    return hx if len(hx) > 1 else hx[0]


def _flat(out):
    y, state = out
    return [y, *parts(state)]


def test_round_rows_keeps_zero_and_each_row_within_half_a_step():
    a = torch.randn(20, 50) * torch.logspace(-3, 2, 20)[:, None]
    a[3] = a[3].abs()  # a row of one sign: its range still includes zero
    a[4] = 0.0
    rounded = round_rows(a)
    lo, hi = a.amin(1, keepdim=True).clamp(max=0), a.amax(1, keepdim=True).clamp(min=0)
    step = (hi - lo) / 127
    assert torch.all((rounded - a).abs() <= step * (0.5 + 1e-5))
    assert torch.all(rounded[a == 0] == 0) and torch.all(rounded[4] == 0)
    levels = torch.round(rounded / step.clamp(min=1e-30))
    assert all(len(torch.unique(levels[k])) <= 128 for k in range(20))
    odd = round_rows(torch.tensor([[1.0, float("nan")], [float("inf"), 0.0], [1.0, 2.0]]))
    assert torch.all(odd[:2].isnan()) and not odd[2].isnan().any()


@pytest.mark.parametrize("batch", [1, 3, 6])
@pytest.mark.parametrize("name", LAYERS)
def test_one_step_computes_the_specification(name, batch):
    """One step from a given state: both sides round the same x and h (the same bits in), so
    they agree to float32 rounding (a longer run could flip a rounding on an ulp of h). The
    weights-only layer differs by the activations' rounding, which shows they are rounded."""
    layer = _float(name)
    int8 = quantize_dynamic(layer, backend="cpu", activations="int8")
    spec = quantize_dynamic(layer, backend="reference", activations="int8")
    weights_only = quantize_dynamic(layer, backend="cpu")
    assert int8.backend() is quant.INT8_ACTIVATIONS
    x, hx = torch.randn(1, batch, IN), _state(layer, batch)
    actual, expected, other = _flat(int8(x, hx)), _flat(spec(x, hx)), _flat(weights_only(x, hx))
    for label, a, e in zip(("y", "h", "c"), actual, expected):
        assert_conforms(a, e.double(), e, torch.float32, IN + H, msg=label)
    assert float((actual[0] - other[0]).abs().max()) > 1e-5


def _scan(layer, x, state, portable):
    w = layer.cell_weights()[0][0]
    return quant.scan(layer.family, layer.config.cell, w, x, state, None, StepMasks(),
                      int8_activations=True, portable=portable)


@pytest.mark.parametrize("hidden", [H, 70])  # 70: the recurrent sums take the vector loop too
@pytest.mark.parametrize("shape", [(1, 1), (6, 5), (40, 2)])
@pytest.mark.parametrize("name", ["lstm layer norm", "lstm projection", "gru reset before",
                                  "rnn relu"])
def test_fast_and_portable_sums_return_the_same_bits(name, shape, hidden):
    """Integer sums are exact, so the product this CPU runs (quant.isa(): AVX-512 VNNI or
    AVX2) and the portable loop agree bit for bit (on a CPU with neither, both calls run the
    portable loop)."""
    steps, batch = shape
    cls, options = LAYERS[name]
    float_layer = cls(IN, hidden, backend="reference", **options).eval()
    layer = quantize_dynamic(float_layer, backend="cpu", activations="int8")
    state = layer.family.make_state(*(t[0] for t in parts(_state(layer, batch))))  # (B, ...)
    x = 3 * torch.randn(steps, batch, IN)
    with torch.no_grad():
        fast, portable = _scan(layer, x, state, False), _scan(layer, x, state, True)
    for a, b in zip(_flat(fast), _flat(portable)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["lstm", "lstm no bias", "lstm layer norm", "lstm projection",
                                  "gru", "gru reset before", "rnn tanh"])
def test_stepping_computes_one_call_bit_for_bit(name):
    """Each row is rounded on its own, so one call over t steps and t calls of one step reach
    the same state bits, two layers deep, under a model's head. The outputs, and a row alone
    against its batch, agree to float32 rounding: the head's float product and the layer-norm
    rows may sum in another order for another number of rows (MKL's sgemm does on Intel CPUs).
    A plain LSTM steps through the fused path (quant_lstm_step), the others through forward."""
    from lstmkit.layers import fused_step

    cls, options = LAYERS[name]
    family = {LSTM: "lstm", GRU: "gru", RNN: "rnn"}[cls]
    config = ModelConfig(LayerConfig(cell_config(family, IN, H, **options), num_layers=2,
                                     batch_first=True), 3)
    model = quantize_dynamic(SequenceModel(config), backend="cpu", activations="int8")
    x = torch.randn(4, 9, IN)
    with torch.no_grad():
        y = model(x)[0]
        s = None
        for t in range(9):
            out, s = model.step(x[:, t], s)
            torch.testing.assert_close(out, y[:, t], rtol=1e-5, atol=1e-6)
            for got, expected in zip(parts(s), parts(model(x[:, :t + 1])[1])):
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
        fused = fused_step.step(model.rnn, x[:, 0], None, model.head)
        assert (fused is not None) == (name in ("lstm", "lstm no bias"))
        alone = model(x[2:3])[0]
    torch.testing.assert_close(alone, y[2:3], rtol=1e-5, atol=1e-6)


def test_the_fused_step_takes_unbatched_input_and_a_deep_stack():
    layer = quantize_dynamic(LSTM(IN, H, num_layers=3, backend="reference").eval(), "cpu",
                             activations="int8")
    x = torch.randn(6, IN)
    with torch.no_grad():
        y, (h, c) = layer(x)
        s = None
        for t in range(6):
            out, s = layer.step(x[t], s)
            torch.testing.assert_close(out, y[t], rtol=0, atol=0)
    torch.testing.assert_close(s.h, h, rtol=0, atol=0)
    torch.testing.assert_close(s.c, c, rtol=0, atol=0)


def test_the_fused_step_repacks_after_new_weights_are_loaded():
    """The fused step sums each weight row once, when it packs: loading other int8 weights
    into the layer (in place) must repack them, or the step would use stale sums. States match
    a call bit for bit, outputs to the float head's rounding (as in the test above)."""
    config = ModelConfig(LayerConfig(cell_config("lstm", IN, H), batch_first=True), 2)
    model = quantize_dynamic(SequenceModel(config), backend="cpu", activations="int8")
    other = quantize_dynamic(SequenceModel(config), backend="cpu", activations="int8")
    x = torch.randn(2, 4, IN)
    with torch.no_grad():
        model.step(x[:, 0])
        model.load_state_dict(other.state_dict())
        y, _ = model(x)
        s = None
        for t in range(4):
            out, s = model.step(x[:, t], s)
            torch.testing.assert_close(out, y[:, t], rtol=1e-5, atol=1e-6)
            for got, expected in zip(parts(s), parts(model(x[:, :t + 1])[1])):
                torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_long_sequence_crosses_input_chunks_as_steps_do():
    layer = quantize_dynamic(_float("lstm peephole, coupled, clip"), "cpu", activations="int8")
    x = torch.randn(1500, 1, IN)
    with torch.no_grad():
        y, state = layer(x)
        h, c = layer(x[:1000])[1]
        rest, _ = layer(x[1000:], (h, c))
    torch.testing.assert_close(rest, y[1000:], rtol=0, atol=0)


def test_the_setting_travels_and_is_refused_where_it_is_not_computed(tmp_path):
    from lstmkit import checkpoint
    from lstmkit.export.runtime import export_runtime

    config = ModelConfig(LayerConfig(cell_config("lstm", IN, H), batch_first=True), 2)
    model = quantize_dynamic(SequenceModel(config), activations="int8")
    assert "activations='int8'" in repr(model.rnn)
    checkpoint.save(tmp_path / "m.safetensors", model)
    back = checkpoint.load(tmp_path / "m.safetensors")
    assert back.rnn.activations == "int8"
    x = torch.randn(2, 5, IN)
    torch.testing.assert_close(back(x)[0], model(x)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="activations='int8'"):
        export_runtime(model, tmp_path / "m.npz")
    with pytest.raises(ValueError, match="activations: expected one of"):
        quantize_dynamic(LSTM(IN, H), activations="int4")


def test_the_op_refuses_shapes_it_would_read_past():
    """The int8 op reads its matrices and state through raw pointers: a (1, B, P) state, or a
    matrix of another width, is refused rather than read out of bounds."""
    layer = quantize_dynamic(_float("lstm projection"), backend="cpu", activations="int8")
    h, c = torch.zeros(1, 3, 4), torch.zeros(1, 3, H)
    x = torch.randn(2, 3, IN)
    with pytest.raises(RuntimeError, match="state tensors with B = 3"):
        _scan(layer, x, layer.family.make_state(h, c), False)
    w = dict(layer.cell_weights()[0][0])
    w["weight_hh"], w["weight_hh_scale"] = w["weight_hh"][:, :3].contiguous(), w["weight_hh_scale"]
    with pytest.raises(RuntimeError, match="expected weight_ih"):
        quant.scan(layer.family, layer.config.cell, w, x, layer.family.make_state(h[0], c[0]),
                   None, StepMasks(), int8_activations=True)


def test_isa_names_the_product_this_cpu_runs():
    flags = cpu_flags()
    expected = "portable" if "avx2" not in flags else (
        "avx512_vnni" if {"avx512_vnni", "avx512vl"} <= flags else "avx2")
    assert quant.isa() == expected

