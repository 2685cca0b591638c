"""``lstmkit env``, run in-process."""

import torch

from lstmkit.cli import main


def test_env_prints_versions_and_backends(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out
    assert "backends for peephole LSTM on cpu" in out
    plain = out.split("backends for plain LSTM on cpu")[1].split("backends for")[0]
    assert "* native" in plain and "ok" in plain
    peephole = out.split("backends for peephole LSTM on cpu")[1].split("backends for")[0]
    assert "* reference" in peephole and "variant" in peephole
