"""torch.export of a SequenceModel with dynamic batch and time, on the native and cpu backends:
the program equals eager at other sizes, and after a save/load round trip."""

from __future__ import annotations

import io

import pytest
import torch
from tolerances import assert_close

import lstmkit
from lstmkit.config import LayerConfig
from lstmkit.kernels.cpu import _build
from lstmkit.models import ModelConfig, SequenceModel


def _exported(module, argument: str, example: torch.Tensor):
    """``module`` exported with a dynamic batch and time (dims 0 and 1 of ``argument``), and
    the same program after a torch.export.save/load round trip."""
    dims = {0: torch.export.Dim("batch", min=2), 1: torch.export.Dim("time", min=2)}
    program = torch.export.export(module, (example,), dynamic_shapes={argument: dims})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    return program, torch.export.load(buffer)


@pytest.mark.parametrize(("family", "options", "backend"), [
    ("lstm", {}, "native"), ("gru", {}, "native"), ("lstm", {"peephole": True}, "cpu"),
    ("lstm", {"layer_norm": True, "proj_size": 2}, "cpu"), ("gru", {"reset_after": False}, "cpu")])
def test_exported_program_equals_eager_at_new_sizes(family, options, backend):
    cell = lstmkit.cell_config(family, 3, 4, **options)
    model = SequenceModel(ModelConfig(LayerConfig(cell, batch_first=True), output_size=2),
                          dtype=torch.float64).eval()
    if (chosen := model.rnn.backend().name) != backend:
        pytest.fail(f"expected 'auto' to take {backend}, got {chosen}")
    if backend == "cpu" and (reason := _build.problem()):
        pytest.skip(f"the cpu backend {reason}")
    program, loaded = _exported(model, "x", torch.randn(5, 7, 3, dtype=torch.float64))
    for batch, steps in ((6, 9), (2, 3), (8, 2)):
        x = torch.randn(batch, steps, 3, dtype=torch.float64)
        with torch.no_grad():
            expected = model(x)
            for run in (program.module(), loaded.module()):
                got = run(x)
                assert_close(got[0], expected[0], torch.float64)
                for g, e in zip(lstmkit.cells.base.state_tensors(got[1]),
                                lstmkit.cells.base.state_tensors(expected[1])):
                    assert_close(g, e, torch.float64)


@pytest.mark.parametrize("make", [
    lambda: lstmkit.sLSTM(3, 4, num_heads=2, batch_first=True, dtype=torch.float64),
    lambda: lstmkit.mLSTM(3, 4, num_heads=2, chunk_size=3, batch_first=True,
                          dtype=torch.float64),
    lambda: lstmkit.LSTM(3, 4, bidirectional=True, batch_first=True, dtype=torch.float64),
    lambda: lstmkit.RNN(3, 4, nonlinearity="relu", batch_first=True, dtype=torch.float64),
    lambda: lstmkit.LSTM(3, 4, coupled=True, backend="reference", batch_first=True,
                         dtype=torch.float64)],
    ids=["slstm", "mlstm chunks of 3", "lstm bidirectional", "rnn relu", "lstm reference"])
def test_every_family_exports_with_dynamic_batch_and_time(make):
    """The xLSTM families too: the mLSTM's chunk count, traced as torch ops, held an exported
    program to its example's (7 steps: 3 chunks), refusing a dynamic T; so did the reference's
    loop over time."""
    torch.manual_seed(0)
    layer = make().eval()
    program, loaded = _exported(layer, "input", torch.randn(5, 7, 3, dtype=torch.float64))
    for batch, steps in ((6, 9), (2, 3), (3, 2), (4, 12)):  # 1 to 4 chunks, padded or not
        x = torch.randn(batch, steps, 3, dtype=torch.float64)
        with torch.no_grad():
            want_y, want_state = layer(x)
            for run in (program.module(), loaded.module()):
                got_y, got_state = run(x)
                assert_close(got_y, want_y, torch.float64)
                for g, e in zip(lstmkit.cells.base.state_tensors(got_state),
                                lstmkit.cells.base.state_tensors(want_state)):
                    assert_close(g, e, torch.float64)


def test_an_xlstm_block_stack_exports_and_reloads():
    """The block stack made its zero state through init_state, whose int check refused the
    symbolic batch, and its BlockState was not registered for torch.export.save."""
    torch.manual_seed(0)
    backbone = lstmkit.xLSTMConfig(16, 2, slstm_at=(1,), input_size=3, mlstm_heads=2,
                                   slstm_heads=2, chunk_size=4)
    model = SequenceModel(ModelConfig(backbone, output_size=2), dtype=torch.float64).eval()
    _, reloaded = _exported(model, "x", torch.randn(3, 7, 3, dtype=torch.float64))
    loaded = reloaded.module()
    for batch, steps in ((2, 3), (5, 20)):
        x = torch.randn(batch, steps, 3, dtype=torch.float64)
        with torch.no_grad():
            want, want_state = model(x)
            got, got_state = loaded(x)
        assert_close(got, want, torch.float64)
        for g, e in zip(torch.utils._pytree.tree_leaves(got_state),
                        torch.utils._pytree.tree_leaves(want_state), strict=True):
            assert_close(g, e, torch.float64)
