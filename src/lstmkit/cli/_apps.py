"""What the application subcommands share: a parser built from the app's config dataclass,
and where a checkpoint's application lives."""

from __future__ import annotations

import importlib
from pathlib import Path

from lstmkit.cli.options import add_options, build_config

APPS = {"forecast": "lstmkit.apps.forecast", "classify": "lstmkit.apps.classify",
        "charlm": "lstmkit.apps.charlm"}
"""Application name (as stored in a checkpoint's metadata) -> module."""


def add_config_parser(subparsers, name: str, cls, help: str, run):
    """A subcommand whose options are the fields of ``cls`` plus ``--config FILE``."""
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.add_argument("--config", metavar="FILE",
                        help="JSON object of options (keys as the option names with "
                             "underscores); unknown keys are rejected")
    add_options(parser, cls)
    parser.set_defaults(run=run, config_class=cls)
    return parser


def config_from(args):
    """The config the command line and ``--config`` describe."""
    return build_config(args.config_class, args, args.config)


def load_checkpoint(path: str | None):
    """The model at ``path`` (a checkpoint file or a run folder) and its application module."""
    import lstmkit

    if path is None:
        raise ValueError("--checkpoint: expected a checkpoint file or run folder, got none")
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    model = lstmkit.load(path)
    app = model.meta.get("app")
    if app not in APPS:
        raise ValueError(f"checkpoint: expected one written by lstmkit {', '.join(APPS)}, got "
                         f"one without a known application ({app!r}) in {path}")
    return model, importlib.import_module(APPS[app])


def app_config(model, module, **overrides):
    """The app config stored in the checkpoint, with ``overrides`` that are not None."""
    cls = next(v for v in vars(module).values()
               if isinstance(v, type) and v.__module__ == module.__name__
               and v.__name__.endswith("Config"))
    given = {k: v for k, v in overrides.items() if v is not None}
    unused = sorted(set(given) - set(cls.__dataclass_fields__))
    if unused:
        raise ValueError(f"--{unused[0].replace('_', '-')}: expected only with a checkpoint that "
                         f"reads it, got a {model.meta['app']} checkpoint")
    stored = dict(model.meta.get("config", {}))
    stored.update(given)
    try:
        return cls(**{k: v for k, v in stored.items() if k in cls.__dataclass_fields__})
    except TypeError as error:
        raise ValueError(f"checkpoint: expected a usable {cls.__name__}, got {error}") from None


def print_report(module, report: dict) -> None:
    print(module.format_table(report))
    for what, path in report.get("files", {}).items():
        print(f"{what}: {path}")
