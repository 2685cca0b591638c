"""benchmarks/triton_gpu.py's xLSTM part, run whole at toy sizes on the CPU under Triton's
interpreter (``--dry-run``): the script that is run once on a lent GPU must get through its
checks, peers (reported and skipped where they cannot run) and table the first time."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

ROOT = Path(__file__).resolve().parents[3]


def test_the_xlstm_dry_run_checks_times_and_writes_its_table(tmp_path):
    out = tmp_path / "triton_gpu.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)  # the script sets it itself for --dry-run
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "triton_gpu.py"), "--dry-run", "--families",
         "xlstm", "--dtypes", "fp32", "--reps", "1", "--warmup", "0", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for line in ("ok   mLSTM", "ok   sLSTM"):
        assert line in result.stdout
    table = out.read_text()
    for row in ("| mLSTM B=1 NH=2 T=64 D=16 | fp32 | lstmkit triton |",
                "| sLSTM B=2 T=4 H=32 NH=2 | fp32 | lstmkit torch scan |"):
        assert row in table
