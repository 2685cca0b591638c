"""The NumPy runtime's xLSTM: the cell steps against torch's, and the block stack's own paths
(conformance against float64 truth is in tests/kernels/test_conformance.py)."""

import numpy as np
import pytest
import torch

import lstmkit.runtime
from lstmkit.cells import mlstm, slstm
from lstmkit.export import export_runtime
from lstmkit.runtime import xlstm
from tests.tiny_models import xlstm_charlm, xlstm_stack


@pytest.mark.parametrize("options", [{}, {"forget": "exp", "stabilizer": "paper"}])
def test_slstm_step_equals_the_cell(options):
    cfg = slstm.sLSTMConfig(3, 8, num_heads=2, **options)
    torch.manual_seed(0)
    w = {name: torch.randn(shape, dtype=torch.float64)
         for name, shape in slstm.parameter_spec(cfg).items()}
    x = torch.randn(4, 3, dtype=torch.float64)
    state = slstm.sLSTMState(*torch.randn(4, 4, 8, dtype=torch.float64))
    state = state._replace(n=state.n.abs(), c=state.c.abs())
    state.n[0] = 0  # NX-AI's first step for this stream
    want = slstm.step(slstm.input_term(x, w, cfg), state, w, cfg)
    arrays = {k: v.numpy() for k, v in w.items()}
    got = xlstm.slstm_step(x.numpy() @ arrays["weight_ih"].T, tuple(t.numpy() for t in state),
                           arrays, cfg.to_dict())
    for g, t in zip(got, want):
        np.testing.assert_allclose(g, t.numpy(), rtol=1e-12, atol=1e-13)


def test_mlstm_step_equals_the_cell_and_keeps_its_output_apart():
    cfg = mlstm.mLSTMConfig(3, 8, num_heads=2, forget="exp")
    torch.manual_seed(1)
    w = {name: torch.randn(shape, dtype=torch.float64)
         for name, shape in mlstm.parameter_spec(cfg).items()}
    z = mlstm.input_term(torch.randn(4, 3, dtype=torch.float64), w, cfg)
    state = mlstm.zero_state(cfg, (4,), z)
    want_h, want = mlstm.cell_step(z, state, w, cfg)
    got_h, got = xlstm.mlstm_step(z.numpy(), tuple(t.numpy() for t in state), {}, cfg.to_dict())
    np.testing.assert_allclose(got_h, want_h.numpy(), rtol=1e-12, atol=1e-13)
    for g, t in zip(got, want):
        np.testing.assert_allclose(g, t.numpy(), rtol=1e-12, atol=1e-13)
    assert xlstm.FAMILIES["mlstm"].output(cfg.to_dict()) == 8


def test_gelu_is_torchs_exact_one():
    x = np.linspace(-6, 6, 101)
    np.testing.assert_allclose(xlstm.gelu(x), torch.nn.functional.gelu(torch.from_numpy(x)),
                               rtol=1e-14, atol=1e-15)


def test_a_stack_streams_through_the_stepper_and_its_state_round_trips(tmp_path):
    model = xlstm_charlm()
    export_runtime(model, tmp_path / "m.npz")
    runtime = lstmkit.runtime.load(tmp_path / "m.npz")
    assert isinstance(runtime, xlstm.xLSTMModel)
    ids = np.array([3, 1, 4, 1, 5, 9])
    stepper = runtime.stepper()
    assert not stepper.fast
    head = [stepper(t) for t in ids[:3]]
    saved = stepper.state
    tail = [stepper(t) for t in ids[3:]]
    stepper.reset()
    stepper.state = saved
    np.testing.assert_array_equal([stepper(t) for t in ids[3:]], tail)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)[None])[0][0].numpy()
    np.testing.assert_allclose(head + tail, want, rtol=1e-5, atol=1e-6)


def test_a_stack_step_refuses_pooling_over_the_whole_sequence(tmp_path):
    export_runtime(xlstm_stack(pooling="mean"), tmp_path / "m.npz")
    runtime = lstmkit.runtime.load(tmp_path / "m.npz")
    runtime.forward(np.zeros((2, 4, 3), np.float32))  # whole sequences are fine
    with pytest.raises(ValueError, match="pooling 'none' or 'last'"):
        runtime.step(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 3\)"):
        runtime.forward(np.zeros((2, 4, 5), np.float32))
