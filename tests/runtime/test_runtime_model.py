import numpy as np
import pytest
import torch
from support import python_output

import lstmkit.runtime
from lstmkit import cell_config
from lstmkit.export import export_runtime
from tests.tiny_models import ZOO, forecaster, make_model, xlstm_stack


def _inputs(model, batch, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if model.config.vocab_size:
        return torch.randint(0, model.config.vocab_size, (batch, steps), generator=gen)
    return torch.randn(batch, steps, model.config.layer.cell.input_size, generator=gen)


def _exported(model, tmp_path):
    export_runtime(model, tmp_path / "m.npz")
    return lstmkit.runtime.load(tmp_path / "m.npz")


def _tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _np(state):
    return tuple(t.numpy() for t in state) if isinstance(state, tuple) else state.numpy()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_forward_with_lengths_and_initial_state_equals_torch(name, tmp_path):
    model = ZOO[name]()
    runtime = _exported(model, tmp_path)
    x, lengths = _inputs(model, 3, 7), torch.tensor([7, 2, 5])
    h0 = tuple(torch.randn_like(t) for t in _tuple(model.init_state(3)))
    h0 = h0 if len(h0) > 1 else h0[0]
    with torch.no_grad():
        want, want_state = model(x, h0, lengths=lengths)
    got, got_state = runtime.forward(x.numpy(), _np(h0), lengths.numpy())
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    for g, w in zip(_tuple(got_state), _tuple(_np(want_state))):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["plain", "charlm", "variant", "gru_zoneout", "activations2"])
def test_step_and_stepper_equal_torch_steps(name, tmp_path):
    model = ZOO[name]()
    runtime = _exported(model, tmp_path)
    x = _inputs(model, 1, 6, seed=1)
    stepper = runtime.stepper()
    assert stepper.fast == (name in ("plain", "charlm"))
    state, torch_state = None, None
    for t in range(x.shape[1]):
        with torch.no_grad():
            want, torch_state = model.step(x[:, t], torch_state)
        got, state = runtime.step(x[:, t].numpy(), state)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stepper(x[0, t].numpy()), want[0].numpy(), rtol=1e-5,
                                   atol=1e-5)
    for a, b in zip(_tuple(stepper.state), _tuple(state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_stepper_state_round_trips_and_resets(tmp_path):
    runtime = _exported(forecaster(), tmp_path)
    stepper = runtime.stepper()
    xs = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    for x in xs[:2]:
        stepper(x)
    saved = stepper.state
    tail = [stepper(x) for x in xs[2:]]
    stepper.reset()
    stepper.state = saved
    np.testing.assert_array_equal([stepper(x) for x in xs[2:]], tail)
    full, _ = runtime.forward(xs[None])
    np.testing.assert_allclose(tail, full[0, 2:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factory", [forecaster, xlstm_stack])
def test_imports_and_runs_without_torch(factory, tmp_path):
    model = factory()
    export_runtime(model, tmp_path / "m.npz")
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, lstmkit.runtime\n"
            f"m = lstmkit.runtime.load({str(tmp_path / 'm.npz')!r})\n"
            "y, _ = m.forward(np.zeros((2, 4, 3), np.float32), lengths=[4, 2])\n"
            "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
            "print(y.shape)")
    assert python_output(code, timeout=60) == f"(2, 4, {model.config.output_size})"


def test_bad_files_and_inputs_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        lstmkit.runtime.load(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="expected an .npz file"):
        lstmkit.runtime.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "pickled.npz", __config__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="expected an .npz file"):  # never unpickled
        lstmkit.runtime.load(tmp_path / "pickled.npz")
    runtime = _exported(make_model(cell_config("lstm", 3, 4), 2), tmp_path)
    with pytest.raises(ValueError, match=r"expected shape \(B, T, 3\)"):
        runtime.forward(np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match="lengths: expected shape"):
        runtime.forward(np.zeros((2, 2, 3), np.float32), lengths=[3, 1])


def test_refuses_what_it_has_no_step_for():
    from lstmkit.runtime.cells import family

    cell = cell_config("lstm", 3, 4).to_dict()
    assert family(cell).step.__name__ == "lstm_step"
    with pytest.raises(ValueError, match=r"runtime: gate_activation='gelu' has no NumPy function"):
        family({**cell, "gate_activation": "gelu"})  # an activation added to lstmkit later
    with pytest.raises(ValueError, match=r"runtime: expected a cell family with a NumPy step "
                                         r"\(lstm, gru, rnn, slstm, mlstm\), got 'mgu'"):
        family({**cell, "family": "mgu"})


def test_format_1_files_still_load(tmp_path):
    """lstmkit.runtime/1 named the family "mode"; such a file loads and computes the same."""
    import json

    from lstmkit.runtime.model import CONFIG_KEY

    model = make_model(cell_config("gru", 3, 5, reset_after=False), 2)
    export_runtime(model, tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(arrays[CONFIG_KEY].tobytes())
    cell = header["model"]["layer"]["cell"]
    cell["mode"] = cell.pop("family")
    header["format"] = "lstmkit.runtime/1"
    arrays[CONFIG_KEY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    new, old = (lstmkit.runtime.load(tmp_path / f"{n}.npz") for n in ("new", "old"))
    np.testing.assert_array_equal(old.forward(x)[0], new.forward(x)[0])


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_compiled_stepper_is_near_the_float64_step(precision, tmp_path):
    from lstmkit.kernels.cpu import _build, step

    if _build.problem() is not None:
        pytest.skip(f"the cpu backend {_build.problem()}")
    model = forecaster()
    stepper = _exported(model, tmp_path).stepper(precision)
    export_runtime(model.double(), tmp_path / "m64.npz")
    truth = lstmkit.runtime.load(tmp_path / "m64.npz").stepper()
    xs = np.random.default_rng(0).standard_normal((6, 3))
    # float32: rounding only; float16: each weight off by up to 2^-11 of itself (the bound
    # of tests/kernels/cpu/test_step.py, loosely, over a few steps and the head)
    allowed = 1e-5 if precision == "float32" else 50 * step.WEIGHT_ERROR["float16"]
    for x in xs:
        got, want = stepper(x.astype(np.float32)), truth(x)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=allowed)
    for a, b in zip(stepper.state, truth.state):
        np.testing.assert_allclose(a, b, rtol=0, atol=allowed)


def test_int8_stepper_steps_the_int8_model(tmp_path):
    """stepper("int8") rounds the weights as quantize_dynamic does, from a float file or an
    int8 one alike, and steps as the int8 model's own step does, to float32 rounding."""
    from lstmkit.kernels.cpu import _build
    from lstmkit.layers.quantized import quantize_dynamic

    if _build.problem() is not None:
        pytest.skip(f"the cpu backend {_build.problem()}")
    model = forecaster()
    int8 = quantize_dynamic(model)
    export_runtime(quantize_dynamic(model, "reference"), tmp_path / "q.npz")
    steppers = [_exported(model, tmp_path).stepper("int8"),
                lstmkit.runtime.load(tmp_path / "q.npz").stepper("int8")]
    float_step, moved, state = _exported(model, tmp_path).stepper("float32"), 0.0, None
    with torch.no_grad():
        for x in np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32):
            want, state = int8.step(torch.from_numpy(x)[None], state)
            for stepper in steppers:
                np.testing.assert_allclose(stepper(x), want[0].numpy(), rtol=0, atol=1e-5)
            moved = max(moved, float(np.abs(float_step(x) - want[0].numpy()).max()))
    assert moved > 1e-5  # the int8 weights are not the float ones


def test_stepper_precision_is_checked(tmp_path):
    runtime = _exported(forecaster(), tmp_path)
    with pytest.raises(ValueError, match="precision: expected None or one of"):
        runtime.stepper("bfloat16")
    variant = _exported(ZOO["variant"](), tmp_path)
    with pytest.raises(ValueError, match="precision: expected None for a model that is not"):
        variant.stepper("float16")
