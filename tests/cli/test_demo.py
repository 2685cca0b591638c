"""``lstmkit demo``, run in-process for a few steps."""

from lstmkit.cli import main
from lstmkit.kernels.cpu import _build


def test_demo_trains_a_few_steps(capsys):
    assert main(["demo", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    fused = "cpu" if _build.problem() is None else "reference"  # the demo's cell is a variant
    assert "step    1  mse" in out and f"backend {fused}" in out
