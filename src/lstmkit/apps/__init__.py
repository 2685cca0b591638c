"""Workflows built on the library: forecasting, character language models, sequence
classification and the long-time-lag experiments, each training a
:class:`~lstmkit.SequenceModel`. :mod:`lstmkit.apps.registry` lists the applications that
``lstmkit evaluate`` and ``lstmkit predict`` serve."""
