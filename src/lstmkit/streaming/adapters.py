"""An application's own pre- and post-processing around a served model, chosen from its
checkpoint's metadata (``model.meta["app"]``): clients send raw values and get values in the
data's units, never the model's internal scaling.

Each adapter has ``encode(stream_id, x) -> chunk`` (what the engine takes) and ``decode(
stream_id, pushed) -> JSON-ready reply``. An application whose processing a stream cannot
reproduce is refused with the reason; a checkpoint without an application is served raw. An
adapter that keeps state of its own per stream (speech: the audio front end) has ``bind``,
``push``, ``close`` and ``reset`` instead (:mod:`lstmkit.streaming.speech`).
"""

from __future__ import annotations

import numpy as np
import torch


class CharAdapter:
    """A character model (``lstmkit charlm``): text in, and after each character the most
    likely next one and the probability of each character of the vocabulary.

    The vocabulary is the checkpoint's ``meta["vocab"]`` (id 0 stands for any character outside
    it, as in training).
    """

    def __init__(self, meta: dict):
        from lstmkit.tasks.text import Vocabulary

        self.vocab = Vocabulary(meta["vocab"][1:])

    def encode(self, stream_id: str, x) -> torch.Tensor:
        if not isinstance(x, str) or not x:
            raise TypeError(f"x: expected a non-empty string of text, got {type(x).__name__}")
        return self.vocab.encode(x)

    def decode(self, stream_id: str, pushed) -> dict:
        probs = torch.softmax(pushed.y.double(), -1)  # (T, V)
        return {"next": self.vocab.decode(probs.argmax(-1)), "probs": probs.tolist(),
                "vocab": self.vocab.chars}


class ClassAdapter:
    """A sequence classifier (``lstmkit classify``) with pooling "last": raw channel values in,
    standardised by the training statistics (``meta["mean"]``, ``meta["std"]``); out, after
    each step, the probability of each class for the sequence so far."""

    def __init__(self, meta: dict):
        self.mean = np.asarray(meta["mean"], float)
        self.std = np.asarray(meta["std"], float)
        self.classes = list(meta["classes"])

    def encode(self, stream_id: str, x) -> torch.Tensor:
        try:
            values = np.asarray(x, float)
        except (TypeError, ValueError) as error:
            raise TypeError(f"x: expected numbers, got {type(x).__name__} ({error})") from None
        values = values.reshape(1, -1) if values.ndim == 1 else values
        if values.ndim != 2 or values.shape[1] != len(self.mean):
            raise ValueError(f"x: expected shape (T, {len(self.mean)}), got {values.shape}")
        return torch.tensor((values - self.mean) / self.std, dtype=torch.float32)

    def decode(self, stream_id: str, pushed) -> dict:
        probs = torch.softmax(pushed.y.double(), -1)  # (T, classes)
        return {"probs": probs.tolist(), "classes": self.classes,
                "label": [self.classes[k] for k in probs.argmax(-1).tolist()]}


def _speech(meta: dict):
    from lstmkit.streaming.speech import SpeechAdapter  # numpy/torch audio code, loaded late

    return SpeechAdapter(meta)


ADAPTERS = {"charlm": CharAdapter, "classify": ClassAdapter, "transcribe": _speech}
"""Application name (``meta["app"]``) -> its served adapter."""

REFUSED = {
    "forecast": "a forecaster answers from a window of the last `context` values, scaled by "
                "that window's own mean and spread and added to a baseline taken from it, and "
                "starts each forecast from a zero state; a stream carried step by step is not "
                "that model's input, so its outputs would be in no unit at all. Forecast with "
                "`lstmkit predict` (or lstmkit.apps.forecast.model_forecast) instead",
}
"""Applications whose processing a stream cannot reproduce, with the reason."""


def for_model(model):
    """The adapter for ``model``'s application, None for a plain model (served raw); a
    ValueError with the reason for an application that cannot be served as a stream."""
    meta = getattr(model, "meta", None) or {}
    app = meta.get("app")
    if app is None:
        return None
    if app in REFUSED:
        raise ValueError(f"checkpoint: expected a model that can be served as a stream, got a "
                         f"{app!r} application: {REFUSED[app]}")
    if app not in ADAPTERS:
        raise ValueError(f"checkpoint: expected an application with a served adapter "
                         f"({sorted(ADAPTERS)}), got {app!r}")
    if app == "classify" and model.config.pooling != "last":
        raise ValueError(f"checkpoint: expected a classifier with pooling 'last' to serve as a "
                         f"stream, got {model.config.pooling!r} (it needs the whole sequence)")
    return ADAPTERS[app](meta)
