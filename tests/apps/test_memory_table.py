import json

import pytest

from lstmkit.apps.memory import MemoryConfig
from lstmkit.apps.memory_table import GridConfig, grid, markdown_table, run_grid


def test_grid_crosses_everything_and_runs_the_rnn_only_with_torch_init():
    runs = grid(GridConfig(tasks="adding,temporal-order-6a", cells="lstm,rnn",
                           inits="forget,torch", lengths="100,500", seeds="0,1"), MemoryConfig())
    names = {r.name for r in runs}
    assert len(runs) == len(names) == (2 + 1) * 2 * 2 + (2 + 1) * 2
    assert not any(r.cell == "rnn" and r.init != "torch" for r in runs)
    assert all(r.length is None for r in runs if r.task == "temporal-order-6a")


@pytest.mark.parametrize("field, value", [("tasks", "adding,nope"), ("cells", "lstm,x"),
                                          ("lengths", "100,a")])
def test_bad_grid_is_a_value_error(field, value):
    with pytest.raises(ValueError, match=field):
        GridConfig(**{field: value})


def test_grid_resumes_and_tabulates_every_result(tmp_path):
    base = MemoryConfig(budget="32", batch_size=16, hidden=4, quiet=True, threads=1)
    config = GridConfig(tasks="reber", cells="lstm,rnn", inits="forget", dir=str(tmp_path))
    first = run_grid(config, base)
    done = tmp_path / "reber-lstm-forget-s0.json"
    stamp = done.stat().st_mtime_ns
    again = run_grid(config, base)
    assert done.stat().st_mtime_ns == stamp  # not rerun
    assert len(first) == len(again) == 2
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n| reber |") == 2 and "8,440" in table


def test_table_pools_seeds_with_medians_of_solved_runs():
    def result(seed, solved, seqs):
        return {"task": "adding T=100", "solved": solved, "sequences_to_solve": seqs,
                "sequences_trained": seqs or 74_000, "stopped": "solved" if solved else "budget",
                "paper_sequences": 74_000, "lag": 110, "wall_seconds": 10.0,
                "test": {"wrong": 0, "total": 2560, "loss": 0.01, "baseline_loss": 0.04},
                "cpu_seconds": 5.0,
                "config": {"task": "adding", "cell": "lstm", "init": "forget", "seed": seed}}
    table = markdown_table([result(0, True, 20_000), result(1, True, 40_000),
                            result(2, False, None)])
    row = table.splitlines()[2]
    assert "| 32, lr 0.01 | 2/3 | 30,000 | 74,000 |" in row
    wider = result(3, True, 10_000)
    wider["config"].update(hidden=128, lr=0.001, batch_size=64)
    rows = markdown_table([result(0, True, 20_000), wider]).splitlines()[2:]
    assert len(rows) == 2 and any("| 128, lr 0.001, batch 64 | 1/1 | 10,000 |" in r for r in rows)
    json.dumps(result(0, True, 1))


def test_the_documented_table_is_the_one_the_recorded_runs_make():
    # docs/memory.md shows the table; results/memory-runs holds the runs it was made from
    from pathlib import Path

    from lstmkit.apps.memory_table import load_results

    root = Path(__file__).resolve().parents[2]
    table = markdown_table(load_results(root / "results" / "memory-runs"))
    assert table.count("\n|") > 40
    assert table in (root / "docs" / "memory.md").read_text()
