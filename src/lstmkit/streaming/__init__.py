"""Streaming inference: many live streams of one model, each with its own recurrent state."""

from lstmkit.streaming.engine import (
           ChunkTooLong,
           EngineFull,
           Pushed,
           StepMismatch,
           StreamEngine,
           StreamSnapshot,
           StreamTable,
           UnknownStream,
)
from lstmkit.streaming.store import load_snapshots, save_snapshots

__all__ = ["ChunkTooLong", "EngineFull", "Pushed", "StepMismatch", "StreamEngine",
           "StreamSnapshot", "StreamTable", "UnknownStream", "load_snapshots", "save_snapshots"]
