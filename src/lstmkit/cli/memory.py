"""``lstmkit memory TASK``: the long-time-lag experiments of the 1997 LSTM paper and later ones.

``lstmkit memory adding --length 100`` trains an LSTM on the 1997 adding problem until the paper's
criterion holds, and reports the training sequences it took against the paper's.
``lstmkit memory table`` runs a grid of them (resumable) and writes a Markdown table and a plot.
"""

from __future__ import annotations

from lstmkit import tasks
from lstmkit.cli.options import add_options, build_config


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "memory", help="rerun the long-time-lag experiments (adding, temporal order, ...)",
        description=__doc__)
    parser.add_argument("target", metavar="TASK", choices=[*tasks.TASKS, "table"],
                        help="the task to run, or 'table' for a grid of runs")
    parser.add_argument("--config", help="JSON file of MemoryConfig fields (command-line "
                        "options override it)")
    from lstmkit.apps.memory import MemoryConfig
    from lstmkit.apps.memory_table import GridConfig
    add_options(parser, MemoryConfig, skip=("task", "quiet"))
    parser.add_argument("--quiet", action="store_true", default=None,
                        help="no progress bar or summary")
    add_options(parser, GridConfig)
    parser.set_defaults(run=run)


def run(args) -> int:
    from lstmkit.apps import memory, memory_table
    if args.target == "table":
        grid = build_config(memory_table.GridConfig, args)
        base = build_config(memory.MemoryConfig, args, args.config)
        memory_table.run_grid(grid, base)
        return 0
    memory.run(build_config(memory.MemoryConfig, args, args.config, task=args.target))
    return 0
