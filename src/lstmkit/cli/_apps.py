"""What the application subcommands share: a parser built from the app's config dataclass,
and the application a checkpoint belongs to."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from lstmkit.cli.options import add_options, build_config


def add_config_parser(subparsers, name: str, cls, help: str, run):
    """A subcommand whose options are the fields of ``cls`` plus ``--config FILE``."""
    # No abbreviations: ``--data`` must never be read as ``--dataset``.
    parser = subparsers.add_parser(name, help=help, description=help, allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE",
                        help="JSON object of options (keys as the option names with "
                             "underscores, an object for model options); unknown keys are "
                             "rejected")
    add_options(parser, cls)
    parser.set_defaults(run=run, config_class=cls)
    return parser


def config_from(args):
    """The config the command line and ``--config`` describe."""
    return build_config(args.config_class, args, args.config)


def load_checkpoint(path: str | None):
    """The model at ``path`` (a checkpoint file or a run folder) and its application."""
    import lstmkit
    from lstmkit.apps import registry

    if path is None:
        raise ValueError("--checkpoint: expected a checkpoint file or run folder, got none")
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    model = lstmkit.load(path)
    try:
        return model, registry.app_of(model)
    except ValueError as error:
        raise ValueError(f"{error} in {path}") from None


def app_config(model, app, **overrides):
    """The app config stored in the checkpoint, with the ``overrides`` that are not None;
    one the application does not read is an error, never silently ignored."""
    from lstmkit.apps import registry

    given = {k: v for k, v in overrides.items() if v is not None}
    unused = sorted(set(given) - {f.name for f in fields(app.config)})
    if unused:
        raise ValueError(f"--{unused[0].replace('_', '-')}: expected only with a checkpoint that "
                         f"reads it, got a {app.name} checkpoint")
    return registry.stored_config(model, **given)


def print_report(module, report: dict) -> None:
    """An application module's report, then the files it wrote."""
    print(module.format_table(report))
    for what, path in report.get("files", {}).items():
        print(f"{what}: {path}")
