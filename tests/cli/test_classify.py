"""``lstmkit classify`` on the user's files, then ``predict`` and ``evaluate`` from the
checkpoint alone, as a new user would run them."""

import json

import pytest

import lstmkit
from lstmkit.cli import main
from lstmkit.tasks import examples

TINY = ["--epochs", "2", "--model.hidden-size", "8", "--progress", "false"]


def test_train_on_a_folder_predict_new_files_evaluate_from_elsewhere(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    examples.write_waves(tmp_path / "my_sequences", count=50)
    examples.write_waves(tmp_path / "new", count=5, seed=9, labelled=False)
    assert main(["classify", "--data", "my_sequences", "--out", "run",
                 "--model.layer-norm", "--class-weights", "balanced", *TINY]) == 0
    out = capsys.readouterr().out
    assert "my_sequences: 40 train / 10 test sequences" in out and "slowing_down" in out
    assert lstmkit.load(tmp_path / "run" / "model.safetensors").config.layer.cell.layer_norm
    assert main(["predict", "--checkpoint", "run", "--data", "new", "--output", "p.json"]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 5 and {"id", "predicted", "p_steady", "p_speeding_up"} <= set(rows[0])
    assert sum(rows[0][f"p_{c}"] for c in examples.WAVES) == pytest.approx(1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the checkpoint stores the data's absolute path
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"),
                 "--output", "m.json"]) == 0
    assert json.loads((elsewhere / "m.json").read_text())["test"] == 10


def test_sequence_labelling_from_the_command_line(tmp_path, capsys):
    table = examples.write_activity(tmp_path / "activity.csv", count=20)
    assert main(["classify", "--data", str(table), "--labelling", "step", "--out",
                 str(tmp_path / "run"), "--model.cell", "gru", *TINY]) == 0
    assert "scored per step" in capsys.readouterr().out
    unlabelled = examples.write_activity(tmp_path / "new.csv", count=2, seed=3, labelled=False)
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), "--data", str(unlabelled),
                 "--output", str(tmp_path / "p.csv")]) == 0
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header.startswith("id,step,predicted,p_rest")


@pytest.mark.parametrize("app", ["forecast", "classify", "charlm"])
def test_every_model_option_on_every_app(app):
    from lstmkit.cli import build_parser
    from lstmkit.cli._apps import config_from

    args = build_parser().parse_args([app, "--model.peephole", "--model.layer_norm", "true",
                                      "--model.cell", "lstm", "--model.backend", "reference",
                                      "--model.zoneout", "0.1", "--model.num-layers", "2"])
    model = config_from(args).model
    assert (model.peephole, model.layer_norm, model.backend, model.zoneout,
            model.num_layers) == (True, True, "reference", 0.1, 2)


@pytest.mark.parametrize("args, message", [
    (["classify", "--model.cell", "lstmm"], "model.cell: expected one of"),
    (["classify", "--model.cell", "gru", "--model.peephole"],
     "model.peephole: expected only with a cell family that has it"),
    (["charlm", "--model.bidirectional"], "model.bidirectional: expected false"),
    (["classify", "--data", "absent"], "no such file or folder"),
    (["classify", "--labels", "l.csv"], "expected only with data"),
    (["classify", "--class-weights", "heavy"], "class_weights: expected none, balanced"),
])
def test_bad_options_are_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err, err


def test_options_are_never_abbreviated(capsys):
    """Before: ``classify --data x`` was read as ``--dataset x``."""
    with pytest.raises(SystemExit) as stop:
        main(["classify", "--val-frac", "0.1"])
    assert stop.value.code == 2 and "unrecognized arguments: --val-frac" in capsys.readouterr().err


def test_config_file_with_a_nested_unknown_key(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"model": {"peephol": True}}))
    assert main(["classify", "--config", str(tmp_path / "c.json")]) == 2
    assert "model: unknown keys ['peephol']" in capsys.readouterr().err
    (tmp_path / "d.json").write_text(json.dumps({"model": {"hidden_size": "8"}}))
    assert main(["classify", "--config", str(tmp_path / "d.json")]) == 2
    assert "model.hidden_size: expected an int, got '8'" in capsys.readouterr().err
