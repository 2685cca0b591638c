import json

from lstmkit.cli import main


def test_smoke_run_writes_its_result(tmp_path, capsys):
    code = main(["memory", "adding", "--length", "20", "--budget", "small", "--threads", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "adding T=20" in printed and "training sequences" in printed
    result = json.loads((tmp_path / "adding-L20-lstm-chrono-s0.json").read_text())
    assert result["sequences_trained"] == 2048 and result["config"]["length"] == 20
    assert {"solved", "sequences_to_solve", "test", "wall_seconds", "config"} <= set(result)


def test_config_file_and_options(tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"cell": "gru", "hidden": 4, "budget": "64", "threads": 1}))
    code = main(["memory", "temporal-order-6a", "--config", str(config), "--quiet",
                 "--out", str(tmp_path), "--batch-size", "32"])
    assert code == 0 and capsys.readouterr().out == ""
    result = json.loads((tmp_path / "temporal-order-6a-gru-chrono-s0.json").read_text())
    assert result["config"]["hidden"] == 4 and result["config"]["batch_size"] == 32


def test_user_errors_print_one_line_and_exit_2(tmp_path, capsys):
    assert main(["memory", "temporal-order-6a", "--length", "50", "--out", str(tmp_path)]) == 2
    assert "length: expected none" in capsys.readouterr().err
    assert main(["memory", "adding", "--cell", "lstm-x", "--out", str(tmp_path)]) == 2
    assert main(["memory", "table", "--tasks", "nope", "--dir", str(tmp_path)]) == 2
