"""Workflows built on the library: each trains and evaluates a :class:`~lstmkit.SequenceModel`."""
