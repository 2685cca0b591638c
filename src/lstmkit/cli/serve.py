"""``lstmkit serve CHECKPOINT``: many live streams of a model over HTTP and WebSocket."""

from __future__ import annotations

import os
from pathlib import Path

from lstmkit.cli.options import add_options, build_config
from lstmkit.streaming.server import ServerConfig


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a checkpoint's model to many streams over HTTP and WebSocket")
    parser.add_argument("checkpoint", help="a .safetensors checkpoint (lstmkit.checkpoint.save), "
                        "or a run folder (with model.safetensors, or stream/ for transcribe)")
    parser.add_argument("--config", help="a JSON file of the options below")
    add_options(parser, ServerConfig)
    parser.set_defaults(run=run)


def run(args) -> int:
    fixed = {}
    if args.token is None and "LSTMKIT_TOKEN" in os.environ:
        fixed["token"] = os.environ["LSTMKIT_TOKEN"]  # set but empty is an error, not "no token"
    config = build_config(ServerConfig, args, args.config, **fixed)
    from lstmkit.streaming.server import serve

    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "model.safetensors").is_file() and (checkpoint / "stream").is_dir():
        checkpoint = checkpoint / "stream"  # a `lstmkit transcribe` run: its streaming model
    serve(checkpoint, config)
    return 0
