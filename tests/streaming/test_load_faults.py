"""The load and fault run (tests/streaming/load_faults.py), bounded: a few clients and steps
over 127.0.0.1, one kill -9 and one SIGTERM of the server in the middle."""

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")


def test_load_and_faults_lose_no_acknowledged_step_and_mix_no_streams():
    from tests.streaming.load_faults import run

    figures = run(clients=6, steps=30, chunk=4, seed=0)
    print("\n".join(figures.lines()))
    assert figures.kills == 1 and figures.stops == 1
    assert figures.streams == 6 and figures.bad > 0
    assert figures.bad_unexpected == []
    assert figures.lost_steps == 0
    assert figures.max_difference < 1e-5
