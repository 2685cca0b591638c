"""Speech corpora: one synthesised offline with eSpeak NG, or any folder of WAV files.

The synthetic corpus speaks digit strings ("four one seven") and short commands ("open the
door") from a fixed vocabulary. A *voice* is an eSpeak NG voice variant (m1-m8, f1-f5, klatt,
and named ones such as david or linda) with a fixed accent (en-us, en-gb-scotland, ...); every
utterance also draws its own speed, pitch and pitch range, a leading and trailing pause, coloured
noise at a random signal-to-noise ratio and a random gain. Voices, not utterances, are split into
train, validation and test, so the test speakers are never heard in training. Everything follows
from ``CorpusConfig.corpus_seed``; the corpus is written to ``cache_dir`` after the first build
(atomically, keyed by a hash of its settings) and read from there afterwards.

A folder holds WAV files and ``transcripts.txt``, one utterance a line: ``file.wav<TAB>text`` or
``file.wav<TAB>speaker<TAB>text``. With speakers the split is by speaker, as above.

Transcripts are lower-case letters, apostrophes and single spaces (:data:`ALPHABET`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import threading
import wave
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from lstmkit._optional import require
from lstmkit.io import atomic_write
from lstmkit.tasks.audio import SAMPLE_RATE

ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"
"""The characters a transcript may hold; CTC label k + 1 is ALPHABET[k], label 0 the blank."""
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VERBS = ("open", "close", "start", "stop")
OBJECTS = ("door", "window", "music", "timer", "light")
WORDS = DIGITS + VERBS + OBJECTS + ("the", "yes", "no")
"""The synthetic corpus's vocabulary (its lexicon for constrained decoding)."""
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "adam", "Andy", "Annie", "aunty", "benjamin",
            "boris", "caleb", "david", "ed", "edward", "Gene", "grandma", "grandpa", "ian",
            "iven", "john", "linda", "max", "michel", "norbert", "paul", "pedro", "quincy",
            "rob", "robert", "steph", "travis", "victor", "zac", "Alex", "Alicia", "Andrea",
            "Mike")
"""Voice variants of eSpeak NG's ``voices/!v`` (each one voice of the corpus)."""
SILENCE_RMS = 1e-4
"""Audio whose root-mean-square amplitude (full scale 1) is below this is refused as silent."""
CORPUS_VERSION = 1  # part of the cache key: bump when synthesis changes


@dataclass(frozen=True)
class CorpusConfig:
    """The synthetic corpus: how many utterances, which voices, how much variation."""

    train_utterances: int = 3000
    """Utterances spoken by the training voices."""
    val_utterances: int = 300
    """Utterances spoken by the validation voices (early stopping)."""
    test_utterances: int = 600
    """Utterances spoken by the test voices, never heard in training."""
    val_voices: int = 5
    """Voices held out for validation."""
    test_voices: int = 10
    """Voices held out for the test."""
    digit_fraction: float = 0.7
    """Share of utterances that are digit strings; the rest are commands, "yes" and "no"."""
    max_digits: int = 7
    """Digits per digit string at most (at least one)."""
    rate_min: int = 130
    """Slowest speaking rate, words per minute."""
    rate_max: int = 210
    """Fastest speaking rate, words per minute."""
    snr_min: float = 10.0
    """Lowest signal-to-noise ratio of the added noise, dB."""
    snr_max: float = 35.0
    """Highest signal-to-noise ratio, dB."""
    gain_min: float = -20.0
    """Lowest random gain, dB."""
    gain_max: float = 6.0
    """Highest random gain, dB (peaks are clipped at full scale)."""
    warp: float = 0.0
    """Each utterance is replayed at a rate factor from [1 - warp, 1 + warp], scaling its
    formants and pitch by the factor and its duration by the inverse (speed perturbation,
    Ko et al. 2015): every utterance a slightly different vocal tract (0: off)."""
    corpus_seed: int = 0
    """Seed of every choice in the corpus: voices and their split, texts, speeds, noise."""
    cache_dir: str = "runs/cache/speech"
    """Folder of built corpora, reused by every later run with the same settings."""

    def __post_init__(self):
        for name, least in (("train_utterances", 1), ("val_utterances", 1),
                            ("test_utterances", 1), ("val_voices", 1), ("test_voices", 1),
                            ("max_digits", 1), ("rate_min", 80)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name}: expected an int >= {least}, got {value!r}")
        if self.val_voices + self.test_voices >= len(VARIANTS):
            raise ValueError(f"val_voices + test_voices: expected fewer than {len(VARIANTS)} "
                             f"voices, got {self.val_voices + self.test_voices}")
        if not 0.0 <= self.warp < 0.5:
            raise ValueError(f"warp: expected a number in [0, 0.5), got {self.warp!r}")
        if not 0.0 <= self.digit_fraction <= 1.0:
            raise ValueError(f"digit_fraction: expected a number in [0, 1], got "
                             f"{self.digit_fraction!r}")
        for low, high in (("rate_min", "rate_max"), ("snr_min", "snr_max"),
                          ("gain_min", "gain_max")):
            if getattr(self, high) < getattr(self, low):
                raise ValueError(f"{high}: expected at least {low}={getattr(self, low)}, got "
                                 f"{getattr(self, high)}")


@dataclass
class Corpus:
    """Utterances of one split: audio at :data:`SAMPLE_RATE` (int16), transcript, speaker."""

    audio: list[np.ndarray]
    texts: list[str]
    speakers: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def float_audio(self, index: int) -> np.ndarray:
        return self.audio[index].astype(np.float32) / 32768.0

    @property
    def seconds(self) -> float:
        return sum(len(a) for a in self.audio) / SAMPLE_RATE


# --- eSpeak NG -------------------------------------------------------------------------------

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER


class _ESpeak:
    """The eSpeak NG library of the espeakng-loader wheel. It keeps one global voice, so one
    instance serves the whole process, under a lock."""

    _instance: _ESpeak | None = None
    _lock = threading.Lock()

    def __init__(self):
        loader = require("espeakng_loader", "speech", "synthesising the speech corpus")
        self.lib = ctypes.CDLL(loader.get_library_path())
        self._libc = ctypes.CDLL(None)
        self.data = Path(loader.get_data_path())
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]
        self.rate = self.lib.espeak_Initialize(2, 0, str(self.data).encode(), 0)  # synchronous
        if self.rate <= 0:
            raise OSError(f"eSpeak NG: expected to initialise from {self.data}, got error "
                          f"{self.rate}")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the library uses it
        self.lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _ESpeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, count, _events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def speak(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int,
              seed: int = 0) -> np.ndarray:
        """int16 samples at ``self.rate`` Hz of ``text`` in ``voice`` ("accent+variant").

        ``seed`` seeds the library's random draws (breath noise of some variants, through its
        own generator and libc's ``rand``).
        """
        variant = voice.split("+", 1)[1]
        if not (self.data / "voices" / "!v" / variant).is_file():
            raise ValueError(f"voice: expected an eSpeak NG variant, got {variant!r}")
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"voice: expected an eSpeak NG voice, got {voice!r}")
            for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
                self.lib.espeak_SetParameter(parameter, value, 0)
            self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
            self._libc.srand(ctypes.c_uint(seed))
            self._chunks = []
            data = text.encode()
            self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)  # UTF-8 chars
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


# --- the synthetic corpus --------------------------------------------------------------------

def voices(config: CorpusConfig) -> dict[str, list[str]]:
    """Voices ("accent+variant") of each split: a seeded shuffle of :data:`VARIANTS`, each
    with an accent of its own."""
    rng = np.random.default_rng([config.corpus_seed, 1])
    order = rng.permutation(len(VARIANTS))
    accents = rng.integers(len(ACCENTS), size=len(VARIANTS))
    named = [f"{ACCENTS[accents[i]]}+{VARIANTS[i]}" for i in order]
    test, val = config.test_voices, config.val_voices
    return {"test": named[:test], "val": named[test:test + val], "train": named[test + val:]}


def random_text(rng: np.random.Generator, config: CorpusConfig) -> str:
    if rng.random() < config.digit_fraction:
        return " ".join(DIGITS[d] for d in rng.integers(10, size=rng.integers(1, config.max_digits
                                                                              + 1)))
    choice = rng.integers(len(VERBS) * len(OBJECTS) + 2)
    if choice >= len(VERBS) * len(OBJECTS):
        return ("yes", "no")[choice - len(VERBS) * len(OBJECTS)]
    return f"{VERBS[choice // len(OBJECTS)]} the {OBJECTS[choice % len(OBJECTS)]}"


def _utterance(engine: _ESpeak, rng: np.random.Generator, voice: str, config: CorpusConfig):
    text = random_text(rng, config)
    speech = engine.speak(text, voice, int(rng.integers(config.rate_min, config.rate_max + 1)),
                          int(rng.integers(20, 81)), int(rng.integers(20, 81)),
                          seed=int(rng.integers(2 ** 31)))
    rate = engine.rate
    if config.warp:  # no draw without it: the corpus stays the one measured in docs/speech.md
        factor = rng.uniform(1 - config.warp, 1 + config.warp)
        rate = 50 * round(rate * factor / 50)  # a multiple of 50 Hz: short polyphase filters
    audio = resample(speech.astype(np.float64) / 32768.0, rate)
    pause = rng.integers(0, SAMPLE_RATE // 4, size=2)
    audio = np.pad(audio, (int(pause[0]), int(pause[1])))
    power = np.mean(audio[np.abs(audio) > 1e-3] ** 2) if np.any(np.abs(audio) > 1e-3) else 1e-6
    snr = rng.uniform(config.snr_min, config.snr_max)
    audio = audio + _noise(rng, len(audio)) * np.sqrt(power / 10 ** (snr / 10))
    audio *= 10 ** (rng.uniform(config.gain_min, config.gain_max) / 20)
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16), text


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-power noise with a random spectral tilt: 1 / f^beta, beta in [0, 1.5] (white to
    between pink and brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.arange(len(spectrum)), 1.0)
    shaped = np.fft.irfft(spectrum / f ** (rng.uniform(0, 1.5) / 2), n)
    return shaped / max(float(np.sqrt(np.mean(shaped ** 2))), 1e-12)


def _synthesize_here(config: CorpusConfig) -> dict[str, Corpus]:
    engine, split_voices = _ESpeak.get(), voices(config)
    sizes = {"train": config.train_utterances, "val": config.val_utterances,
             "test": config.test_utterances}
    out = {}
    for index, (split, count) in enumerate(sizes.items()):
        rng = np.random.default_rng([config.corpus_seed, 2, index])
        names = split_voices[split]
        corpus = Corpus([], [], [])
        for k in range(count):
            voice = names[k % len(names)]
            audio, text = _utterance(engine, rng, voice, config)
            corpus.audio.append(audio)
            corpus.texts.append(text)
            corpus.speakers.append(voice)
        out[split] = corpus
    return out


def cache_key(config: CorpusConfig) -> str:
    settings = {f.name: getattr(config, f.name) for f in fields(CorpusConfig)
                if f.name != "cache_dir"}
    settings["version"] = CORPUS_VERSION
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def synthetic(config: CorpusConfig) -> dict[str, Corpus]:
    """The corpus {"train", "val", "test"} from the cache, synthesised first if not there.

    eSpeak NG carries state from one utterance to the next inside the library (the same text
    and voice come out different the second time, even after ``espeak_Initialize``), so the
    corpus is spoken by a freshly started Python process, where the sequence of calls, and so
    every sample, is always the same; it writes the cache file, which this process reads.
    """
    path = Path(config.cache_dir) / f"espeak-{cache_key(config)}.npz"
    if not path.is_file():
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [package_root] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        done = subprocess.run([sys.executable, "-m", "lstmkit.tasks.speech", str(path),
                               json.dumps(asdict(config))], env=env, capture_output=True,
                              text=True)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise OSError(f"eSpeak NG: expected the corpus to build, got an error ({last})")
    return _read_cache(path)


def _write_cache(path: Path, corpora: dict[str, Corpus], settings: dict) -> None:
    arrays, meta = {}, {"settings": settings, "splits": {}}
    for split, corpus in corpora.items():
        arrays[f"{split}.audio"] = np.concatenate(corpus.audio)
        arrays[f"{split}.lengths"] = np.array([len(a) for a in corpus.audio], np.int64)
        meta["splits"][split] = {"texts": corpus.texts, "speakers": corpus.speakers}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)


def _read_cache(path: Path) -> dict[str, Corpus]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        out = {}
        for split, info in meta["splits"].items():
            audio = np.split(data[f"{split}.audio"], np.cumsum(data[f"{split}.lengths"])[:-1])
            out[split] = Corpus(audio, info["texts"], info["speakers"])
    return out


# --- WAV files -------------------------------------------------------------------------------

def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Float audio at ``rate`` Hz -> :data:`SAMPLE_RATE` (polyphase, scipy)."""
    if rate == SAMPLE_RATE:
        return audio
    signal = require("scipy.signal", "apps", "resampling audio")
    from math import gcd
    g = gcd(SAMPLE_RATE, rate)
    return signal.resample_poly(audio, SAMPLE_RATE // g, rate // g)


def read_wav(path: str | Path) -> np.ndarray:
    """A WAV file (8-, 16-, 24- or 32-bit PCM, or 32- or 64-bit float) as float samples (N,) at
    :data:`SAMPLE_RATE`, channels averaged, other rates resampled; an empty, silent or unreadable
    file raises ValueError saying which."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"wav: no such file: {path}")
    if not path.stat().st_size:
        raise ValueError(f"wav: expected audio, got an empty file {path} (0 bytes)")
    rate, samples = _read_pcm(path)
    if rate < 8000:
        raise ValueError(f"wav: expected a sample rate of at least 8000 Hz (speech needs the "
                         f"band up to 4 kHz), got {rate} Hz in {path}")
    if not samples.size:
        raise ValueError(f"wav: expected audio, got an empty file {path}")
    if not np.isfinite(samples).all():
        raise ValueError(f"wav: expected finite samples, got NaN or infinity in {path}")
    audio = resample(samples.mean(1), rate)
    if float(np.sqrt(np.mean(audio ** 2))) < SILENCE_RMS:
        raise ValueError(f"wav: expected speech, got silence in {path} (RMS below "
                         f"{SILENCE_RMS} of full scale)")
    return audio.astype(np.float32)


def _read_pcm(path: Path) -> tuple[int, np.ndarray]:
    """(rate, float samples (N, channels) in [-1, 1]): the standard library's reader for the
    common PCM widths, SciPy's for float and 24-bit files (which ``wave`` refuses)."""
    try:
        with wave.open(str(path), "rb") as f:
            rate, width, channels = f.getframerate(), f.getsampwidth(), f.getnchannels()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as error:
        reason = str(error) or "a truncated header"
    else:
        if width in (1, 2, 4):
            dtype, scale, offset = {1: (np.uint8, 128.0, 128.0), 2: (np.int16, 32768.0, 0.0),
                                    4: (np.int32, 2.0 ** 31, 0.0)}[width]
            samples = (np.frombuffer(raw, dtype).astype(np.float64) - offset) / scale
            return rate, samples.reshape(-1, channels)
        reason = f"{8 * width}-bit samples"
    wavfile = require("scipy.io.wavfile", "speech", "reading float or 24-bit WAV files")
    try:
        rate, data = wavfile.read(str(path))
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"wav: expected a WAV file of PCM or float samples, {path} is not one "
                         f"({reason}; {error})") from None
    data = data.reshape(len(data), -1)
    if data.dtype.kind == "f":
        return rate, data.astype(np.float64)
    if data.dtype.kind in "iu" and data.dtype.itemsize in (1, 2, 4):
        info = np.iinfo(data.dtype)
        offset = (info.max + 1) // 2 if data.dtype.kind == "u" else 0
        return rate, (data.astype(np.float64) - offset) / (info.max + 1 - offset)
    raise ValueError(f"wav: expected 8-, 16-, 24- or 32-bit PCM or float samples, got "
                     f"{data.dtype} in {path}")


def write_wav(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Float audio (N,) in [-1, 1] as a mono 16-bit WAV file, atomically."""
    pcm = np.clip(np.round(np.asarray(audio) * 32768), -32768, 32767).astype("<i2")

    def write(tmp):
        with wave.open(tmp, "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(rate)
            f.writeframes(pcm.tobytes())
    atomic_write(path, write)


def normalise_text(text: str, where: str) -> str:
    """``text`` lower-cased with single spaces; characters outside :data:`ALPHABET` raise a
    ValueError naming ``where``."""
    text = " ".join(text.lower().split())
    bad = sorted(set(text) - set(ALPHABET))
    if bad:
        raise ValueError(f"{where}: expected letters a-z, apostrophes and spaces, got "
                         f"{''.join(bad)!r} in {text!r}")
    if not text:
        raise ValueError(f"{where}: expected a transcript, got an empty one")
    return text


def folder(path: str | Path, val_share: float = 0.1, test_share: float = 0.2,
           seed: int = 0) -> dict[str, Corpus]:
    """The utterances of a folder with ``transcripts.txt``, split by speaker when the file
    names them, else by utterance; {"train", "val", "test"}."""
    path = Path(path)
    listing = path / "transcripts.txt"
    if not path.is_dir():
        raise FileNotFoundError(f"data: expected a folder of WAV files and transcripts.txt, got "
                                f"{'a file' if path.exists() else 'nothing'} at {path}")
    if not listing.is_file():
        raise FileNotFoundError(f"data: expected a transcript file {listing}, found none")
    rows = []
    for number, line in enumerate(listing.read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) not in (2, 3):
            raise ValueError(f"{listing} line {number}: expected 'file.wav<TAB>text' or "
                             f"'file.wav<TAB>speaker<TAB>text', got {line!r}")
        where = f"{listing} line {number}"
        rows.append((parts[0], parts[1] if len(parts) == 3 else parts[0],
                     normalise_text(parts[-1], where)))
    listed = {name for name, _, _ in rows}
    unlisted = sorted(p.name for p in path.glob("*.wav") if p.name not in listed)
    if unlisted:
        raise ValueError(f"data: expected a transcript for every WAV file, got none for "
                         f"{unlisted[0]} in {listing}")
    speakers = sorted({s for _, s, _ in rows})
    if len(speakers) < 3:
        raise ValueError(f"data: expected at least 3 speakers or utterances to split, got "
                         f"{len(speakers)} in {listing}")
    order = [speakers[i] for i in np.random.default_rng(seed).permutation(len(speakers))]
    test = max(1, round(test_share * len(order)))
    val = max(1, round(val_share * len(order)))
    split_of = {s: "test" if i < test else "val" if i < test + val else "train"
                for i, s in enumerate(order)}
    out = {name: Corpus([], [], []) for name in ("train", "val", "test")}
    for name, speaker, text in rows:
        if not (path / name).is_file():
            raise FileNotFoundError(f"data: expected the WAV file {path / name} that "
                                    f"{listing} lists, found none")
        audio = read_wav(path / name)
        corpus = out[split_of[speaker]]
        corpus.audio.append(np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16))
        corpus.texts.append(text)
        corpus.speakers.append(speaker)
    return out


if __name__ == "__main__":  # the fresh process of :func:`synthetic`: build, write the cache
    _settings = json.loads(sys.argv[2])
    _write_cache(Path(sys.argv[1]), _synthesize_here(CorpusConfig(**_settings)), _settings)
