"""``lstmkit demo``, run in-process on the bundled airline series."""

import json

from lstmkit.cli import main


def test_demo_backtests_against_the_baselines_and_writes_its_files(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("lstm", "seasonal", "naive", "MASE"):
        assert name in out
    written = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "metrics.json"} <= written
    assert any(name.endswith(".png") for name in written)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics
