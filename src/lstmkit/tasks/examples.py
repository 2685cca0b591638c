"""Small labelled sets written to disk in the layouts :mod:`lstmkit.tasks.sequence_files` reads,
to try ``lstmkit classify --data`` and to test it. Seeded: the same files on every machine.

- :func:`write_waves`: a folder of CSV files and ``labels.csv``: noisy 2-channel waves, 16-40
  steps long, of 3 kinds imbalanced 6 : 3 : 1: steady, speeding up or slowing down. The class is
  in the order of the steps (the rhythm changes), not in their distribution: summary statistics
  of a sequence hardly tell the kinds apart.
- :func:`write_waves_npz`: the same kind of sequences as one NPZ file (padded, with lengths).
- :func:`write_activity`: a long CSV of accelerometer-like streams, a row per step, labelled per
  step as rest, walk or run (walk and run differ in rhythm, not in the range of values).

``python -m lstmkit.tasks.examples DIR`` writes them all (:func:`write_all`).

>>> import tempfile, pathlib
>>> folder = write_waves(pathlib.Path(tempfile.mkdtemp()) / "waves", count=10)
>>> sorted(p.name for p in folder.iterdir())[:3]
['labels.csv', 'seq000.csv', 'seq001.csv']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WAVES = ("steady", "speeding_up", "slowing_down")
SHARES = (0.6, 0.3, 0.1)
_RATES = {"steady": (0.6, 0.6), "speeding_up": (0.25, 1.0), "slowing_down": (1.0, 0.25)}
"""Phase advance per step (radians) at the start and the end of a wave of each kind."""


def _wave(kind: str, rng: np.random.Generator) -> np.ndarray:
    steps = int(rng.integers(16, 41))
    start, end = _RATES[kind]
    phase = np.cumsum(np.linspace(start, end, steps) * rng.uniform(0.85, 1.15))
    first = (rng.normal(0, 0.3) + rng.uniform(0.5, 1.5) * np.sin(phase + rng.uniform(0, 6.3))
             + rng.normal(0, 0.2, steps))
    second = rng.normal(0, 1, steps)  # a distractor channel
    return np.stack([first, second], 1)


def waves(count: int = 200, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """``count`` sequences (T_i, 2) and their labels."""
    rng = np.random.default_rng(seed)
    labels = list(rng.choice(WAVES, size=count, p=SHARES))
    return [_wave(kind, rng) for kind in labels], [str(k) for k in labels]


def write_waves(folder: str | Path, count: int = 200, seed: int = 0,
                labelled: bool = True) -> Path:
    """A folder of ``seqNNN.csv`` files (columns a, b) and, if ``labelled``, ``labels.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seqs, labels = waves(count, seed)
    rows = ["file,label"]
    for i, (seq, label) in enumerate(zip(seqs, labels)):
        name = f"seq{i:03d}.csv"
        lines = ["a,b"] + [f"{x:.5f},{y:.5f}" for x, y in seq]
        (folder / name).write_text("\n".join(lines) + "\n")
        rows.append(f"{name},{label}")
    if labelled:
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_waves_npz(path: str | Path, count: int = 200, seed: int = 0) -> Path:
    """``x`` (N, T, 2) zero-padded, ``lengths`` (N,) and ``y`` (N,) in one NPZ file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seqs, labels = waves(count, seed)
    x = np.zeros((count, max(len(s) for s in seqs), 2))
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
    np.savez(path, x=x, lengths=np.array([len(s) for s in seqs]), y=np.array(labels))
    return path


ACTIVITIES = ("rest", "walk", "run")


def activity(count: int = 60, seed: int = 0):
    """``count`` streams: ids, steps (T_i, 2) and a label per step."""
    rng = np.random.default_rng(seed)
    streams = []
    for _ in range(count):
        parts, labels = [], []
        for _ in range(int(rng.integers(2, 5))):
            kind = str(rng.choice(ACTIVITIES))
            steps = int(rng.integers(15, 35))
            period = {"rest": 1.0, "walk": 8.0, "run": 3.0}[kind]
            t = np.arange(steps) * 2 * np.pi / period + rng.uniform(0, 2 * np.pi)
            amplitude = 0.0 if kind == "rest" else rng.uniform(0.8, 1.2)
            x = amplitude * np.sin(t) + rng.normal(0, 0.15, steps)
            y = amplitude * np.cos(t) + rng.normal(0, 0.15, steps)
            parts.append(np.stack([x, y], 1))
            labels += [kind] * steps
        streams.append((np.concatenate(parts), labels))
    return streams


def write_activity(path: str | Path, count: int = 60, seed: int = 0,
                   labelled: bool = True) -> Path:
    """A long CSV: columns id, time, acc_x, acc_y and (if ``labelled``) label."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["id,time,acc_x,acc_y" + (",label" if labelled else "")]
    for i, (steps, labels) in enumerate(activity(count, seed)):
        for t, ((x, y), label) in enumerate(zip(steps, labels)):
            lines.append(f"s{i:03d},{t},{x:.4f},{y:.4f}" + (f",{label}" if labelled else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_all(folder: str | Path) -> None:
    """Every example under ``folder``: my_sequences/ (labelled), new_sequences/ (unlabelled,
    other seed), waves.npz, activity.csv (labelled per step) and new_activity.csv (unlabelled)."""
    folder = Path(folder)
    write_waves(folder / "my_sequences")
    write_waves(folder / "new_sequences", count=20, seed=1, labelled=False)
    write_waves_npz(folder / "waves.npz", seed=2)
    write_activity(folder / "activity.csv")
    write_activity(folder / "new_activity.csv", count=3, seed=1, labelled=False)


if __name__ == "__main__":
    import sys

    write_all(sys.argv[1] if len(sys.argv) > 1 else "examples")
