"""Streaming inference: many live streams of one model, each with its own recurrent state."""

from lstmkit.streaming.engine import EngineFull, StreamEngine, StreamSnapshot, UnknownStream
from lstmkit.streaming.store import load_snapshots, save_snapshots

__all__ = ["EngineFull", "StreamEngine", "StreamSnapshot", "UnknownStream", "load_snapshots",
           "save_snapshots"]
