import numpy as np
import pytest

from lstmkit.tasks import audio
from lstmkit.tasks.audio import FeatureConfig, FeatureStream


def _noise(n=9000, seed=0):
    rng = np.random.default_rng(seed)
    return 0.1 * rng.standard_normal(n) + 0.3 * np.sin(np.arange(n) * 0.05)


def test_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    for n_fft, n_mels in ((512, 40), (400, 23), (1024, 80)):
        ours = audio.mel_filterbank(16_000, n_fft, n_mels)
        theirs = librosa.filters.mel(sr=16_000, n_fft=n_fft, n_mels=n_mels, dtype=np.float64)
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)


def test_log_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")
    y = _noise()
    theirs = librosa.feature.melspectrogram(y=y, sr=16_000, n_fft=512, hop_length=160,
                                            win_length=400, center=False, n_mels=40)
    ours = audio.log_mel(y)  # float32 of a float64 computation
    np.testing.assert_allclose(ours, np.log(theirs.T + audio.LOG_FLOOR), rtol=0, atol=1e-5)


def test_log_mel_frames_from_the_definition():
    """Frame 7 by hand: Hann-windowed samples, |rfft|^2, filterbank, log."""
    y = _noise()
    c = FeatureConfig()
    start = 7 * c.hop + (c.n_fft - c.win) // 2  # the window sits in the middle of the frame
    segment = y[start:start + c.win] * np.hanning(c.win + 1)[:-1]  # periodic Hann
    power = np.abs(np.fft.rfft(segment, c.n_fft)) ** 2
    expected = np.log(audio.mel_filterbank(16_000, c.n_fft, c.n_mels) @ power + audio.LOG_FLOOR)
    frames = audio.log_mel(y)
    assert frames.shape == (1 + (len(y) - c.n_fft) // c.hop, 40)
    np.testing.assert_allclose(frames[7], expected, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 37, 160, 1000])
def test_stream_equals_whole(chunk):
    y, c = _noise(), FeatureConfig(subsample=3)
    mean, var = np.full(40, -3.0), np.full(40, 4.0)
    whole = audio.features(y, c, mean, var)
    stream = FeatureStream(c, mean, var)
    parts = np.concatenate([stream.push(y[i:i + chunk]) for i in range(0, len(y), chunk)])
    assert whole.shape == (len(audio.log_mel(y)) // 3, 120)
    np.testing.assert_allclose(parts, whole, atol=1e-6)
    np.testing.assert_allclose(audio.normalise(audio.log_mel(y), c, mean, var), whole, atol=1e-6)


def test_running_normalisation_is_causal_and_uses_the_prior():
    y, c = _noise(), FeatureConfig(subsample=1)
    mean, var = np.zeros(40), np.ones(40)
    whole = audio.features(y, c, mean, var)
    later = audio.features(np.concatenate([y, 5 * _noise(seed=1)]), c, mean, var)
    np.testing.assert_allclose(later[:len(whole)], whole, atol=1e-6)  # the future changes nothing
    frames = audio.log_mel(y).astype(np.float64)
    n0 = audio.PRIOR_FRAMES
    mu = (frames[:5].sum(0)) / (n0 + 5)  # prior mean 0
    second = (n0 * 1.0 + (frames[:5] ** 2).sum(0)) / (n0 + 5)
    np.testing.assert_allclose(whole[4], (frames[4] - mu) / np.sqrt(second - mu ** 2), atol=1e-5)


def test_gain_cancels_under_utterance_normalisation():
    y, c = 3 * _noise(), FeatureConfig(norm="utterance")
    a = audio.features(y, c, None, None)
    b = audio.features(0.3 * y, c, None, None)
    # log(g^2 P + floor) - log(P + floor) is 2 log g only while P >> floor: loud enough here
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_bad_configs():
    with pytest.raises(ValueError, match="n_fft: expected at least win=400, got 256"):
        FeatureConfig(n_fft=256)
    with pytest.raises(ValueError, match="norm: expected one of"):
        FeatureConfig(norm="global")
    with pytest.raises(ValueError, match="expected 'running' for streaming"):
        FeatureStream(FeatureConfig(norm="utterance"), np.zeros(40), np.ones(40))


def test_too_short_gives_no_frames():
    assert audio.features(np.zeros(100), FeatureConfig(), np.zeros(40), np.ones(40)).shape == \
        (0, 120)
