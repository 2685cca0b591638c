"""lstmkit memory with the xLSTM cells: the model is a SequenceModel on an xLSTM stack."""

import pytest

from lstmkit.apps.memory import MemoryConfig, build_model, train
from lstmkit.layers.xlstm_blocks import mLSTMBlock, sLSTMBlock


@pytest.mark.parametrize("cell, kinds", [("slstm", [sLSTMBlock] * 2),
                                         ("mlstm", [mLSTMBlock] * 2),
                                         ("xlstm", [mLSTMBlock, sLSTMBlock])])
def test_cells_build_block_stacks(cell, kinds):
    config = MemoryConfig(task="parity", cell=cell, layers=2, hidden=16)
    model, described = build_model(config, config.make_task())
    assert [type(b) for b in model.rnn.blocks] == kinds
    assert "NX-AI" in described


def test_xlstm_needs_two_blocks():
    config = MemoryConfig(task="parity", cell="xlstm", layers=1)
    with pytest.raises(ValueError, match="layers: expected >= 2 for cell 'xlstm'"):
        build_model(config, config.make_task())


def test_a_short_mqar_run_reports_query_counts():
    config = MemoryConfig(task="mqar", cell="mlstm", length=2, hidden=16, layers=1,
                          budget="256", check_every=128, quiet=True)
    result = train(config)
    assert result["sequences_trained"] >= 256
    assert result["test"]["total"] == 1024 * 2  # queries, not sequences
