"""``lstmkit sample``: text from a character language model checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from lstmkit.apps import charlm
from lstmkit.cli._apps import add_config_parser, config_from, load_checkpoint


@dataclass(frozen=True)
class SampleConfig:
    """What to draw from a character model."""

    checkpoint: str | None = None
    """A charlm checkpoint file or run folder."""
    prime: str = "And "
    """Text the model reads before it writes."""
    length: int = 500
    """Characters to write."""
    temperature: float = 0.8
    """Below 1: safer, more repetitive text; above 1: wilder; 0: always the likeliest."""
    top_k: int = 0
    """Draw only among the k likeliest characters (0: all)."""
    top_p: float = 1.0
    """Draw only among the likeliest characters that make up this probability (1: all)."""
    seed: int = 0
    """Seed of the draws."""


def add_parser(subparsers) -> None:
    add_config_parser(subparsers, "sample", SampleConfig,
                      "write text with a character language model (temperature, top-k, top-p)", run)


def run(args) -> int:
    config = config_from(args)
    model, app = load_checkpoint(config.checkpoint)
    if app.name != "charlm":
        raise ValueError(f"checkpoint: expected a charlm checkpoint, got a {app.name} one")
    print(charlm.sample(model, config.prime, config.length, config.temperature, config.top_k,
                        config.seed, config.top_p))
    return 0
