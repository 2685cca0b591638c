"""A tiny streaming speech checkpoint (random weights, made decisive) and test audio, for the
served-speech tests: no corpus, no training."""

import dataclasses

import numpy as np
import torch

from lstmkit import cell_config
from lstmkit.apps.speech import SpeechConfig
from lstmkit.tasks.audio import FeatureConfig
from lstmkit.tasks.speech import ALPHABET, DIGITS
from tests.tiny_models import make_model


def speech_model(decoder: str = "beam"):
    features = FeatureConfig()
    model = make_model(cell_config("lstm", features.step_size, 16), len(ALPHABET) + 1, seed=3)
    with torch.no_grad():  # sharper posteriors: decoding then has no near-ties to flip
        model.head.weight.mul_(8.0)
        model.head.bias[0] -= 1.0
    lexicon = sorted(DIGITS)
    model.meta = {"app": "transcribe", "kind": "stream",
                  "config": SpeechConfig(models="stream", decoder=decoder, beam=4).to_dict(),
                  "features": dataclasses.asdict(features), "mean": [-6.0] * features.n_mels,
                  "var": [9.0] * features.n_mels, "alphabet": ALPHABET, "lexicon": lexicon,
                  "lm_texts": ["one two", "three four five"]}
    return model


def audio(seconds: float = 1.6, seed: int = 0) -> np.ndarray:
    """Noise and drifting tones at 16 kHz, within [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16_000 * seconds)) / 16_000
    tones = sum(np.sin(2 * np.pi * f * t * (1 + 0.3 * t)) for f in rng.uniform(150, 3000, 4))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.7 * t)
    return 0.2 * envelope * tones / 4 + 0.02 * rng.standard_normal(len(t))
