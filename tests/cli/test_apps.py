"""The application subcommands, in-process: every bad input is one line and exit code 2."""

import json

import numpy as np
import pytest
import torch

from lstmkit.apps import forecast
from lstmkit.cli import main

TINY = ["--epochs", "2", "--model.hidden-size", "8", "--progress", "false"]


@pytest.fixture
def series_csv(tmp_path):
    t = np.arange(80)
    lines = ["date,y"] + [f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{10 + 0.1 * i + np.sin(i):.4f}"
                          for i in t]
    path = tmp_path / "s.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _forecast(series_csv, tmp_path, *extra):
    return main(["forecast", "--data", str(series_csv), "--horizon", "4", "--season", "12",
                 "--out", str(tmp_path / "run"), *TINY, *extra])


def _one_line_error(capsys, command):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"lstmkit {command}: error: "), err
    return lines[0]


def test_forecast_then_predict_evaluate_from_the_checkpoint(series_csv, tmp_path, capsys):
    assert _forecast(series_csv, tmp_path) == 0
    out = capsys.readouterr().out
    assert "seasonal_naive" in out and "checkpoint:" in out
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"),
                 "--output", str(tmp_path / "m.json")]) == 0
    assert "lstm" in json.loads((tmp_path / "m.json").read_text())["metrics"]["y"]
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "model.safetensors"),
                 "--output", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().startswith("kind,origin,time,target,step,actual")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--text", "x.txt"]) == 2
    assert "--text: expected only with a checkpoint that reads it" in _one_line_error(
        capsys, "evaluate")


@pytest.mark.parametrize("args, message", [
    (["forecast", "--data", "absent.csv"], "no such file"),
    (["forecast", "--dataset", "nope"], "--dataset: expected one of"),
    (["classify", "--dataset", "nope"], "--dataset: expected one of"),
    (["forecast", "--quantiles", "0.2,0.8"], "including 0.5"),
    (["predict", "--checkpoint", "absent.safetensors"], "no such file"),
    (["predict"], "--checkpoint: expected a checkpoint"),
])
def test_bad_arguments(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in _one_line_error(capsys, args[0])


@pytest.mark.parametrize("content, extra, message", [
    ("date,y\n2000-01-01,1\n", ["--target", "z"], "expected 'z' among the columns"),
    ("date,y\n2000-01-01,1\n2000-02-01,oops\n", [], "expected numbers, got 'oops' at row 2"),
    ("date,y\n2000-01-01,1\n2000-02-01,\n2000-03-01,3\n", ["--missing", "refuse"],
     "expected no missing values"),
    ("date,y\n" + "".join(f"2000-01-{d:02d},{d}\n" for d in range(1, 21)), [],
     "series too short: 20 points"),
])
def test_bad_series(content, extra, message, tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert _forecast(path, tmp_path, *extra) == 2
    assert message in _one_line_error(capsys, "forecast")


def test_empty_text(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert main(["charlm", "--text", str(tmp_path / "empty.txt")]) == 2
    assert "empty file" in _one_line_error(capsys, "charlm")


def test_corrupt_and_foreign_checkpoints(tmp_path, capsys):
    from safetensors.torch import save_file

    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    for name, message in (("junk", "expected a safetensors file"),
                          ("foreign", "expected format")):
        assert main(["evaluate", "--checkpoint", str(tmp_path / f"{name}.safetensors")]) == 2
        assert message in _one_line_error(capsys, "evaluate")


def test_config_file_with_unknown_keys(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 2, "hiden_size": 8}))
    assert main(["forecast", "--config", str(tmp_path / "c.json")]) == 2
    assert "unknown keys ['hiden_size']" in _one_line_error(capsys, "forecast")


def test_config_file_sets_options_and_the_command_line_wins(series_csv, tmp_path):
    import lstmkit

    (tmp_path / "c.json").write_text(json.dumps({"context": 13, "model": {"hidden_size": 5,
                                                                         "peephole": True}}))
    assert _forecast(series_csv, tmp_path, "--config", str(tmp_path / "c.json")) == 0
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    assert model.meta["layout"]["context"] == 13  # from the file
    assert model.config.layer.cell.hidden_size == 8  # --model.hidden-size 8 beats the file's 5
    assert model.config.layer.cell.peephole  # the file's other model option stays


def test_ctrl_c_keeps_the_checkpoint_and_resume_finishes(series_csv, tmp_path, capsys,
                                                         monkeypatch):
    calls = {"n": 0}
    original = forecast._Task.loss

    def interrupting(self, model, batch, carry):
        calls["n"] += 1
        if calls["n"] == 3:  # the first step of the second epoch (2 steps each)
            raise KeyboardInterrupt
        return original(self, model, batch, carry)

    monkeypatch.setattr(forecast._Task, "loss", interrupting)
    assert _forecast(series_csv, tmp_path, "--batch-size", "16") == 130
    assert "continue with --resume" in capsys.readouterr().err
    import lstmkit
    assert lstmkit.load(tmp_path / "run" / "model.safetensors").meta["training"]["epochs"] == 1
    monkeypatch.setattr(forecast._Task, "loss", original)
    assert _forecast(series_csv, tmp_path, "--batch-size", "16", "--resume") == 0
    assert lstmkit.load(tmp_path / "run" / "model.safetensors").meta["training"]["epochs"] == 2
    assert main(["forecast", "--data", str(series_csv), "--horizon", "4", "--out",
                 str(tmp_path / "other"), "--resume"]) == 2
    assert "train without --resume" in _one_line_error(capsys, "forecast")
