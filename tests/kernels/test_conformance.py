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

Triton runs under its CPU interpreter where there is no GPU (slow: the sizes are tiny).
"""

from __future__ import annotations

import dataclasses
import os

import torch

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


def inputs(config: LayerConfig):
    """x (T, B, I) and the initial state tensors (L*D, B, ...), float32."""
    gen = torch.Generator().manual_seed(3)
    family = FAMILIES[config.cell.family]
    leading = (config.num_layers * config.num_directions, B)
    x = torch.randn(T, B, IN, generator=gen)
    state = [0.5 * torch.randn(leading + shape, generator=gen)
             for shape in family.state_shapes(config.cell)]
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


def truth(key, options, feature):
    """(float64 results, float32 reference results) of a case, computed once."""
    if (key, str(options), feature) not in _TRUTH:
        config = layer_config(key, options, feature, "reference")
        training = FEATURES[feature][1]
        ref32 = make_layer(config, DTYPE)
        exact = make_layer(config, torch.float64, like=ref32)
        x, state = inputs(config)
        _TRUTH[key, str(options), feature] = (
            run(exact, x, state, LENGTHS, training), run(ref32, x, state, LENGTHS, training),
            pieces(exact, x, state)["one call"], pieces(ref32, x, state)["one call"])
    return _TRUTH[key, str(options), feature]


def check(scan_layer, key, options, feature, name: str) -> None:
    """The conformance of ``scan_layer`` (float32, of the case's config) with the truth."""
    config = scan_layer.config
    exact, ref32, exact_eval, ref32_eval = truth(key, options, feature)
    # The float32 reference is bounded by the floor alone; the others also by its error.
    ref = (lambda r: None) if name == "reference" else (lambda r: r)
    x, state = inputs(config)
    got = run(scan_layer, x, state, LENGTHS, FEATURES[feature][1])
    assert got.keys() == exact.keys()
    n = reduction(config)
    for part in exact:
        assert_conforms(got[part], exact[part], ref(ref32[part]), DTYPE, n, f"{name}: {part}")
    for how, results in pieces(scan_layer, x, state).items():
        for (part, value), ideal, rounded in zip(results.items(), exact_eval.values(),
                                                 ref32_eval.values()):
            assert_conforms(value, ideal, ref(rounded), DTYPE, n, f"{name} {how}: {part}")


def backend_or_skip(name: str, config: LayerConfig, training: bool):
    reason = kernels.get(name).supports(config, CPU, DTYPE, training)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("key, options, feature", CASES)
def test_backend_conforms(name, key, options, feature):
    config = layer_config(key, options, feature, name)
    backend_or_skip(name, config, FEATURES[feature][1])
    check(make_layer(config, DTYPE), key, options, feature, name)


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
def test_a_broken_kernel_fails_the_table(broken_backends, name, options, fails):
    layer = make_layer(layer_config("lstm", options, "plain", name), DTYPE)
    if not fails:  # the same harness passes a correct kernel: the failures are the kernel's
        check(layer, "lstm", options, "plain", name)
        return
    with pytest.raises(AssertionError, match=r"max \|error\|"):
        check(layer, "lstm", options, "plain", name)


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

