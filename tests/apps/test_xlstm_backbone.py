"""``--model.cell xlstm``: every application trains an xLSTM block stack as its backbone, and
the checkpoint alone rebuilds it (its config says which block sits where)."""

import json
import math

import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.apps.model_options import ModelOptions, model_config
from lstmkit.cli import main
from lstmkit.layers.xlstm_blocks import xLSTM, xLSTMConfig
from lstmkit.models import ModelConfig


def test_charlm_trains_samples_and_evaluates_an_xlstm_stack(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 100)
    out = tmp_path / "run"
    assert main(["charlm", "--text", str(text), "--out", str(out), "--epochs", "1",
                 "--steps-per-epoch", "5", "--seq-len", "20", "--batch-size", "8",
                 "--model.hidden-size", "16", "--embedding-size", "8", "--progress", "false",
                 "--model.cell", "xlstm", "--model.blocks", "m,s,m", "--model.num-heads", "2"]) == 0
    model = lstmkit.load(out / "model.safetensors")
    layer = model.config.layer
    assert isinstance(layer, xLSTMConfig) and (layer.num_blocks, layer.slstm_at) == (3, (1,))
    assert (layer.embedding_dim, layer.mlstm_heads, layer.slstm_heads) == (16, 2, 2)
    assert ModelConfig.from_dict(model.config.to_dict()) == model.config
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out), "--temperature", "0", "--length", "10"]) == 0
    assert capsys.readouterr().out.startswith("And ")
    assert main(["evaluate", "--checkpoint", str(out), "--text", str(text)]) == 0
    assert "bits per character" in capsys.readouterr().out


def test_classify_trains_a_bidirectional_stack_and_predicts(tmp_path, monkeypatch):
    from lstmkit.tasks import examples

    monkeypatch.chdir(tmp_path)
    examples.write_waves(tmp_path / "seqs", count=24)
    examples.write_waves(tmp_path / "new", count=3, seed=9, labelled=False)
    assert main(["classify", "--data", "seqs", "--out", "run", "--epochs", "1",
                 "--model.hidden-size", "8", "--progress", "false", "--model.cell", "xlstm",
                 "--model.num-layers", "2", "--model.blocks", "1:1"]) == 0
    layer = lstmkit.load(tmp_path / "run" / "model.safetensors").config.layer
    assert layer.bidirectional and layer.slstm_at == (1,)  # classify's preset: both directions
    assert main(["predict", "--checkpoint", "run", "--data", "new", "--output", "p.json"]) == 0


def test_forecast_trains_an_xlstm_stack_and_predicts(tmp_path):
    t = np.arange(60)
    lines = ["date,y"] + [f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{10 + np.sin(i):.4f}" for i in t]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["forecast", "--data", str(tmp_path / "s.csv"), "--horizon", "3", "--season",
                 "12", "--out", str(out), "--epochs", "1", "--model.hidden-size", "8",
                 "--progress", "false", "--model.cell", "xlstm", "--model.blocks", "s"]) == 0
    assert lstmkit.load(out / "model.safetensors").config.layer.slstm_at == (0,)
    assert main(["predict", "--checkpoint", str(out), "--output", str(tmp_path / "p.csv")]) == 0


@pytest.mark.parametrize("blocks, layers, expected", [
    ("7:1", 8, (8, (7,))), ("1:1", 4, (4, (1, 3))), ("1:0", 3, (3, ())), ("0:1", 2, (2, (0, 1))),
    ("m,m,s,m", 1, (4, (2,))), ("s, m", 2, (2, (0,)))])
def test_blocks_name_the_slstm_positions(blocks, layers, expected):
    layer = model_config(ModelOptions(cell="xlstm", blocks=blocks, num_layers=layers), 3, 2).layer
    assert (layer.num_blocks, layer.slstm_at) == expected


@pytest.mark.parametrize("options, message", [
    ({"cell": "xlstm", "peephole": True}, "model.peephole: expected only with a cell family"),
    ({"cell": "xlstm", "zoneout": 0.1}, "model.zoneout: expected only with a cell family"),
    ({"cell": "lstm", "blocks": "7:1"}, "model.blocks: expected only with a cell family"),
    ({"cell": "xlstm", "blocks": "m,x"}, "model.blocks: expected a ratio such as 7:1"),
    ({"cell": "xlstm", "blocks": "0:0"}, "model.blocks: expected a ratio with a positive sum"),
    ({"cell": "xlstm", "blocks": "m,s", "num_layers": 3}, "model.num_layers: expected 1 or 2"),
    ({"cell": "xlstm", "backend": "cpu"}, "model.backend: expected one of ('auto', 'xlstm')"),
    ({"cell": "xlstm", "hidden_size": 30, "blocks": "s"},
     "model.embedding_dim: expected a multiple of"),
])
def test_options_the_stack_does_not_have_are_refused(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelOptions(**options)


def _stack(bidirectional):
    torch.manual_seed(0)
    config = xLSTMConfig.from_pattern(8, "mLSTM:sLSTM 1:1", 2, input_size=3, mlstm_heads=2,
                                      slstm_heads=2, chunk_size=4)
    model = xLSTM(xLSTMConfig(**{**config.to_dict(), "bidirectional": bidirectional}))
    return model.double()


def test_the_reverse_stack_reads_each_sequence_backwards_within_its_length():
    model = _stack(True)
    x = torch.randn(3, 9, 3, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 1])
    x = torch.where((torch.arange(9)[None, :] < lengths[:, None])[..., None], x, math.nan)
    y, state = model(x, lengths=lengths)
    assert y.shape == (3, 9, 16) and len(state) == 4 and not y.isnan().any()
    for b, n in enumerate(lengths.tolist()):
        alone = x[b:b + 1, :n]
        forward, _ = model._run(alone, model.init_state(1)[:2], None)
        backward, _ = model.reverse._run(alone.flip(1), model.init_state(1)[2:], None)
        want = torch.cat([forward, backward.flip(1)], -1)
        torch.testing.assert_close(y[b:b + 1, :n], want, rtol=1e-10, atol=1e-12)
        assert (y[b, n:] == 0).all()
    y.sum().backward()  # gradients reach both stacks
    assert model.reverse.post_norm.weight.grad is not None
    with pytest.raises(ValueError, match="step: expected a unidirectional stack"):
        model.step(x[:, 0])


def test_memory_takes_the_model_options(tmp_path, capsys):
    """``lstmkit memory`` builds the network from --model.* as the other apps do."""
    assert main(["memory", "parity", "--model.cell", "gru", "--model.num-layers", "2",
                 "--model.hidden-size", "8", "--budget", "64", "--check-every", "64",
                 "--out", str(tmp_path)]) == 0
    assert "gru (model options), init as the model options set it, hidden 8" in \
        capsys.readouterr().out
    result = json.loads((tmp_path / "parity-model-gru-s0.json").read_text())
    assert result["config"]["model"]["num_layers"] == 2
    assert main(["memory", "parity", "--model.cell", "gru", "--hidden", "8"]) == 2
    assert "hidden: expected the default with model options" in capsys.readouterr().err


def test_the_memory_grid_runs_model_options_once_per_task(tmp_path):
    from lstmkit.apps.memory import MemoryConfig
    from lstmkit.apps.memory_table import GridConfig, grid, markdown_table, run_grid

    base = MemoryConfig(model=ModelOptions(cell="lstm", hidden_size=8), budget="64",
                        check_every=64, quiet=True)
    config = GridConfig(tasks="parity,even-pairs", dir=str(tmp_path), plot="")
    runs = grid(config, base)
    assert [r.task for r in runs] == ["parity", "even-pairs"]
    table = markdown_table(run_grid(config, base))
    assert "| lstm (model options) | model options | 8, lr 0.01 |" in table
