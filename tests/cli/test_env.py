"""``lstmkit env``, run in-process."""

import torch

from lstmkit.cli import main
from lstmkit.kernels.cpu import _build


def _section(out: str, title: str) -> str:
    return out.split(title)[1].split("backends for")[0]


def test_env_prints_versions_and_backends(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    compiled = _build.problem() is None
    for mode in ("training", "inference"):
        plain = _section(out, f"backends for plain LSTM on cpu (float32, {mode})")
        assert "* native" in plain and "ok" in plain
        assert not compiled or "native gives its exact numbers" in plain  # why cpu is passed over
    peephole = _section(out, "backends for peephole LSTM on cpu (float32, training)")
    assert ("* cpu" if compiled else "* reference") in peephole and "peephole=True" in peephole
