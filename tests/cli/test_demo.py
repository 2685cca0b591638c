"""``lstmkit demo``, run in-process for a few steps."""

from lstmkit.cli import main


def test_demo_trains_a_few_steps(capsys):
    assert main(["demo", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "step    1  mse" in out and "backend reference" in out
