import numpy as np
import pytest

from lstmkit.tasks import speech
from lstmkit.tasks.speech import CorpusConfig

pytest.importorskip("espeakng_loader")


def _config(tmp_path, **kw):
    return CorpusConfig(**{"train_utterances": 6, "val_utterances": 2, "test_utterances": 3,
                           "val_voices": 2, "test_voices": 3, "cache_dir": str(tmp_path),
                           **kw})


def test_split_by_voice_deterministic_and_cached(tmp_path):
    config = _config(tmp_path)
    voices = speech.voices(config)
    assert [len(voices[s]) for s in ("test", "val")] == [3, 2]
    every = voices["train"] + voices["val"] + voices["test"]
    assert len(set(every)) == len(speech.VARIANTS)  # each variant one voice, in one split
    corpus = speech.synthetic(config)
    again = speech.synthetic(_config(tmp_path / "again"))  # built afresh
    for split in ("train", "val", "test"):
        assert set(corpus[split].speakers) <= set(voices[split])
        assert corpus[split].texts == again[split].texts
        assert all(np.array_equal(a, b) for a, b in zip(corpus[split].audio,
                                                        again[split].audio))
    # Written once, atomically (no temporary left), then read back from the cache.
    files = list(tmp_path.glob("espeak-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob(".*tmp"))
    stamp = files[0].stat().st_mtime_ns
    cached = speech.synthetic(config)
    assert files[0].stat().st_mtime_ns == stamp and cached["test"].texts == corpus["test"].texts
    assert speech.cache_key(_config(tmp_path, snr_min=11.0)) != speech.cache_key(config)
    other = speech.voices(_config(tmp_path, corpus_seed=1))
    assert other["test"] != voices["test"]


def test_utterances_are_speech_in_the_vocabulary(tmp_path):
    # In this process (no fresh one): the content is checked, not its exact samples.
    corpus = speech._synthesize_here(_config(tmp_path, digit_fraction=0.5))["train"]
    for i, text in enumerate(corpus.texts):
        assert set(text.split()) <= set(speech.WORDS)
        samples = corpus.float_audio(i)
        assert 0.3 < len(samples) / speech.SAMPLE_RATE < 6
        assert np.sqrt(np.mean(samples ** 2)) > 10 * speech.SILENCE_RMS


def test_bad_corpus_configs(tmp_path):
    with pytest.raises(ValueError, match="rate_max: expected at least rate_min=150"):
        _config(tmp_path, rate_min=150, rate_max=140)
    with pytest.raises(ValueError, match="val_voices \\+ test_voices: expected fewer than"):
        _config(tmp_path, test_voices=len(speech.VARIANTS))


def _wav(path, seconds=0.5, rate=16_000, amplitude=0.3, channels=1):
    import wave
    t = np.arange(int(seconds * rate)) / rate
    tone = amplitude * np.sin(2 * np.pi * 440 * t)
    pcm = np.repeat((tone * 32767).astype("<i2")[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path


def test_read_wav_resamples_and_downmixes(tmp_path):
    samples = speech.read_wav(_wav(tmp_path / "a.wav", rate=44_100, channels=2))
    assert len(samples) == 8000
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 16_000 / len(samples) == pytest.approx(440, abs=3)


def test_read_wav_refuses_bad_files(tmp_path):
    with pytest.raises(ValueError, match="expected speech, got silence"):
        speech.read_wav(_wav(tmp_path / "s.wav", amplitude=0.0))
    with pytest.raises(ValueError, match="expected audio, got an empty file"):
        speech.read_wav(_wav(tmp_path / "e.wav", seconds=0))
    with pytest.raises(ValueError, match="at least 8000 Hz .* got 4000 Hz"):
        speech.read_wav(_wav(tmp_path / "r.wav", rate=4000))
    (tmp_path / "t.wav").write_text("not a wav")
    with pytest.raises(ValueError, match="expected a WAV file of PCM or float samples"):
        speech.read_wav(tmp_path / "t.wav")
    with pytest.raises(FileNotFoundError, match="no such file"):
        speech.read_wav(tmp_path / "missing.wav")
    (tmp_path / "z.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="empty file .*z.wav"):
        speech.read_wav(tmp_path / "z.wav")


def test_read_wav_takes_float_and_24_bit_files_and_refuses_non_finite_ones(tmp_path):
    wavfile = pytest.importorskip("scipy.io.wavfile")
    pcm = speech.read_wav(_wav(tmp_path / "a.wav"))  # 16-bit PCM, read by the wave module
    wavfile.write(tmp_path / "f.wav", 16_000, pcm.astype(np.float32))
    np.testing.assert_array_equal(speech.read_wav(tmp_path / "f.wav"), pcm)
    wavfile.write(tmp_path / "d.wav", 16_000, pcm.astype(np.float64))
    np.testing.assert_array_equal(speech.read_wav(tmp_path / "d.wav"), pcm)
    # 24-bit PCM (wave refuses it): the same samples shifted left by 8 bits
    import struct
    ints = np.round(pcm.astype(np.float64) * 32768).astype(np.int64) << 8
    data = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    header = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, 16_000, 48_000, 3, 24) + b"data"
              + struct.pack("<I", len(data)))
    (tmp_path / "t.wav").write_bytes(header + data)
    np.testing.assert_array_equal(speech.read_wav(tmp_path / "t.wav"), pcm)
    wavfile.write(tmp_path / "n.wav", 16_000, np.array([0.1, np.nan] * 800, np.float32))
    with pytest.raises(ValueError, match="expected finite samples"):
        speech.read_wav(tmp_path / "n.wav")


def _folder(tmp_path, lines):
    for k in range(4):
        _wav(tmp_path / f"u{k}.wav")
    (tmp_path / "transcripts.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_folder_splits_by_speaker(tmp_path):
    lines = [f"u{k}.wav\tspk{k % 3}\tHello  World" for k in range(4)]
    data = speech.folder(_folder(tmp_path, lines))
    assert sum(len(c) for c in data.values()) == 4
    assert data["train"].texts[0] == "hello world"
    spoken = {s: set(c.speakers) for s, c in data.items()}
    assert not (spoken["train"] & spoken["test"]) and not (spoken["val"] & spoken["test"])


def test_folder_errors_name_the_line(tmp_path):
    with pytest.raises(ValueError, match="line 2: expected letters a-z.*got '7'"):
        speech.folder(_folder(tmp_path, ["u0.wav\tone", "u1.wav\tagent 7", "u2.wav\tx",
                                         "u3.wav\ty"]))
    with pytest.raises(ValueError, match="expected a transcript for every WAV file, got none "
                                         "for u3.wav"):
        speech.folder(_folder(tmp_path, ["u0.wav\tone", "u1.wav\ttwo", "u2.wav\tthree"]))
    with pytest.raises(ValueError, match="line 1: expected a transcript, got an empty one"):
        speech.folder(_folder(tmp_path, ["u0.wav\t ", "u1.wav\ttwo", "u2.wav\tthree",
                                         "u3.wav\tfour"]))
    with pytest.raises(FileNotFoundError, match="expected a folder of WAV files .* got "
                                                "nothing"):
        speech.folder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="got a file"):
        speech.folder(tmp_path / "u0.wav")
    with pytest.raises(FileNotFoundError, match="expected the WAV file .*u9.wav that"):
        speech.folder(_folder(tmp_path, [f"u{k}.wav\tone" for k in (0, 1, 2, 3, 9)]))
    (tmp_path / "transcripts.txt").unlink()
    with pytest.raises(FileNotFoundError, match="expected a transcript file"):
        speech.folder(tmp_path)
