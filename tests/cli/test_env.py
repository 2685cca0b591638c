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
    plain = _section(out, "backends for plain LSTM on cpu (float32, training)")
    assert ("* cpu" if compiled else "* native") in plain and "ok" in plain
    inference = _section(out, "backends for plain LSTM on cpu (float32, inference)")
    assert "* native" in inference
    assert not compiled or "torch's exact numbers" in inference  # why cpu is passed over
    peephole = _section(out, "backends for peephole LSTM on cpu (float32, training)")
    assert ("* cpu" if compiled else "* reference") in peephole and "variant" in peephole
