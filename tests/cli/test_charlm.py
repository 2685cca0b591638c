"""``lstmkit charlm`` as char-rnn users drive it: fine-tune with --init-from, sample greedily
or from the nucleus, score another text whole."""

import pytest

import lstmkit
from lstmkit.cli import main

TINY = ["--epochs", "1", "--steps-per-epoch", "10", "--seq-len", "20", "--batch-size", "8",
        "--model.hidden-size", "16", "--embedding-size", "8", "--progress", "false"]


@pytest.fixture
def run(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 100)
    assert main(["charlm", "--text", str(text), "--out", str(tmp_path / "run"), *TINY]) == 0
    return tmp_path / "run"


def test_fine_tune_sample_and_score_another_text(run, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("a mat sat on a cat. " * 100)
    tuned = tmp_path / "tuned"
    assert main(["charlm", "--init-from", str(run), "--text", str(other), "--out", str(tuned),
                 "--lr-schedule", "exponential", "--lr-decay", "0.9", *TINY[:-6],
                 "--progress", "false"]) == 0
    assert lstmkit.load(tuned / "model.safetensors").config == lstmkit.load(
        run / "model.safetensors").config
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tuned), "--temperature", "0", "--length",
                 "10"]) == 0
    assert main(["sample", "--checkpoint", str(tuned), "--top-p", "0.9", "--length",
                 "10"]) == 0
    assert main(["evaluate", "--checkpoint", str(run), "--text", str(other)]) == 0
    assert "2,000 characters scored" in capsys.readouterr().out  # all of it, not its last 5%


def test_predict_refuses_an_option_the_app_does_not_read(run, capsys):
    """Before: ``predict --checkpoint runs/charlm --dataset airline`` ignored --dataset."""
    assert main(["predict", "--checkpoint", str(run), "--dataset", "airline"]) == 2
    assert "--dataset: expected only with a checkpoint that reads it, got a charlm" in \
        capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(run)]) == 0
    assert capsys.readouterr().out.startswith("And ")


@pytest.mark.parametrize("cell, option, value", [("slstm", "stabilizer", "paper"),
                                                 ("mlstm", "num_heads", 2)])
def test_an_xlstm_family_trains_and_samples(tmp_path, capsys, cell, option, value):
    """Any registered family is a --model.cell, its own options are --model.* options."""
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 100)
    out = tmp_path / "run"
    assert main(["charlm", "--text", str(text), "--out", str(out), *TINY, "--model.cell", cell,
                 f"--model.{option.replace('_', '-')}", str(value)]) == 0
    cfg = lstmkit.load(out / "model.safetensors").config.layer.cell
    assert cfg.family == cell and getattr(cfg, option) == value
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out), "--temperature", "0", "--length", "10"]) == 0
    assert capsys.readouterr().out.startswith("And ")
