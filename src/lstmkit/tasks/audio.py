"""Speech features: log-mel filterbanks, normalised and stacked, offline or frame by frame.

The pipeline, for audio at :data:`SAMPLE_RATE`:

1. frames of ``n_fft`` samples every ``hop`` samples, no padding (frame t reads samples
   [t * hop, t * hop + n_fft)), so a frame is computable as soon as its last sample arrives;
2. a periodic Hann window of ``win`` samples centred in the frame (zeros either side, as
   librosa's ``center=False``), power spectrum |X_k|^2;
3. ``n_mels`` triangular filters on the Slaney mel scale with Slaney area normalisation (the
   definition librosa and torchaudio's ``mel_scale="slaney", norm="slaney"`` use), then
   log(mel + 1e-6);
4. normalisation per feature: ``utterance`` subtracts the utterance's mean and divides by its
   standard deviation (needs the whole utterance); ``running`` uses the mean and variance of the
   frames so far, with the training set's statistics as a prior worth ``PRIOR_FRAMES`` frames:
   mu_t = (n0 mu0 + sum_{s<=t} x_s) / (n0 + t), likewise for the second moment, so frame t is
   normalised by what was known at frame t, offline and streaming alike;
5. ``subsample`` consecutive frames concatenated into one model step (frame stacking: the model
   runs at 1/subsample of the frame rate; a last incomplete group is dropped).

:class:`FeatureStream` computes steps 1-5 on audio pushed in chunks of any size; its output
equals :func:`features` on the whole audio. Legend: N samples, T frames, M mels, S model steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
"""Hz; audio of other rates is resampled to it (:func:`lstmkit.tasks.speech.read_wav`)."""
PRIOR_FRAMES = 100
"""Weight, in frames, of the training statistics in running normalisation (one second)."""
LOG_FLOOR = 1e-6
NORMS = ("utterance", "running")


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes model input."""

    n_mels: int = 40
    """Mel filters per frame."""
    win: int = 400
    """Samples per analysis window (25 ms at 16 kHz)."""
    hop: int = 160
    """Samples between frames (10 ms at 16 kHz)."""
    n_fft: int = 512
    """FFT size (>= win)."""
    subsample: int = 3
    """Frames stacked into one model step: the model runs at 100 / subsample steps per second."""
    norm: str = "running"
    """Feature normalisation: ``running`` (causal, for streaming too) or ``utterance``."""

    def __post_init__(self):
        for name in ("n_mels", "win", "hop", "n_fft", "subsample"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if self.n_fft < self.win:
            raise ValueError(f"n_fft: expected at least win={self.win}, got {self.n_fft}")
        if self.norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {self.norm!r}")

    @property
    def step_size(self) -> int:
        """Features per model step: n_mels * subsample."""
        return self.n_mels * self.subsample


def hz_to_mel(hz):
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)),
                    mel * (200.0 / 3))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular filters, (M, n_fft // 2 + 1), each of area normalised by its width
    (2 / (f_{m+2} - f_m)), with centres equally spaced on the Slaney mel scale."""
    fmax = sample_rate / 2 if fmax is None else fmax
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # (K,) Hz of each FFT bin
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (M + 2,)
    lower = (bins[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - bins[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (M, K)
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def _window(config: FeatureConfig) -> np.ndarray:
    """A periodic Hann window of ``win`` samples centred in ``n_fft`` zeros."""
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(config.win) / config.win)
    left = (config.n_fft - config.win) // 2
    return np.pad(hann, (left, config.n_fft - config.win - left))


class _Frontend:
    """Window and filterbank of one configuration, computed once."""

    def __init__(self, config: FeatureConfig):
        self.config = config
        self.window = _window(config)  # (n_fft,)
        self.mel = mel_filterbank(SAMPLE_RATE, config.n_fft, config.n_mels).T  # (K, M)

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """(N,) float samples -> (T, M) float32 log-mel frames, T = 1 + (N - n_fft) // hop."""
        c = self.config
        if len(audio) < c.n_fft:
            return np.zeros((0, c.n_mels), np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(audio, c.n_fft)[::c.hop]  # (T, n_fft)
        power = np.abs(np.fft.rfft(frames * self.window, axis=1)) ** 2  # (T, K)
        return np.log(power @ self.mel + LOG_FLOOR).astype(np.float32)


def log_mel(audio: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Log-mel frames (T, M) of float audio (N,) at :data:`SAMPLE_RATE`.

    Examples:
        >>> log_mel(np.zeros(16_000)).shape
        (97, 40)
    """
    return _Frontend(config).log_mel(np.asarray(audio, dtype=np.float64))


def stack(frames: np.ndarray, subsample: int) -> np.ndarray:
    """(T, M) -> (T // subsample, subsample * M): consecutive frames side by side."""
    steps = len(frames) // subsample
    return frames[:steps * subsample].reshape(steps, subsample * frames.shape[1])


class FeatureStream:
    """Audio in chunks of any size -> model steps, equal to :func:`features` on the whole audio.

    Args:
        config: the feature configuration; ``norm`` must be ``running``.
        mean, var: (M,) training-set statistics of the log-mel frames, the running prior.
    """

    def __init__(self, config: FeatureConfig, mean: np.ndarray, var: np.ndarray):
        if config.norm != "running":
            raise ValueError(f"norm: expected 'running' for streaming, got {config.norm!r} "
                             "(it needs the whole utterance)")
        self.config, self._frontend = config, _Frontend(config)
        self._samples = np.zeros(0, np.float64)  # not yet framed
        self._pending = np.zeros((0, config.n_mels), np.float32)  # normalised, not yet stacked
        self._count = float(PRIOR_FRAMES)
        self._sum = PRIOR_FRAMES * np.asarray(mean, np.float64)
        self._square = PRIOR_FRAMES * (np.asarray(var, np.float64)
                                       + np.asarray(mean, np.float64) ** 2)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed float samples (N,); returns the model steps they complete, (S, subsample * M)."""
        c = self.config
        audio = np.concatenate([self._samples, np.asarray(samples, np.float64)])
        frames = self._frontend.log_mel(audio)  # (T, M)
        self._samples = audio[len(frames) * c.hop:]
        normed, self._count, self._sum, self._square = _running(frames, self._count, self._sum,
                                                                self._square)
        pending = np.concatenate([self._pending, normed])
        steps = stack(pending, c.subsample)
        self._pending = pending[len(steps) * c.subsample:]
        return steps

    def copy(self) -> FeatureStream:
        """A copy that :meth:`push` on either leaves the other unchanged (push replaces the
        arrays it keeps and never writes into them, so sharing them is safe): a caller keeps
        one to go back to if what it does with the steps fails."""
        return copy.copy(self)


def _running(frames: np.ndarray, count: float, total: np.ndarray, square: np.ndarray):
    """Frames normalised by the cumulative statistics up to each; the statistics after them."""
    x = frames.astype(np.float64)
    sums = total + np.cumsum(x, axis=0)  # (T, M)
    squares = square + np.cumsum(x * x, axis=0)
    counts = count + np.arange(1, len(x) + 1)[:, None]
    mean = sums / counts
    std = np.sqrt(np.maximum(squares / counts - mean ** 2, 1e-4))
    normed = ((x - mean) / std).astype(np.float32)
    if len(x):
        total, square, count = sums[-1], squares[-1], float(counts[-1, 0])
    return normed, count, total, square


def features(audio: np.ndarray, config: FeatureConfig, mean: np.ndarray,
             var: np.ndarray) -> np.ndarray:
    """Model input (S, subsample * M) of float audio (N,) at :data:`SAMPLE_RATE`."""
    if config.norm == "running":
        return FeatureStream(config, mean, var).push(audio)
    return normalise(log_mel(audio, config), config, mean, var)


def normalise(frames: np.ndarray, config: FeatureConfig, mean: np.ndarray,
              var: np.ndarray) -> np.ndarray:
    """Log-mel frames (T, M) of a whole utterance -> model input (S, subsample * M)."""
    x = frames.astype(np.float64)
    if config.norm == "running":
        normed = _running(x, PRIOR_FRAMES, PRIOR_FRAMES * np.asarray(mean, np.float64),
                          PRIOR_FRAMES * (np.asarray(var, np.float64)
                                          + np.asarray(mean, np.float64) ** 2))[0]
    elif len(x):
        normed = ((x - x.mean(0)) / np.maximum(x.std(0), 1e-2)).astype(np.float32)
    else:
        normed = np.zeros((0, config.n_mels), np.float32)
    return stack(normed, config.subsample)
