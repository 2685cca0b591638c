"""Runs of the global forecaster: a competition set or a long-format file, several seeds, the
statsforecast baselines beside it, and the table the competitions would have printed.

For a competition (``m3-monthly``, ``tourism-quarterly``, ... or ``m3`` / ``tourism`` for every
frequency) the backtest is the competition's own holdout: one origin per series, the history
before it as given. sMAPE and MASE are averaged as the competitions did: over the horizon of each
series, then over the series; "overall" pools every series of every frequency.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from lstmkit._optional import require
from lstmkit.apps import global_forecast as gf
from lstmkit.apps.outputs import write_csv, write_json
from lstmkit.tasks import competitions
from lstmkit.tasks import panel as panel_data
from lstmkit.tasks.panel import Panel
from lstmkit.tasks.series import split_names

PUBLISHED = {
    "m3-monthly": "Theta 13.85 sMAPE on the 1,428 monthly series as published (13.94 after a "
                  "later correction), Makridakis & Hibon 2000",
    "m3": "Theta 13.01 sMAPE over all 3,003 series (Makridakis & Hibon 2000); Hyndman's "
          "recalculation: Theta 12.76, MASE 1.39",
}
"""Published figures printed beside a run (the competitions' own numbers, not recomputed)."""

MODEL = "lstmkit"


def is_global(config) -> bool:
    """Whether ``config`` asks for the global forecaster (a competition or an id column)."""
    return config.id_column is not None or (config.data is None
                                            and config.dataset in competitions.NAMES)


def load_sets(config) -> list[tuple[Panel, int, int]]:
    """(panel, origins, stride) for each set ``config`` names: the full series (history and,
    for a competition, its holdout), the number of backtest origins and their spacing."""
    if config.data is None:
        sets = []
        for part in competitions.parts(config.dataset):
            c = competitions.load(part, config.limit)
            p = c.panel
            full = tuple(np.concatenate([x, xx]) for x, xx in zip(p.values, c.actuals))
            sets.append((Panel(part, p.ids, full, p.season, p.horizon, static=p.static,
                               static_names=p.static_names), 1, p.horizon))
        return sets
    panel = panel_data.load_long(
        config.data, config.id_column, config.time_column, config.target,
        static=split_names(config.static_covariates), past=split_names(config.past_covariates),
        future=split_names(config.future_covariates), season=config.season,
        horizon=config.horizon or 12, missing=config.missing, freq=config.freq,
        time_format=config.time_format)
    if config.limit:
        panel = _first(panel, config.limit)
    return [(panel, config.origins, config.stride or panel.horizon)]


def _first(panel: Panel, count: int) -> Panel:
    keep = slice(0, count)
    return Panel(panel.name, panel.ids[keep], panel.values[keep], panel.season, panel.horizon,
                 panel.past[keep], panel.future[keep],
                 None if panel.static is None else panel.static[keep], panel.static_names,
                 None if panel.phase is None else panel.phase[keep],
                 None if panel.times is None else panel.times[keep], panel.freq,
                 panel.past_names, panel.future_names, panel.notes)


def train(config) -> dict:
    """Train, backtest and compare; writes checkpoints, metrics and forecasts under ``out``."""
    sets = load_sets(config)
    out = Path(config.out)
    report = {"dataset": config.data or config.dataset, "seeds": config.seeds, "parts": [],
              "published": PUBLISHED.get(config.dataset if config.data is None else "")}
    for panel, count, stride in sets:
        report["parts"].append(_run_set(config, panel, count, stride,
                                        out / panel.name if len(sets) > 1 else out))
        write_json(out / "metrics.json", public(report))  # each part as soon as it is done
    parts = report["parts"]
    if len(parts) > 1:
        report["overall"] = _overall(parts)
    write_json(out / "metrics.json", public(report))
    report["files"] = {"metrics": str(out / "metrics.json")}
    return report


def _run_set(config, panel: Panel, count: int, stride: int, out: Path) -> dict:
    horizon = config.horizon or panel.horizon
    season = config.season or panel.season
    origins = gf.backtest_origins(panel, horizon, count, stride)
    seeds, runs = list(range(config.seed, config.seed + config.seeds)), []
    for seed in seeds:
        _say(config, f"{panel.name}: training seed {seed} on {len(panel)} series")
        started = time.perf_counter()
        forecasts, model, history = gf.fit_and_forecast(
            panel, config, origins, seed,
            out / f"seed-{seed}" if len(seeds) > 1 else out, part=panel.name)
        runs.append({"seed": seed, "forecasts": forecasts, "epochs": history.epochs,
                     "best_epoch": history.best_epoch + 1,
                     "seconds": time.perf_counter() - started, "notes": model.meta["notes"]})
    middle = len(config.quantile_list) // 2
    rows, per_series = {}, {}
    for run in runs:
        run.update(gf.score([f[..., middle] for f in run["forecasts"]], panel, origins, horizon,
                            season))
        run["coverage"] = gf.coverage(run["forecasts"], panel, origins, horizon)
    rows[MODEL] = _seed_summary(runs)
    first = MODEL if len(runs) == 1 else f"{MODEL} (seed {seeds[0]})"  # pooled overall
    per_series[first] = (runs[0]["per_series_smape"], runs[0]["per_series_mase"])
    if len(runs) > 1:
        ensemble = [np.median(np.stack([r["forecasts"][i] for r in runs]), 0)
                    for i in range(len(panel))]
        scored = gf.score([f[..., middle] for f in ensemble], panel, origins, horizon, season)
        rows[f"{MODEL} (median of {len(runs)} seeds)"] = {
            "smape": scored["smape"], "mase": scored["mase"],
            "coverage": gf.coverage(ensemble, panel, origins, horizon),
            "seconds": sum(r["seconds"] for r in runs)}
        per_series[f"{MODEL} (median of {len(runs)} seeds)"] = (
            scored["per_series_smape"], scored["per_series_mase"])
    notes = list(panel.notes) + runs[0]["notes"]
    _baseline_rows(config, panel, origins, horizon, season, rows, per_series, notes)
    _write_forecasts(out / "forecast.csv", panel, origins, horizon, runs[0]["forecasts"],
                     config.quantile_list)
    return {"name": panel.name, "series": len(panel), "horizon": horizon, "season": season,
            "origins": count, "context": config.context or gf.default_context(horizon, season),
            "rows": rows, "per_series": per_series, "notes": notes,
            "epochs": [r["epochs"] for r in runs], "best_epochs": [r["best_epoch"] for r in runs],
            "published": PUBLISHED.get(panel.name)}


def _baseline_rows(config, panel: Panel, origins, horizon: int, season: int, rows: dict,
                   per_series: dict, notes: list) -> None:
    """Fit the statsforecast baselines ``config`` names; add their rows, or a note for each
    that did not finish in ``config.baseline_budget``."""
    _say(config, f"{panel.name}: fitting {config.baselines} on {config.baseline_jobs} "
                 f"process(es)")
    for name, forecasts, seconds, unfinished in gf.run_baselines(
            split_names(config.baselines), panel, origins, horizon, season,
            config.baseline_jobs, config.baseline_budget):
        _say(config, f"{panel.name}: {name} took {seconds:.0f} s")
        if forecasts is None:
            total = sum(len(r) for r in origins)
            notes.append(f"{name} did not finish: {unfinished} of {total} fits left after the "
                         f"budget of {config.baseline_budget:g} s on {config.baseline_jobs} "
                         f"process(es); no score is given for it")
            continue
        scored = gf.score(forecasts, panel, origins, horizon, season)
        rows[name] = {"smape": scored["smape"], "mase": scored["mase"], "seconds": seconds}
        per_series[name] = (scored["per_series_smape"], scored["per_series_mase"])


def _say(config, text: str) -> None:
    if config.progress:
        print(text, file=sys.stderr, flush=True)


def _seed_summary(runs: list[dict]) -> dict:
    summary = {"seconds": float(np.mean([r["seconds"] for r in runs]))}
    for key in ("smape", "mase", "coverage"):
        values = [r[key] for r in runs]
        summary[key] = float(np.mean(values))
        summary[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary[f"{key}_seeds"] = values
    return summary


def _overall(parts: list[dict]) -> dict:
    """Every series of every frequency pooled, for the methods all parts have."""
    names = set.intersection(*(set(p["per_series"]) for p in parts))
    return {name: {"smape": float(np.mean(np.concatenate([p["per_series"][name][0]
                                                          for p in parts]))),
                   "mase": float(np.mean(np.concatenate([p["per_series"][name][1]
                                                         for p in parts])))}
            for name in sorted(names)}


def _write_forecasts(path: Path, panel: Panel, origins, horizon: int, forecasts, quantiles):
    pd = require("pandas", "apps", "forecasting")
    rows = []
    for key, y, f, starts in zip(panel.ids, panel.values, forecasts, origins):
        for s, o in enumerate(starts):
            for h in range(horizon):
                row = {"id": key, "origin": int(o), "step": h + 1, "actual": y[o + h]}
                row.update({f"q{q:g}": f[s, h, j] for j, q in enumerate(quantiles)})
                rows.append(row)
    write_csv(path, pd.DataFrame(rows))


def public(report: dict) -> dict:
    """The report without per-series lists, ready for JSON."""
    parts = [{k: v for k, v in p.items() if k != "per_series"} for p in report["parts"]]
    return {**report, "parts": parts}


def format_table(report: dict) -> str:
    """One block per frequency: method, sMAPE, MASE, their ratio to AutoETS, seconds."""
    lines = []
    for part in report["parts"]:
        lines.append(f"{part['name']}: {part['series']} series, horizon {part['horizon']}, "
                     f"season {part['season']}, {part['origins']} origin(s), context "
                     f"{part['context']}, {report['seeds']} seed(s)")
        lines += [f"note: {n}" for n in dict.fromkeys(part["notes"])]
        lines.append(_rows(part["rows"]))
        if part.get("published"):
            lines.append(f"published: {part['published']}")
        lines.append("")
    if "overall" in report:
        lines.append("overall (every series pooled)")
        lines.append(_rows(report["overall"]))
        if report.get("published"):
            lines.append(f"published: {report['published']}")
    return "\n".join(lines).rstrip()


def _rows(rows: dict) -> str:
    ref = rows.get("autoets")
    lines = [f"  {'method':34s}{'sMAPE%':>14s}{'MASE':>16s}{'sMAPE/ETS':>10s}"
             f"{'MASE/ETS':>9s}{'cover':>7s}{'seconds':>9s}"]
    for name, row in rows.items():
        smape = f"{row['smape']:.2f}" + (f" ±{row['smape_sd']:.2f}" if row.get("smape_sd")
                                          else "")
        mase = f"{row['mase']:.3f}" + (f" ±{row['mase_sd']:.3f}" if row.get("mase_sd") else "")
        ratio = (f"{row['smape'] / ref['smape']:10.3f}{row['mase'] / ref['mase']:9.3f}"
                 if ref else f"{'-':>10s}{'-':>9s}")
        cover = f"{row['coverage']:.2f}" if "coverage" in row else "-"
        seconds = f"{row['seconds']:.0f}" if "seconds" in row else "-"
        lines.append(f"  {name:34s}{smape:>14s}{mase:>16s}{ratio}{cover:>7s}{seconds:>9s}")
    return "\n".join(lines)


def _model_set(model, config) -> tuple[Panel, int, int]:
    part = model.meta.get("part")
    for entry in load_sets(config):
        if entry[0].name == part or config.data is not None:
            return entry
    raise ValueError(f"dataset: expected the set {part!r} the model was trained on, got "
                     f"{config.dataset!r}")


def evaluate(model, config) -> dict:
    """Backtest a loaded global model on the set ``config`` names, beside the baselines."""
    panel, count, stride = _model_set(model, config)
    spec = gf.spec_of(model)
    origins = gf.backtest_origins(panel, spec.horizon, count, stride)
    forecasts = gf.forecast_at(model, panel, origins)
    middle = len(spec.quantiles) // 2
    scored = gf.score([f[..., middle] for f in forecasts], panel, origins, spec.horizon,
                      spec.season)
    rows = {MODEL: {"smape": scored["smape"], "mase": scored["mase"],
                    "coverage": gf.coverage(forecasts, panel, origins, spec.horizon)}}
    notes = list(panel.notes)
    _baseline_rows(config, panel, origins, spec.horizon, spec.season, rows, {}, notes)
    part = {"name": panel.name, "series": len(panel), "horizon": spec.horizon,
            "season": spec.season, "origins": count, "context": spec.context, "rows": rows,
            "notes": notes, "published": PUBLISHED.get(panel.name)}
    return {"dataset": config.data or config.dataset, "seeds": 1, "parts": [part]}


def ahead_table(model, panel: Panel):
    """Forecasts after the end of every series as a long DataFrame: id, time, step, quantiles.

    A model that reads future covariates needs their values for the horizon: rows after each
    series' last target with the target empty and the covariates filled in.
    """
    pd = require("pandas", "apps", "forecasting")
    spec = gf.spec_of(model)
    found = gf.ahead(model, panel)
    if found is None:
        raise ValueError(f"predict: expected the future covariates {list(panel.future_names)} "
                         f"for the {spec.horizon} steps after each series' last target (rows "
                         f"with an empty target), got fewer")
    rows = []
    for i, (key, f) in enumerate(zip(panel.ids, found)):
        times = _times_after(panel, i, spec.horizon)
        for h in range(spec.horizon):
            row = {"id": key, "time": times[h], "step": h + 1}
            row.update({f"q{q:g}": f[h, j] for j, q in enumerate(spec.quantiles)})
            rows.append(row)
    return pd.DataFrame(rows)


def _times_after(panel: Panel, i: int, horizon: int) -> list:
    n = len(panel.values[i])
    if panel.times is None:
        return list(range(n, n + horizon))  # step numbers, as the competitions give none
    pd = require("pandas", "apps", "forecasting")
    index = panel.times[i]
    if isinstance(index, pd.DatetimeIndex):
        return list(pd.date_range(index[-1], periods=horizon + 1, freq=panel.freq)[1:])
    return [index[-1] + h + 1 for h in range(horizon)]


def predict(model, config):
    """Forecasts after the end of the set ``config`` names, as a long DataFrame."""
    panel, _, _ = _model_set(model, config)
    return ahead_table(model, panel)
