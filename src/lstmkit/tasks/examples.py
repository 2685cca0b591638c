"""Small labelled sets written to disk in the layouts :mod:`lstmkit.tasks.sequence_files` reads,
to try ``lstmkit classify --data`` and to test it. Seeded: the same files on every machine.

- :func:`write_waves`: a folder of CSV files and ``labels.csv``: noisy 2-channel waves of 3
  kinds, 16-40 steps long, imbalanced 6 : 3 : 1 (the class is the wave's shape, not its level).
- :func:`write_waves_npz`: the same kind of sequences as one NPZ file (padded, with lengths).
- :func:`write_activity`: a long CSV of accelerometer-like streams, a row per step, labelled per
  step as rest, walk or run (walk and run differ in rhythm, not in the range of values).

>>> import tempfile, pathlib
>>> folder = write_waves(pathlib.Path(tempfile.mkdtemp()) / "waves", count=10)
>>> sorted(p.name for p in folder.iterdir())[:3]
['labels.csv', 'seq000.csv', 'seq001.csv']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WAVES = ("sine", "square", "sawtooth")
SHARES = (0.6, 0.3, 0.1)


def _wave(kind: str, rng: np.random.Generator) -> np.ndarray:
    steps = int(rng.integers(16, 41))
    t = np.arange(steps) * rng.uniform(0.25, 0.4) + rng.uniform(0, 2 * np.pi)
    shape = {"sine": np.sin(t), "square": np.sign(np.sin(t)),
             "sawtooth": 2 * ((t / (2 * np.pi)) % 1) - 1}[kind]
    level = rng.normal(0, 1)
    first = level + rng.uniform(0.5, 1.5) * shape + rng.normal(0, 0.3, steps)
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
