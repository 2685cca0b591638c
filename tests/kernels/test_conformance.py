"""The conformance table: every family x every option set the registry knows x every backend,
then the ONNX export, the NumPy runtime and the streaming engine over the same table.

Each family lists representative option sets (``Family.option_sets``) that use every option at
least once; :data:`FEATURES` adds the layer's own features (stacking, direction, zoneout,
recurrent dropout) for each family's default options. For each case and backend the float32
result is compared with the float64 reference (the truth) through
:func:`tolerances.assert_conforms`: outputs, final states and the gradients of a non-trivial
loss (:func:`support.probe_loss`) with respect to the input, the initial state and every
parameter, with variable lengths; then running in chunks and step by step must equal one call.
A configuration a backend does not declare is skipped with the backend's own reason, never run.

int8 layers (``quantize_dynamic``) run the same cases in evaluation against the float64 reference
of their dequantised weights, and with int8 activations against the int8 reference of those
(``round_rows`` on each product's input). The ONNX graphs also run step by step with their
state passed back in, which must equal one call. xLSTM block stacks (:data:`STACKS`) are no
family but a SequenceModel backbone: they run through the export, the runtime (in one call and
step by step) and the engine the same way.
The 16-bit rows run the same cases in bfloat16 and float16 on every backend that declares them,
against the float64 truth on the same 16-bit weights and inputs (tolerances.CONFORMANCE_16).
The second-derivative rows run them in float64: the gradient of a gradient penalty on every
backend against the reference's, itself checked by ``gradgradcheck``.

Triton runs under its CPU interpreter where there is no GPU (slow: the sizes are tiny).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from unittest import mock

import numpy as np
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

if not torch.cuda.is_available():  # before the Triton kernels are first imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import families  # noqa: E402, F401  (registers the test-only families)
import pytest  # noqa: E402
from support import probe_loss  # noqa: E402
from tolerances import assert_conforms  # noqa: E402

from lstmkit import kernels  # noqa: E402
from lstmkit.cells import FAMILIES  # noqa: E402
from lstmkit.cells.base import ANY, state_tensors  # noqa: E402
from lstmkit.config import LayerConfig, cell_config  # noqa: E402
from lstmkit.kernels import reference  # noqa: E402
from lstmkit.kernels.contract import Backend, Declaration  # noqa: E402
from lstmkit.layers import layer_from_config, stack  # noqa: E402

T, B, IN, H = 5, 3, 3, 4  # proj_size in the option sets is 3 < H
LENGTHS = torch.tensor([5, 3, 2])
BACKENDS = ("reference", "native", "cpu", "triton", "xlstm", "triton_xlstm")
DTYPE = torch.float32
LOW = (torch.bfloat16, torch.float16)
CPU = torch.device("cpu")

FEATURES = {  # name -> (LayerConfig fields, training)
    "plain": ({}, False),
    "stacked": ({"num_layers": 2, "bidirectional": True}, False),
    "zoneout": ({"zoneout": 0.3}, True),
    "recurrent_dropout": ({"recurrent_dropout": 0.3}, True),
}


def _label(options: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in options.items()) or "default"


CASES = [pytest.param(key, options, "plain", id=f"{key}-{_label(options)}")
         for key, family in FAMILIES.items() for options in family.option_sets]
CASES += [pytest.param(key, {}, feature, id=f"{key}-{feature}")
          for key, family in FAMILIES.items() for feature in FEATURES if feature != "plain"
          # a family whose output is no part of its state has no h_{t-1} to drop
          and not (feature == "recurrent_dropout" and family.step_output)]


def layer_config(key: str, options: dict, feature: str, backend: str) -> LayerConfig:
    return LayerConfig(cell_config(key, IN, H, **options), backend=backend, **FEATURES[feature][0])


def reduction(config: LayerConfig) -> int:
    """The longest sum behind an element: every step's products over the input and h, and
    the gradients' sums over the batch (a bound's ``reduction``)."""
    cell = config.cell
    return T * B * (cell.input_size + cell.hidden_size * config.num_directions) \
        * config.num_layers


@pytest.fixture(autouse=True)
def _masks_in_one_precision(monkeypatch):
    """Dropout and zoneout masks drawn in float32 whatever the layer's dtype, so the float64
    truth draws the same 0/1 masks as the float32 backends under the same seed."""
    def bernoulli(like, shape, p):
        return (torch.rand(shape, device=like.device) < p).to(like.dtype)

    monkeypatch.setattr(stack, "_bernoulli", bernoulli)


def make_layer(config: LayerConfig, dtype: torch.dtype, like=None):
    """A layer of ``config`` in ``dtype``, with ``like``'s weights (or seeded ones)."""
    torch.manual_seed(0)
    layer = layer_from_config(config, dtype=dtype)
    if like is not None:
        layer.load_state_dict({k: v.to(dtype) for k, v in like.state_dict().items()})
    return layer


def inputs(config: LayerConfig, dtype: torch.dtype = DTYPE):
    """x (T, B, I) and the initial state tensors (L*D, B, ...), float32 holding ``dtype``'s
    values (rounded to a 16-bit ``dtype``, so the truth sees the inputs a 16-bit layer does)."""
    gen = torch.Generator().manual_seed(3)
    family = FAMILIES[config.cell.family]
    leading = (config.num_layers * config.num_directions, B)
    x = torch.randn(T, B, IN, generator=gen)
    state = [0.5 * torch.randn(leading + shape, generator=gen)
             for shape in family.state_shapes(config.cell)]
    if dtype in LOW:
        x, state = x.to(dtype).float(), [s.to(dtype).float() for s in state]
    return x, state


def run(layer, x, state, lengths, training: bool) -> dict[str, torch.Tensor]:
    """Name -> tensor: the output, the final state tensors, and the gradient of
    :func:`probe_loss` of them with respect to x, the initial state and every parameter."""
    family = layer.family
    layer.train(training)
    x = x.detach().to(layer.weight_ih_l0).requires_grad_()
    hx = [s.detach().to(x).requires_grad_() for s in state]
    torch.manual_seed(1)  # the same dropout and zoneout masks on every side
    y, final = layer(x, family.make_state(*hx) if len(hx) > 1 else hx[0], lengths=lengths)
    names = family.state_names(layer.config.cell)
    out = {"output": y, **{f"final {n}": t for n, t in zip(names, state_tensors(final))}}
    params = dict(layer.named_parameters())
    grads = torch.autograd.grad(probe_loss(*out.values()), [x, *hx, *params.values()],
                                allow_unused=True)
    wrt = ["x", *(f"initial {n}" for n in names), *params]
    out.update({f"grad {n}": (torch.zeros_like(t) if g is None else g)
                for n, t, g in zip(wrt, [x, *hx, *params.values()], grads)})
    return {k: v.detach() for k, v in out.items()}


@torch.no_grad()
def pieces(layer, x, state) -> dict[str, dict[str, torch.Tensor]]:
    """In evaluation: the whole sequence in one call, in two chunks, and step by step (a
    bidirectional layer's reverse pass needs the whole sequence: one call only)."""
    family = layer.family.make_state
    layer.eval()
    x = x.to(layer.weight_ih_l0)
    s0 = family(*(s.to(x) for s in state)) if len(state) > 1 else state[0].to(x)
    runs = {"one call": layer(x, s0)}
    if not layer.config.bidirectional:
        y1, s1 = layer(x[:2], s0)
        y2, s2 = layer(x[2:], s1)
        runs["chunks"] = (torch.cat([y1, y2]), s2)
        s, ys = s0, []
        for t in range(T):
            y, s = layer.step(x[t], s)
            ys.append(y)
        runs["steps"] = (torch.stack(ys), s)
    return {how: {"output": y, **{f"final {k}": t for k, t in enumerate(state_tensors(s))}}
            for how, (y, s) in runs.items()}


_TRUTH: dict = {}

_OP_BY_OP = Backend("op_by_op", Declaration(families=ANY), scan=reference.scan_in_dtype)
"""The 16-bit baseline: the reference's equations in plain PyTorch, every operation rounded to
the layer's dtype (the reference itself upcasts 16-bit layers)."""


@contextlib.contextmanager
def _with_baseline():
    get = kernels.get
    kernels.resolve.cache_clear()
    with mock.patch.object(kernels, "get", lambda n: _OP_BY_OP if n == "op_by_op" else get(n)):
        yield
    kernels.resolve.cache_clear()


def truth(key, options, feature, dtype=DTYPE):
    """(float64 results, baseline results, and both in evaluation) of a case, computed once: the
    baseline is the float32 reference, or in 16 bits plain PyTorch in that dtype; the truth is
    float64 on the weights and inputs of a ``dtype`` layer."""
    if (key, str(options), feature, dtype) not in _TRUTH:
        config = layer_config(key, options, feature, "reference")
        training = FEATURES[feature][1]
        ref32 = make_layer(config, DTYPE)
        with contextlib.ExitStack() as stack_:
            if dtype in LOW:
                stack_.enter_context(_with_baseline())
                config = dataclasses.replace(config, backend="op_by_op")
            baseline = make_layer(config, dtype, like=ref32)
            exact = make_layer(config, torch.float64, like=baseline)
            x, state = inputs(config, dtype)
            _TRUTH[key, str(options), feature, dtype] = (
                run(exact, x, state, LENGTHS, training), run(baseline, x, state, LENGTHS, training),
                pieces(exact, x, state)["one call"], pieces(baseline, x, state)["one call"])
    return _TRUTH[key, str(options), feature, dtype]


def check(scan_layer, key, options, feature, name: str, dtype=DTYPE) -> None:
    """The conformance of ``scan_layer`` (``dtype``, of the case's config) with the truth."""
    config = scan_layer.config
    exact, baseline, exact_eval, baseline_eval = truth(key, options, feature, dtype)
    if dtype in LOW:
        largest = max(float(t.abs().max()) for t in exact.values() if t.numel())
        if largest > torch.finfo(dtype).max:
            pytest.skip(f"{dtype} cannot hold the result (|truth| reaches {largest:.3g})")
    # The reference is bounded by the floor alone; the others also by the baseline's error.
    ref = (lambda r: None) if name == "reference" else (lambda r: r)
    x, state = inputs(config, dtype)
    got = run(scan_layer, x, state, LENGTHS, FEATURES[feature][1])
    assert got.keys() == exact.keys()
    n = reduction(config) if dtype not in LOW else T * config.num_layers  # tolerances.py
    for part in exact:
        assert_conforms(got[part], exact[part], ref(baseline[part]), dtype, n, f"{name}: {part}")
    for how, results in pieces(scan_layer, x, state).items():
        for (part, value), ideal, rounded in zip(results.items(), exact_eval.values(),
                                                 baseline_eval.values()):
            assert_conforms(value, ideal, ref(rounded), dtype, n, f"{name} {how}: {part}")


def backend_or_skip(name: str, config: LayerConfig, training: bool, dtype=DTYPE):
    reason = kernels.get(name).supports(config, CPU, dtype, training)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("key, options, feature", CASES)
def test_backend_conforms(name, key, options, feature):
    config = layer_config(key, options, feature, name)
    backend_or_skip(name, config, FEATURES[feature][1])
    check(make_layer(config, DTYPE), key, options, feature, name)


_INTERPRETED_16 = [("lstm", {}, "plain"), ("gru", {"reset_after": False}, "plain"),
                   ("lstm", {}, "zoneout"),
                   ("lstm", {"layer_norm": True, "proj_size": 3, "peephole": True}, "plain")]
"""The cases of the 16-bit rows Triton runs under its interpreter."""


_XLSTM_16 = ("the op-by-op 16-bit baseline this row bounds by overflows in the exponential gates "
             "(a NaN bound) and the log-space stabiliser m is ill-conditioned in 16 bits (the "
             "baseline itself is off by 9 at |m| = 276); the xLSTM families' 16-bit results are "
             "bounded by 16-bit rounding of float64 on the same inputs in "
             "tests/functional/test_precision.py and tests/kernels/triton/test_xlstm.py")
XLSTM_16_ELSEWHERE = {"slstm": _XLSTM_16, "mlstm": _XLSTM_16}


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("key, options, feature", CASES)
def test_backend_conforms_in_16_bits(name, key, options, feature, dtype):
    config = layer_config(key, options, feature, name)
    backend_or_skip(name, config, FEATURES[feature][1], dtype)
    if key in XLSTM_16_ELSEWHERE:
        pytest.skip(XLSTM_16_ELSEWHERE[key])
    if name == "triton" and not torch.cuda.is_available():
        if dtype == torch.bfloat16:
            pytest.skip("Triton's interpreter computes bfloat16 arithmetic wrongly (numpy has "
                        "no bfloat16): checked on a GPU only")
        if (key, options, feature) not in _INTERPRETED_16:
            pytest.skip("under Triton's interpreter (slow) the 16-bit rows run a few cases; "
                        "a GPU runs them all")
    # the float32 layer's weights rounded, as the truth has them (not drawn in 16 bits)
    check(make_layer(config, dtype, like=make_layer(config, DTYPE)), key, options, feature, name,
          dtype)


# --- second derivatives (grad of grad: lstmkit.kernels.second_order) ------------------------------


def second_derivatives(layer, x, state, lengths, training: bool) -> dict[str, torch.Tensor]:
    """Name -> the gradient, with respect to x, the initial state and every parameter, of a
    gradient penalty: the squared norm of the gradient of :func:`probe_loss` of the outputs
    with respect to the same tensors (taken with ``create_graph=True``)."""
    layer.train(training)
    x = x.detach().to(layer.weight_ih_l0).requires_grad_()
    hx = [s.detach().to(x).requires_grad_() for s in state]
    torch.manual_seed(1)
    y, final = layer(x, layer.family.make_state(*hx) if len(hx) > 1 else hx[0], lengths=lengths)
    params = dict(layer.named_parameters())
    wrt = [x, *hx, *params.values()]
    first = torch.autograd.grad(probe_loss(y, *state_tensors(final)), wrt, create_graph=True,
                                allow_unused=True)
    penalty = sum((g * g).sum() for g in first if g is not None)
    second = torch.autograd.grad(penalty, wrt, allow_unused=True)
    names = ["x", *(f"initial {n}" for n in layer.family.state_names(layer.config.cell)),
             *params]
    return {n: torch.zeros_like(t) if g is None else g for n, t, g in zip(names, wrt, second)}


_SECOND: dict = {}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("key, options, feature", CASES)
def test_second_derivatives_conform(name, key, options, feature):
    """Every backend's grad of grad equals the float64 reference's: a fused backward asked for
    a graph recomputes through the reference's equations instead of returning gradients that
    depend on nothing (a gradient penalty that silently trains nothing). The reference itself
    is checked against finite differences (gradgradcheck) in float64."""
    config = layer_config(key, options, feature, name)
    training = FEATURES[feature][1]
    backend_or_skip(name, config, training, torch.float64)
    if name.startswith("triton") and not torch.cuda.is_available() and options \
            and (key, options, feature) not in _INTERPRETED_16:
        pytest.skip("under Triton's interpreter (slow) the second-derivative rows run each "
                    "family's default options, its features and the LSTM's variants; "
                    "tests/kernels/triton checks the kernels' second derivatives on a GPU")
    x, state = inputs(config)
    x, state = x.double(), [s.double() for s in state]
    if name == "reference" and (options or feature != "plain"):
        pytest.skip("the reference's second derivatives are autograd's of its plain ops: "
                    "gradgradcheck runs on each family's default case, and every other case "
                    "is the truth of the backends' rows")
    if name == "reference":
        layer = make_layer(config, torch.float64).train(training)
        family = layer.family

        def outputs(x, *hx):
            torch.manual_seed(1)
            y, s = layer(x, family.make_state(*hx) if len(hx) > 1 else hx[0], lengths=LENGTHS)
            return probe_loss(y, *state_tensors(s))

        assert torch.autograd.gradgradcheck(outputs, [t.requires_grad_() for t in [x, *state]],
                                            fast_mode=True)
        return
    if (key, str(options), feature) not in _SECOND:
        exact = make_layer(layer_config(key, options, feature, "reference"), torch.float64)
        _SECOND[key, str(options), feature] = second_derivatives(exact, x, state, LENGTHS,
                                                                 training)
    truth = _SECOND[key, str(options), feature]
    got = second_derivatives(make_layer(config, torch.float64), x, state, LENGTHS, training)
    assert got.keys() == truth.keys()
    for part in truth:
        assert_conforms(got[part], truth[part], None, torch.float64, reduction(config),
                        f"{name}: second derivative, {part}")


# --- int8 weights (lstmkit.quantize_dynamic) -----------------------------------------------------

INT8_BACKENDS = ("cpu", "reference")


def _int8_runs(layer, x, state) -> dict[str, list[torch.Tensor]]:
    """In evaluation (int8 layers are inference only): with lengths in one call, and without
    in one call, in two chunks and step by step (unidirectional only)."""
    family = layer.family.make_state
    s0 = family(*state) if len(state) > 1 else state[0]

    def flat(y, s):
        return [y, *state_tensors(s)]

    with torch.no_grad():
        runs = {"lengths": flat(*layer(x, s0, lengths=LENGTHS)), "one call": flat(*layer(x, s0))}
        if not layer.config.bidirectional:
            y1, s1 = layer(x[:2], s0)
            y2, s2 = layer(x[2:], s1)
            runs["chunks"] = flat(torch.cat([y1, y2]), s2)
            s, ys = s0, []
            for t in range(T):
                y, s = layer.step(x[t], s)
                ys.append(y)
            runs["steps"] = flat(torch.stack(ys), s)
    return runs


@pytest.mark.parametrize("name", INT8_BACKENDS)
@pytest.mark.parametrize("key, options, feature", CASES)
def test_int8_conforms(name, key, options, feature):
    """An int8 layer computes the float layer of its dequantised weights: the float64 reference
    of those weights is the truth, and the float32 int8 reference backend the cpu kernel's
    baseline (its fused single-stream step included, in the step-by-step run)."""
    from lstmkit.kernels.cpu import quant
    from lstmkit.layers.quantized import QuantizedLayer, dequantize_weight

    config = layer_config(key, options, feature, "reference")
    if reason := quant.BACKEND.supports(config, CPU, DTYPE, False):
        pytest.skip(f"no int8 kernel ({reason}): an int8 layer of it is the reference scan of "
                    f"the dequantised weights, which the float rows check")
    float_layer = make_layer(config, DTYPE).eval()
    int8 = QuantizedLayer(float_layer, backend=name)
    buffers = dict(int8.named_buffers())
    exact = make_layer(config, torch.float64).eval()
    exact.load_state_dict({
        n: (dequantize_weight(buffers[n], buffers[n + "_scale"]) if n + "_scale" in buffers
            else buffers[n]).double() for n in float_layer.state_dict()})
    x, state = inputs(config)
    truth_runs = _int8_runs(exact, x.double(), [s.double() for s in state])
    baseline = None if name == "reference" else _int8_runs(
        QuantizedLayer(float_layer, backend="reference"), x, state)
    n = reduction(config)
    for how, parts in _int8_runs(int8, x, state).items():
        for k, (got, ideal) in enumerate(zip(parts, truth_runs[how])):
            low = None if baseline is None else baseline[how][k]
            assert_conforms(got, ideal, low, DTYPE, n, f"int8 {name} {how}: part {k}")


@pytest.mark.parametrize("key, options, feature", CASES)
def test_int8_activations_conform(key, options, feature):
    """With int8 activations (each product's input rounded per row, integer products) the cpu
    kernel computes the specification, the int8 reference scan with ``round_rows`` on each
    product's input: over one step, where both round the same inputs, to float32 rounding (over
    more steps an ulp of difference in h may flip a rounding); and since each row is rounded on
    its own, one call, two chunks and step by step give the same bits."""
    from lstmkit.kernels.cpu import quant
    from lstmkit.layers.quantized import QuantizedLayer

    config = layer_config(key, options, feature, "reference")
    if reason := quant.INT8_ACTIVATIONS.supports(config, CPU, DTYPE, False):
        pytest.skip(f"no int8 kernel ({reason}): an int8 layer of it is the reference scan")
    float_layer = make_layer(config, DTYPE).eval()
    int8 = QuantizedLayer(float_layer, backend="cpu", activations="int8")
    spec = QuantizedLayer(float_layer, backend="reference", activations="int8")
    x, state = inputs(config)
    s0 = int8.family.make_state(*state) if len(state) > 1 else state[0]
    with torch.no_grad():
        got = [*int8(x[:1], s0)[:1], *state_tensors(int8(x[:1], s0)[1])]
        ideal = [*spec(x[:1], s0)[:1], *state_tensors(spec(x[:1], s0)[1])]
    for k, (a, e) in enumerate(zip(got, ideal)):
        assert_conforms(a, e.double(), e, DTYPE, reduction(config), f"int8 activations: part {k}")
    runs = _int8_runs(int8, x, state)
    for how in ("chunks", "steps"):
        for a, b in zip(runs.get(how, ()), runs["one call"]):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"int8 activations: {how}")


# --- the table catches a broken kernel -----------------------------------------------------------

def _swap_input_and_forget(w: dict, hidden: int) -> dict:
    """The kernel's view of the weights with the i and f blocks exchanged: it computes i as f."""
    def swap(t):
        if t.shape[0] != 4 * hidden:
            return t
        i, f, g, o = t.chunk(4)
        return torch.cat([f, i, g, o])
    return {name: swap(t) for name, t in w.items()}


def _flipped_gates(family, cfg, w, x, state, lengths, masks):
    return reference.scan(family, cfg, _swap_input_and_forget(w, cfg.hidden_size), x, state,
                          lengths, masks)


def _ignored_ablation(family, cfg, w, x, state, lengths, masks):
    plain = dataclasses.replace(cfg, input_gate=True, forget_gate=True, output_gate=True)
    return reference.scan(family, plain, w, x, state, lengths, masks)


_BROKEN = {name: Backend(name, Declaration(families=ANY), scan=scan) for name, scan in (
    ("correct", reference.scan), ("flipped_gates", _flipped_gates),
    ("ignored_ablation", _ignored_ablation))}


@pytest.fixture
def broken_backends(monkeypatch):
    get = kernels.get
    monkeypatch.setattr(kernels, "get", lambda name: _BROKEN.get(name) or get(name))
    kernels.resolve.cache_clear()
    yield
    kernels.resolve.cache_clear()


@pytest.mark.parametrize("name, options, fails", [
    ("correct", {}, False), ("correct", {"input_gate": False}, False),
    ("flipped_gates", {}, True), ("flipped_gates", {"peephole": True}, True),
    ("ignored_ablation", {"input_gate": False}, True),
    ("ignored_ablation", {"forget_gate": False}, True),
    ("ignored_ablation", {"output_gate": False}, True),
])
@pytest.mark.parametrize("dtype", [DTYPE, *LOW], ids=lambda d: str(d).replace("torch.", ""))
def test_a_broken_kernel_fails_the_table(broken_backends, name, options, fails, dtype):
    config = layer_config("lstm", options, "plain", name)
    layer = make_layer(config, dtype, like=make_layer(config, DTYPE))
    if not fails:  # the same harness passes a correct kernel: the failures are the kernel's
        check(layer, "lstm", options, "plain", name, dtype)
        return
    with pytest.raises(AssertionError, match=r"max \|error\|"):
        check(layer, "lstm", options, "plain", name, dtype)


# --- the export, the runtime and the engine over the same table ------------------------------

MODEL_CASES = [pytest.param(key, options, "plain", id=f"{key}-{_label(options)}")
               for key, family in FAMILIES.items() for options in family.option_sets]
MODEL_CASES += [pytest.param(key, {}, feature, id=f"{key}-{feature}")
                for key in FAMILIES for feature in ("stacked", "zoneout")]


def make_model(key, options, feature, dtype, like=None):
    """A SequenceModel of the case (batch-first, a linear head, evaluation mode)."""
    from lstmkit.models import ModelConfig, SequenceModel

    layer = dataclasses.replace(layer_config(key, options, feature, "reference"),
                                batch_first=True)
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(layer, output_size=2), dtype=dtype)
    if like is not None:
        model.load_state_dict({k: v.to(dtype) for k, v in like.state_dict().items()})
    return model.eval()


@torch.no_grad()
def model_run(model, x, state, lengths):
    """Name -> tensor: the model's output (B, T, O) and final state tensors."""
    x, state = x.to(model.head.weight), [s.to(model.head.weight) for s in state]
    hx = model.rnn.family.make_state(*state) if len(state) > 1 else state[0]
    y, final = model(x, hx, lengths=lengths)
    return {"output": y, **{f"final {k}": t for k, t in enumerate(state_tensors(final))}}


def model_inputs(model):
    x, state = inputs(model.config.layer)
    return x.transpose(0, 1).contiguous(), state  # batch-first


@pytest.mark.parametrize("key, options, feature", MODEL_CASES)
def test_onnx_export_conforms(key, options, feature, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from lstmkit.export.onnx import export_onnx

    model32 = make_model(key, options, feature, DTYPE)
    family = model32.rnn.family
    if family.onnx is None:  # refused with a reason, never exported wrongly
        with pytest.raises(ValueError, match=f"the {key!r} family has no ONNX mapping"):
            export_onnx(model32, tmp_path / "m.onnx")
        return
    export_onnx(model32, tmp_path / "m.onnx")
    options_ = ort.SessionOptions()
    options_.intra_op_num_threads = options_.inter_op_num_threads = 1
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), options_,
                                   providers=["CPUExecutionProvider"])
    x, state = model_inputs(model32)
    names = family.state_names(model32.config.layer.cell)
    feed = {"input": x.numpy(), "lengths": LENGTHS.numpy(),
            **{f"{n}0": s.numpy() for n, s in zip(names, state)}}
    got = dict(zip(["output", *(f"final {k}" for k in range(len(names)))],
                   (torch.from_numpy(a) for a in session.run(None, feed))))
    exact = model_run(make_model(key, options, feature, torch.float64, like=model32), x, state,
                      LENGTHS)
    rounded = model_run(model32, x, state, LENGTHS)
    for part in exact:
        assert_conforms(got[part], exact[part], rounded[part], DTYPE,
                        reduction(model32.config.layer), f"onnx: {part}")


@pytest.mark.parametrize("key, options, feature", MODEL_CASES)
def test_numpy_runtime_conforms(key, options, feature, tmp_path):
    import lstmkit.runtime
    from lstmkit.export.runtime import export_runtime

    model = make_model(key, options, feature, torch.float64)
    export_runtime(model, tmp_path / "m.npz")
    family = model.rnn.family
    if family.key not in lstmkit.runtime.cells.FAMILIES:  # refused with a reason
        with pytest.raises(ValueError, match="expected a cell family with a NumPy step"):
            lstmkit.runtime.load(tmp_path / "m.npz")
        return
    runtime = lstmkit.runtime.load(tmp_path / "m.npz")
    x, state = model_inputs(model)
    numpy_state = [s.double().numpy() for s in state]
    y, final = runtime.forward(x.double().numpy(), numpy_state if len(state) > 1
                               else numpy_state[0], lengths=LENGTHS.numpy())
    got = {"output": y, **{f"final {k}": t for k, t in enumerate(state_tensors(final))}}
    exact = model_run(model, x, state, LENGTHS)
    for part in exact:
        assert_conforms(torch.from_numpy(got[part]), exact[part], None, torch.float64,
                        reduction(model.config.layer), f"runtime: {part}")


@pytest.mark.parametrize("key, options, feature", MODEL_CASES)
def test_stream_engine_conforms(key, options, feature):
    from lstmkit.streaming import StreamEngine

    model = make_model(key, options, feature, torch.float64)
    if model.config.layer.bidirectional:
        pytest.skip("a bidirectional model cannot stream (its reverse pass needs the whole "
                    "sequence)")
    engine = StreamEngine(model)
    x, _ = model_inputs(model)  # (B, T, I): one stream per row, pushed in uneven chunks
    streams = [engine.open() for _ in range(B)]
    cuts = [(0, 2, 5), (0, 1, 4, 5), (0, 3, 5)]
    outputs = {sid: [] for sid in streams}
    for chunk in range(3):
        pending = {sid: x[b, c[chunk]:c[chunk + 1]].double()
                   for b, (sid, c) in enumerate(zip(streams, cuts)) if chunk + 1 < len(c)}
        for sid, y in engine.push_many(pending).items():
            outputs[sid].append(y)
    zeros = [torch.zeros_like(s) for s in inputs(model.config.layer)[1]]  # as a new stream
    exact = model_run(model, x, zeros, None)["output"]
    for b, sid in enumerate(streams):
        assert_conforms(torch.cat(outputs[sid]), exact[b], None, torch.float64,
                        reduction(model.config.layer), f"engine stream {b}")



def _session(path):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_steps(session, x: np.ndarray, state: list[np.ndarray], names: list[str]):
    """The graph run one step at a time from ``state``, each call's final state passed back in:
    (outputs (B, T, O) or the last call's (B, O) when pooled, the final state)."""
    ys = []
    for t in range(x.shape[1]):
        feed = {"input": x[:, t:t + 1], "lengths": np.ones(x.shape[0], np.int64),
                **{f"{n}0": s for n, s in zip(names, state)}}
        y, *state = session.run(None, feed)
        ys.append(y)
    return (np.concatenate(ys, 1) if ys[0].ndim == 3 else ys[-1]), state


@pytest.mark.parametrize("key, options, feature", [c for c in MODEL_CASES
                                                    if c.values[2] != "stacked"])
def test_onnx_steps_equal_one_call(key, options, feature, tmp_path):
    """The graph's state out, fed back in, continues the sequence: steps equal one call."""
    pytest.importorskip("onnxruntime")
    from lstmkit.export.onnx import export_onnx

    model32 = make_model(key, options, feature, DTYPE)
    family = model32.rnn.family
    if family.onnx is None:
        pytest.skip(f"the {key!r} family has no ONNX mapping (refused: "
                    "test_onnx_export_conforms)")
    export_onnx(model32, tmp_path / "m.onnx")
    x, state = model_inputs(model32)
    names = list(family.state_names(model32.config.layer.cell))
    y, final = _onnx_steps(_session(tmp_path / "m.onnx"), x.numpy(), [s.numpy() for s in state],
                           names)
    got = {"output": y, **{f"final {k}": t for k, t in enumerate(final)}}
    exact = model_run(make_model(key, options, feature, torch.float64, like=model32), x, state,
                      None)
    rounded = model_run(model32, x, state, None)
    for part in exact:
        assert_conforms(torch.from_numpy(got[part]), exact[part], rounded[part], DTYPE,
                        reduction(model32.config.layer), f"onnx steps: {part}")


# --- xLSTM block stacks (not a family: a SequenceModel backbone) through the same three ------

STACKS = {  # name -> (xLSTMConfig.from_pattern arguments, ModelConfig options)
    "mLSTM:sLSTM": (("mLSTM:sLSTM 1:1", 2), {}),
    "sLSTM:mLSTM-bias-tokens-last": (("mLSTM:sLSTM 1:1", 2, {"slstm_at": (0,), "bias": True}),
                                     {"vocab_size": 6, "pooling": "last"}),
}
STACK_SIZES = {"input_size": IN, "round_to": 4, "mlstm_heads": 2, "slstm_heads": 2,
               "qkv_blocksize": 2, "conv_kernel": 3, "chunk_size": 2}


def make_stack(name: str, dtype: torch.dtype, like=None):
    """A SequenceModel with an xLSTM stack of case ``name``, every parameter moved off its
    initialisation (which zeroes the recurrent and gate weights), in evaluation mode."""
    from lstmkit.layers.xlstm_blocks import xLSTMConfig
    from lstmkit.models import ModelConfig, SequenceModel

    (pattern, blocks, *more), options = STACKS[name]
    config = xLSTMConfig.from_pattern(8, pattern, blocks, **STACK_SIZES)
    if more:
        config = dataclasses.replace(config, **more[0])
    torch.manual_seed(0)
    model = SequenceModel(ModelConfig(config, output_size=2, **options), dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    if like is not None:
        model.load_state_dict({k: v.to(dtype) for k, v in like.state_dict().items()})
    return model.eval()


def stack_inputs(model):
    """x (B, T, I) floats or (B, T) ids, and the initial state's leaves (B, ...), float32."""
    gen = torch.Generator().manual_seed(3)
    vocab = model.config.vocab_size
    x = (torch.randint(0, vocab, (B, T), generator=gen) if vocab
         else torch.randn(B, T, IN, generator=gen))
    leaves = [0.5 * torch.randn(t.shape, generator=gen)
              for t in tree_flatten(model.rnn.init_state(B))[0]]
    return x, leaves


@torch.no_grad()
def stack_run(model, x, leaves, lengths):
    """Name -> tensor: the output and the final state's leaves."""
    like = model.head.weight
    x = x if model.config.vocab_size else x.to(like)
    spec = tree_flatten(model.rnn.init_state(B))[1]
    y, final = model(x, tree_unflatten([t.to(like) for t in leaves], spec), lengths=lengths)
    return {"output": y, **{f"final {k}": t for k, t in enumerate(tree_flatten(final)[0])}}


def stack_reduction(model) -> int:
    """The longest sum behind an element, as :func:`reduction`: every step's products over
    the blocks' widths."""
    c = model.config.layer
    return T * B * (c.input_size + 3 * c.mlstm_inner + 4 * c.embedding_dim) * c.num_blocks


@pytest.mark.parametrize("name", STACKS)
def test_stack_onnx_export_conforms(name, tmp_path):
    """With lengths and an initial state in one call, and step by step with the state passed
    back in."""
    pytest.importorskip("onnxruntime")
    from lstmkit.export.onnx import export_onnx
    from lstmkit.export.onnx_xlstm import state_names

    model32 = make_stack(name, DTYPE)
    export_onnx(model32, tmp_path / "m.onnx")
    session = _session(tmp_path / "m.onnx")
    x, leaves = stack_inputs(model32)
    names = [n for n, _ in state_names(model32)]
    feed = {"input": x.numpy(), "lengths": LENGTHS.numpy(),
            **{f"{n}0": s.numpy() for n, s in zip(names, leaves)}}
    runs = {"one call": (session.run(None, feed), LENGTHS)}
    y, final = _onnx_steps(session, x.numpy(), [s.numpy() for s in leaves], names)
    runs["steps"] = ([y, *final], None)  # pooled: the last step's output, the whole sequence's
    exact64 = make_stack(name, torch.float64, like=model32)
    for how, (outputs, lengths) in runs.items():
        exact = stack_run(exact64, x, leaves, lengths)
        rounded = stack_run(model32, x, leaves, lengths)
        for part, value in zip(exact, outputs):
            assert_conforms(torch.from_numpy(value), exact[part], rounded[part], DTYPE,
                            stack_reduction(model32), f"onnx {how}: {part}")


@pytest.mark.parametrize("name", STACKS)
def test_stack_numpy_runtime_conforms(name, tmp_path):
    """Whole sequences with lengths and an initial state, and step by step."""
    import lstmkit.runtime
    from lstmkit.export.runtime import export_runtime

    model = make_stack(name, torch.float64)
    export_runtime(model, tmp_path / "m.npz")
    runtime = lstmkit.runtime.load(tmp_path / "m.npz")
    x, leaves = stack_inputs(model)
    spec = tree_flatten(model.rnn.init_state(B))[1]
    state = tree_unflatten([t.double().numpy() for t in leaves], spec)
    y, final = runtime.forward(x.numpy() if model.config.vocab_size else x.double().numpy(),
                               state, lengths=LENGTHS.numpy())
    ys, s = [], state
    for t in range(T):
        y_t, s = runtime.step(x[:, t].numpy() if model.config.vocab_size
                              else x[:, t].double().numpy(), s)
        ys.append(y_t)
    stepped = np.stack(ys, 1) if model.config.pooling == "none" else ys[-1]
    for how, (output, last, lengths) in {"one call": (y, final, LENGTHS),
                                         "steps": (stepped, s, None)}.items():
        exact = stack_run(model, x, leaves, lengths)
        got = [output, *tree_flatten(last)[0]]
        assert len(got) == len(exact)
        for part, value in zip(exact, got):
            assert_conforms(torch.from_numpy(value), exact[part], None, torch.float64,
                            stack_reduction(model), f"runtime {how}: {part}")


@pytest.mark.parametrize("name", STACKS)
def test_stack_stream_engine_conforms(name):
    """Streams pushed in uneven chunks, batched together, equal each stream in one call: the
    convolution windows and cell states carried between chunks."""
    from lstmkit.streaming import StreamEngine

    model = make_stack(name, torch.float64)
    engine = StreamEngine(model)
    x, _ = stack_inputs(model)
    x = x if model.config.vocab_size else x.double()
    streams = [engine.open() for _ in range(B)]
    cuts = [(0, 2, 5), (0, 1, 4, 5), (0, 3, 5)]
    outputs = {sid: [] for sid in streams}
    for chunk in range(3):
        pending = {sid: x[b, c[chunk]:c[chunk + 1]]
                   for b, (sid, c) in enumerate(zip(streams, cuts)) if chunk + 1 < len(c)}
        for sid, y in engine.push_many(pending).items():
            outputs[sid].append(y)
    with torch.no_grad():
        features = x if model.embedding is None else model.embedding(x)
        exact = model.head(model.rnn(features)[0])  # (B, T, O): the output after each step
    for b, sid in enumerate(streams):
        assert_conforms(torch.cat(outputs[sid]), exact[b], None, torch.float64,
                        stack_reduction(model), f"engine stream {b}")
