"""The applications, one line each: what ``lstmkit evaluate`` and ``lstmkit predict`` need to
handle any checkpoint without knowing which application wrote it.

Each application module provides ``train(config) -> report``, ``evaluate(model, config) ->
report``, ``predict(model, config)`` (a DataFrame, or text) and ``format_table(report) -> str``;
a checkpoint's metadata names its application (``meta["app"]``) and holds its config
(``meta["config"]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from lstmkit.apps import charlm, classify, forecast, speech


@dataclass(frozen=True)
class App:
    """One application: its config class and workflows."""

    name: str
    config: type
    train: Callable
    evaluate: Callable
    predict: Callable
    report: Callable
    """``report(metrics) -> str``: the metrics of ``train`` or ``evaluate`` as text."""
    public: Callable = dict
    """``public(metrics) -> dict``: the metrics ready for JSON."""


APPS = {app.name: app for app in (
    App("forecast", forecast.ForecastConfig, forecast.train, forecast.evaluate, forecast.predict,
        forecast.format_table, forecast.public),
    App("classify", classify.ClassifyConfig, classify.train, classify.evaluate,
        classify.predict_table, classify.format_table),
    App("charlm", charlm.CharLMConfig, charlm.train, charlm.evaluate, charlm.predict,
        charlm.format_table),
    App("transcribe", speech.SpeechConfig, speech.train, speech.evaluate, speech.predict,
        speech.format_table),
)}
"""Application name (as stored in a checkpoint's metadata) -> :class:`App`."""

_MOVED_TO_MODEL = {"mode": "cell", "hidden_size": "hidden_size", "num_layers": "num_layers",
                   "dropout": "dropout", "bidirectional": "bidirectional"}
"""Fields of the app configs before they nested ``model`` -> their name inside it."""


def app_of(model) -> App:
    """The application that wrote ``model``'s checkpoint."""
    name = model.meta.get("app")
    if name not in APPS:
        raise ValueError(f"checkpoint: expected one written by lstmkit {', '.join(APPS)}, got "
                         f"one without a known application ({name!r})")
    return APPS[name]


def stored_config(model, **overrides):
    """The app config stored in ``model``'s checkpoint, with ``overrides`` (fields of it)."""
    app = app_of(model)
    stored = dict(model.meta.get("config", {}))
    if "model" not in stored:  # a checkpoint from before the nested model options
        stored["model"] = {new: stored.pop(old) for old, new in _MOVED_TO_MODEL.items()
                           if old in stored}
    names = {f.name for f in fields(app.config)}
    stored = {k: v for k, v in stored.items() if k in names}  # fields since removed
    return app.config.from_dict({**stored, **overrides})
