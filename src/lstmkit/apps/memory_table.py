"""``lstmkit memory table``: a grid of memory runs (cells x tasks x lengths x inits x seeds),
resumable, summarised as a Markdown table and a plot.

Each run writes its own JSON into the grid's directory and a run whose JSON exists is skipped, so
an interrupted grid continues where it stopped and several grids can share one directory. The
table and the plot cover every result in the directory.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from lstmkit import tasks
from lstmkit.apps.memory import CELLS, INITS, MemoryConfig, network_label, run, summary
from lstmkit.apps.memory_xlstm import XLSTM_CELLS
from lstmkit.io import atomic_write, write_text

ALL_CELLS = [*CELLS, *XLSTM_CELLS]


@dataclass(frozen=True)
class GridConfig:
    """Which runs make up the table; every other setting comes from the run options."""

    tasks: str = "adding"
    """Comma-separated task names."""
    cells: str = "lstm,gru,rnn"
    """Comma-separated cells."""
    inits: str = "forget,chrono,torch"
    """Comma-separated initialisations; an Elman RNN runs only 'torch' (it has no gates)."""
    lengths: str = ""
    """Comma-separated lengths for the tasks that take one (empty: each task's default)."""
    seeds: str = "0"
    """Comma-separated seeds."""
    dir: str = "runs/memory-table"
    """Directory of the per-run JSON files (the resume cache) and table.md."""
    plot: str = ""
    """Where the plot goes (empty: plot.png in ``dir``)."""

    def __post_init__(self):
        for name, known in (("tasks", tasks.TASKS), ("cells", ALL_CELLS), ("inits", INITS)):
            unknown = [v for v in _split(getattr(self, name)) if v not in known]
            if unknown:
                raise ValueError(f"{name}: expected names from {sorted(known)}, got {unknown}")
        for name in ("lengths", "seeds"):
            bad = [v for v in _split(getattr(self, name)) if not v.isdigit()]
            if bad:
                raise ValueError(f"{name}: expected comma-separated integers, got {bad}")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def grid(config: GridConfig, base: MemoryConfig) -> list[MemoryConfig]:
    """The runs of the grid, in the order they run."""
    runs = []
    lengths = [int(v) for v in _split(config.lengths)] or [None]
    for task in _split(config.tasks):
        for length in (lengths if tasks.takes_length(task) else [None]):
            # Model options describe the one network: the grid runs only tasks and seeds.
            for cell in _split(config.cells) if base.model is None else [base.cell]:
                inits = ["torch"] if CELLS.get(cell, ("",))[0] == "rnn" else _split(config.inits)
                if cell in XLSTM_CELLS or base.model is not None:  # run once
                    inits = inits[:1] if base.model is None else [base.init]
                for init in inits:
                    for seed in _split(config.seeds):
                        runs.append(replace(base, task=task, length=length, cell=cell,
                                            init=init, seed=int(seed), out=config.dir))
    return runs


def run_grid(config: GridConfig, base: MemoryConfig) -> list[dict]:
    """Run every run of the grid that has no result yet, then write the table and the plot."""
    runs = grid(config, base)
    for k, run_config in enumerate(runs, 1):
        path = Path(config.dir) / f"{run_config.name}.json"
        if path.exists():
            continue
        if not base.quiet:
            print(f"[{k}/{len(runs)}] {run_config.name}", file=sys.stderr)
        run(replace(run_config, quiet=True), path)
        if not base.quiet:
            print(summary(json.loads(path.read_text())), file=sys.stderr)
    results = load_results(config.dir)
    table = markdown_table(results)
    write_text(Path(config.dir) / "table.md", table)
    plot(results, Path(config.plot or Path(config.dir) / "plot.png"))
    if not base.quiet:
        print(table)
    return results


def load_results(directory) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))]


def _network(cfg: dict) -> str:
    """Hidden units, learning rate and batch: runs that differ in them are different rows."""
    defaults = MemoryConfig()
    lr, batch = (cfg.get(k, getattr(defaults, k)) for k in ("lr", "batch_size"))
    hidden = network_label(cfg)[2]
    return f"{hidden}, lr {lr:g}" + (f", batch {batch}" if batch != defaults.batch_size else "")


def _groups(results):
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        cfg = r["config"]
        cell, init, _ = network_label(cfg)
        key = (cfg["task"], r["task"], cell, init, _network(cfg))
        groups.setdefault(key, []).append(r)
    order, cells, inits = list(tasks.TASKS), ALL_CELLS, list(INITS)
    return sorted(groups.items(), key=lambda kv: (
        order.index(kv[0][0]), kv[1][0]["lag"],
        cells.index(kv[0][2]) if kv[0][2] in cells else len(cells), kv[0][2],
        inits.index(kv[0][3]) if kv[0][3] in inits else len(inits), kv[0][4]))


def markdown_table(results: list[dict]) -> str:
    """One row per task, length, cell and init; seeds pooled (medians; sequences to solve over
    the solved runs only). CPU seconds are this process's, a fairer clock than wall time on a
    shared machine."""
    lines = ["| task | cell | init | units, lr | solved | sequences to solve (median) | paper | "
             "test wrong | test loss (blind) | wall s | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (_, described, cell, init, network), runs in _groups(results):
        solved = [r for r in runs if r["solved"]]
        seqs = (f"{statistics.median(r['sequences_to_solve'] for r in solved):,.0f}"
                if solved else _unsolved(runs))
        paper = runs[0]["paper_sequences"]
        wrong = ", ".join(f"{r['test']['wrong']}/{r['test']['total']}" for r in runs)
        loss = statistics.median(r["test"]["loss"] for r in runs)
        base = runs[0]["test"]["baseline_loss"]
        loss_text = f"{loss:.3g}" + (f" ({base:.3g})" if base is not None else "")
        wall = statistics.median(r["wall_seconds"] for r in runs)
        cpus = [r["cpu_seconds"] for r in runs if "cpu_seconds" in r]
        cpu = f"{statistics.median(cpus):.0f}" if cpus else "-"
        lines.append(f"| {described} | {cell} | {init} | {network} | {len(solved)}/{len(runs)} | "
                     f"{seqs} | "
                     f"{f'{paper:,}' if paper else '-'} | {wrong} | {loss_text} | {wall:.0f} | "
                     f"{cpu} |")
    return "\n".join(lines) + "\n"


def _unsolved(runs):
    most = max(r["sequences_trained"] for r in runs)
    reasons = sorted({r["stopped"] for r in runs})
    return f"> {most:,} ({', '.join(reasons)})"


def plot(results: list[dict], path) -> None:
    """Sequences to solve against lag, one line per cell and init, a panel per task that was run
    at more than one length; unsolved runs are left out."""
    panels: dict[str, dict[str, list]] = {}
    for (task, _, cell, init, _), runs in _groups(results):
        solved = [r for r in runs if r["solved"]]
        if solved:
            point = (runs[0]["lag"], statistics.median(r["sequences_to_solve"] for r in solved))
            panels.setdefault(task, {}).setdefault(f"{cell} ({init})", []).append(point)
    panels = {t: lines for t, lines in panels.items()
              if len({x for pts in lines.values() for x, _ in pts}) > 1}
    if not panels:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (task, lines) in zip(axes[0], panels.items()):
        for label, points in lines.items():
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=label)
        ax.set(title=task, xlabel="time lag (steps)", ylabel="training sequences to solve",
               xscale="log", yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
