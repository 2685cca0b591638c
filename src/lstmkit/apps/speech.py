"""Speech recognition with CTC: a stacked recurrent model that reads log-mel frames and emits
characters (Graves et al. 2006), offline (bidirectional) and streaming (unidirectional).

One run builds the corpus (:mod:`lstmkit.tasks.speech`: synthesised with eSpeak NG, or a WAV
folder), computes features (:mod:`lstmkit.tasks.audio`), trains each model with
``torch.nn.CTCLoss`` through the shared trainer, trains the baseline (a per-frame classifier with
no memory: an MLP over a window of neighbouring steps, trained with the same CTC loss and decoded
by collapsing), and reports word and character error rates on the unseen test voices, per voice
and overall, for greedy and beam-search decoding. The streaming model is also run through
:class:`~lstmkit.apps.transcriber.Transcriber` on test utterances, chunk by chunk, to measure its
real-time factor and check that it transcribes exactly as offline decoding.

Files in ``out``: ``offline/`` and ``stream/`` (each ``model.safetensors`` and the training
state), ``metrics.json``, ``transcribe.png`` (spectrogram, CTC posteriors and decoded text).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from lstmkit.apps import ctc
from lstmkit.apps.model_options import ModelOptions, model_config
from lstmkit.apps.outputs import write_json
from lstmkit.apps.trainer import MODEL_FILE, TrainConfig, fit, session
from lstmkit.models import SequenceModel
from lstmkit.tasks import audio
from lstmkit.tasks import speech as corpora

MODELS = ("both", "offline", "stream")
DECODERS = ("greedy", "beam")


@dataclass(frozen=True)
class SpeechConfig(TrainConfig, corpora.CorpusConfig, audio.FeatureConfig):
    """A speech recognition run: corpus, features, models, training and decoding."""

    path_fields: ClassVar[tuple[str, ...]] = ("data",)

    data: str | None = None
    """A folder of WAV files with transcripts.txt (None: the synthesised eSpeak NG corpus)."""
    models: str = "both"
    """Which to train: ``offline`` (bidirectional), ``stream`` (unidirectional) or ``both``."""
    model: ModelOptions = field(default_factory=lambda: ModelOptions(
        hidden_size=128, num_layers=2, dropout=0.1))
    """The recurrent stack (``--model.backend cpu``: the fused C++ kernels, faster to train);
    ``models`` decides its direction: bidirectional offline, unidirectional streaming."""
    spec_augment: int = 0
    """SpecAugment in training (Park et al. 2019): this many masks of up to 8 mel bands and
    as many of up to 4 steps, per utterance (0: none)."""
    decoder: str = "beam"
    """``greedy`` (best path) or ``beam`` (prefix beam search with the lexicon and bigram)."""
    beam: int = 8
    """Prefixes kept by beam search."""
    lm_weight: float = 0.5
    """Weight of the word bigram of the training transcripts in beam search (0: lexicon only)."""
    baseline_epochs: int = 8
    """Epochs of the per-frame baseline classifier (0: no baseline)."""
    stream_utterances: int = 50
    """Test utterances transcribed chunk by chunk to measure streaming speed and equality."""
    epochs: int = 20
    """Passes over the training utterances (an upper bound when early stopping)."""
    patience: int = 5
    """Stop after this many epochs without a better validation loss (0: never)."""
    batch_size: int = 32
    """Utterances per optimisation step."""
    lr: float = 2e-3
    """Adam learning rate."""
    out: str = "runs/transcribe"
    """Folder for the checkpoints, metrics and picture."""

    def __post_init__(self):
        TrainConfig.__post_init__(self)
        corpora.CorpusConfig.__post_init__(self)
        audio.FeatureConfig.__post_init__(self)
        if self.spec_augment < 0:
            raise ValueError(f"spec_augment: expected an int >= 0, got {self.spec_augment!r}")
        if self.beam < 1:
            raise ValueError(f"beam: expected an int >= 1, got {self.beam!r}")
        if self.model.bidirectional:
            raise ValueError("model.bidirectional: expected false (models= decides: the offline "
                             "model reads both ways, the streaming one forwards only), got true")
        for name, allowed in (("models", MODELS), ("decoder", DECODERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        if self.models != "offline" and self.norm == "utterance":
            raise ValueError("norm: expected 'running' for a streaming model, got 'utterance' "
                             "(it needs the whole utterance); train models='offline' with it")

    def part(self, cls):
        """The fields of base config ``cls`` (CorpusConfig, FeatureConfig) as one."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})


def build_model(config: SpeechConfig, bidirectional: bool) -> SequenceModel:
    """The recogniser: a stack over model steps, a linear head onto blank + the alphabet."""
    options = dataclasses.replace(config.model, bidirectional=bidirectional)
    return SequenceModel(model_config(options, config.step_size, len(corpora.ALPHABET) + 1))


# --- data ------------------------------------------------------------------------------------

def load_corpus(config: SpeechConfig) -> dict[str, corpora.Corpus]:
    if config.data is not None:
        return corpora.folder(config.data, seed=config.corpus_seed)
    return corpora.synthetic(config.part(corpora.CorpusConfig))


def log_mels(corpus: corpora.Corpus, config: audio.FeatureConfig) -> list[np.ndarray]:
    """Log-mel frames (T, M) of every utterance."""
    return [audio.log_mel(corpus.float_audio(i), config) for i in range(len(corpus))]


@dataclass
class Encoded:
    """A split as model inputs and CTC targets."""

    x: list[torch.Tensor]  # each (S, F)
    y: list[torch.Tensor]  # each (L,) labels in 1..V-1
    texts: list[str]
    speakers: list[str]


def encode(corpus: corpora.Corpus, meta: dict, frames: list[np.ndarray] | None = None) -> Encoded:
    """``corpus`` as model inputs and targets; ``frames``: its log-mels, if computed already."""
    features = audio.FeatureConfig(**meta["features"])
    mean, var = np.array(meta["mean"]), np.array(meta["var"])
    frames = log_mels(corpus, features) if frames is None else frames
    x = [torch.from_numpy(audio.normalise(f, features, mean, var)) for f in frames]
    y = [torch.tensor(ctc.encode(t, meta["alphabet"]), dtype=torch.long) for t in corpus.texts]
    return Encoded(x, y, corpus.texts, corpus.speakers)


def ctc_steps_needed(labels: torch.Tensor) -> int:
    """Fewest frames CTC needs for ``labels``: one each, plus a blank between repeats."""
    return len(labels) + int((labels[1:] == labels[:-1]).sum())


def _pad(items: list[torch.Tensor]):
    lengths = torch.tensor([len(t) for t in items])
    return torch.nn.utils.rnn.pad_sequence(items, batch_first=True), lengths


class _Task:
    """Batches of utterances of similar length (less padding), in a seeded random order."""

    def __init__(self, train: Encoded, val: Encoded, batch_size: int, masks: int = 0,
                 n_mels: int = 40):
        self.train, self.val, self.batch_size = train, val, batch_size
        self.masks, self.n_mels = masks, n_mels
        self.loss_fn = torch.nn.CTCLoss(zero_infinity=True)

    def batches(self, epoch, generator):
        lengths = torch.tensor([len(x) for x in self.train.x], dtype=torch.float64)
        jitter = torch.rand(len(lengths), generator=generator, dtype=torch.float64)
        order = torch.argsort(lengths + 10 * jitter)  # similar lengths, shuffled within ~10
        groups = list(order.split(self.batch_size))
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator)]
        return [self._batch(self.train, g.tolist()) for g in groups]

    def _batch(self, split: Encoded, rows: list[int]):
        x, x_lengths = _pad([split.x[r] for r in rows])  # (B, S, F), (B,)
        y, y_lengths = _pad([split.y[r] for r in rows])  # (B, L), (B,)
        return x, x_lengths, y, y_lengths

    def loss(self, model, batch, carry):
        x, x_lengths, y, y_lengths = batch
        if model.training and self.masks:
            x = spec_augment(x, self.masks, self.n_mels)
        logits, _ = model(x, lengths=x_lengths)  # (B, S, V)
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # (S, B, V)
        return self.loss_fn(log_probs, y, x_lengths, y_lengths), None

    def validate(self, model):
        total, rows = 0.0, list(range(len(self.val.x)))
        for start in range(0, len(rows), 64):
            part = rows[start:start + 64]
            loss, _ = self.loss(model, self._batch(self.val, part), None)
            total += float(loss.detach()) * len(part)
        return total / len(rows)


def spec_augment(x: torch.Tensor, masks: int, n_mels: int, bands: int = 8,
                 steps: int = 4) -> torch.Tensor:
    """``x`` (B, S, k * M) with ``masks`` random runs of up to ``bands`` mel filters (in all k
    stacked frames) and ``masks`` runs of up to ``steps`` steps set to 0, drawn per utterance
    from torch's global generator (which the trainer seeds and restores on resume)."""
    batch, length, width = x.shape
    mel = torch.arange(n_mels)
    step = torch.arange(length)
    keep_mel = torch.ones(batch, n_mels, dtype=torch.bool)
    keep_step = torch.ones(batch, length, dtype=torch.bool)
    for _ in range(masks):
        w = torch.randint(0, bands + 1, (batch, 1))
        f = (torch.rand(batch, 1) * (n_mels - w + 1)).long()
        keep_mel &= ~((mel >= f) & (mel < f + w))
        w = torch.randint(0, steps + 1, (batch, 1))
        t = (torch.rand(batch, 1) * max(length - steps, 1)).long()
        keep_step &= ~((step >= t) & (step < t + w))
    keep = keep_mel.repeat(1, width // n_mels)[:, None, :] & keep_step[:, :, None]
    return x * keep


def log_probs(model, data: Encoded, batch: int = 64) -> list[np.ndarray]:
    """(S, V) frame log-probabilities of every utterance."""
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(data.x), batch):
            x, lengths = _pad(data.x[start:start + batch])
            logits, _ = model(x, lengths=lengths)
            lp = logits.log_softmax(-1).numpy()
            out += [lp[k, :n] for k, n in enumerate(lengths.tolist())]
    return out


def decode(frames: np.ndarray, meta: dict, decoder: str | None = None) -> str:
    """Text of (S, V) log-probabilities, with the decoder and lexicon the checkpoint names."""
    decoder = decoder or meta["config"]["decoder"]
    if decoder == "greedy":
        return ctc.greedy(frames, meta["alphabet"])
    lm = _bigram(meta)
    return ctc.beam_search(frames, meta["alphabet"], beam=meta["config"]["beam"],
                           lexicon=meta["lexicon"], lm=lm, lm_weight=meta["config"]["lm_weight"])


def _bigram(meta: dict) -> ctc.Bigram | None:
    if not meta["config"]["lm_weight"]:
        return None
    return _bigram_of(tuple(meta["lm_texts"]))


@functools.lru_cache(maxsize=4)
def _bigram_of(texts: tuple[str, ...]) -> ctc.Bigram:
    return ctc.Bigram(list(texts))


# --- the baseline ----------------------------------------------------------------------------

class FrameClassifier(torch.nn.Module):
    """Each step's label from a window of 2 * context + 1 steps around it: no memory beyond.

    Shape: x (B, S, F) -> logits (B, S, V).
    """

    def __init__(self, features: int, labels: int, context: int = 3, hidden: int = 256):
        super().__init__()
        self.context = context
        self.net = torch.nn.Sequential(torch.nn.Linear((2 * context + 1) * features, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.ReLU(), torch.nn.Linear(hidden, labels))

    def forward(self, x, state=None, lengths=None):
        padded = torch.nn.functional.pad(x, (0, 0, self.context, self.context))
        windows = padded.unfold(1, 2 * self.context + 1, 1)  # (B, S, F, W)
        return self.net(windows.transpose(2, 3).flatten(2)), None


def train_baseline(task: _Task, config: SpeechConfig) -> FrameClassifier:
    torch.manual_seed(config.seed)
    model = FrameClassifier(config.step_size, len(corpora.ALPHABET) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for epoch in range(config.baseline_epochs):
        model.train()
        for batch in task.batches(epoch, torch.Generator().manual_seed(config.seed + epoch)):
            loss, _ = task.loss(model, batch, None)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip or 1e9)
            optimizer.step()
    return model.eval()


# --- training and evaluation -----------------------------------------------------------------

def make_meta(config: SpeechConfig, data: dict[str, corpora.Corpus],
              train_frames: list[np.ndarray]) -> dict:
    """What a checkpoint needs besides its weights: features and their training statistics,
    the alphabet, the lexicon and the bigram's texts."""
    features = config.part(audio.FeatureConfig)
    stacked = np.concatenate(train_frames).astype(np.float64)
    mean, var = stacked.mean(0), stacked.var(0)
    lexicon = sorted({w for t in data["train"].texts for w in t.split()})
    return {"app": "transcribe", "config": config.to_dict(), "features": dataclasses.asdict(
        features), "mean": mean.tolist(), "var": var.tolist(), "alphabet": corpora.ALPHABET,
        "lexicon": lexicon, "lm_texts": sorted(set(data["train"].texts))}


def train(config: SpeechConfig) -> dict:
    """Build the corpus, train the models and the baseline, evaluate on the test voices, write
    the checkpoints, metrics and picture. Returns the report."""
    started = time.perf_counter()
    data = load_corpus(config)
    train_frames = log_mels(data["train"], config.part(audio.FeatureConfig))
    meta = make_meta(config, data, train_frames)
    train_set = encode(data["train"], meta, train_frames)
    val_set, test_set = encode(data["val"], meta), encode(data["test"], meta)
    prepared = time.perf_counter() - started
    task = _Task(train_set, val_set, config.batch_size, config.spec_augment, config.n_mels)
    out, models, training = Path(config.out), {}, {}
    kinds = ("offline", "stream") if config.models == "both" else (config.models,)
    for kind in kinds:
        run = dataclasses.replace(config, out=str(out / kind))
        tick, cpu = time.perf_counter(), time.process_time()
        with session(run) as runtime:
            model = build_model(config, bidirectional=kind == "offline")
            history = fit(model, task, run, {**meta, "kind": kind}, runtime)
            if not runtime.is_main:
                return {}
        training[kind] = {"seconds": round(time.perf_counter() - tick, 1),
                          "cpu_seconds": round(time.process_time() - cpu, 1),
                          "epochs": history.epochs, "best_epoch": history.best_epoch + 1,
                          "best_val_loss": history.best_val}
        model.meta = {**meta, "kind": kind}
        models[kind] = model.eval()
    if config.baseline_epochs:
        tick, cpu = time.perf_counter(), time.process_time()
        models["baseline"] = train_baseline(task, config)
        training["baseline"] = {"seconds": round(time.perf_counter() - tick, 1),
                                "cpu_seconds": round(time.process_time() - cpu, 1),
                                "epochs": config.baseline_epochs}
    report = evaluate_models(models, test_set, meta)
    report["corpus"] = _describe(config, data)
    report["training"] = training
    report["training"]["features_seconds"] = round(prepared, 1)
    report["infeasible_utterances"] = sum(ctc_steps_needed(y) > len(x)
                                          for x, y in zip(train_set.x, train_set.y))
    if "stream" in models:
        from lstmkit.apps.transcriber import measure_streaming
        report["streaming"] = measure_streaming(models["stream"], data["test"],
                                                config.stream_utterances)
    first = next(k for k in ("offline", "stream") if k in models)
    picture = out / "transcribe.png"
    _picture(picture, models[first], data["test"], test_set, models[first].meta)
    write_json(out / "metrics.json", report)
    report["files"] = {**{f"checkpoint ({k})": str(out / k / MODEL_FILE)
                          for k in kinds}, "metrics": str(out / "metrics.json"),
                       "picture": str(picture)}
    return report


def evaluate_models(models: dict, test: Encoded, meta: dict) -> dict:
    """Error rates of each model (and decoder) on ``test``: overall, digit strings, per voice."""
    results = {}
    for name, model in models.items():
        frames = log_probs(model, test)
        decoders = ("greedy",) if name == "baseline" else DECODERS
        for decoder in decoders:
            hypotheses = [decode(f, meta, decoder) for f in frames]
            results[f"{name} {decoder}"] = _rates(test, hypotheses)
    return {"test_utterances": len(test.texts), "test_voices": sorted(set(test.speakers)),
            "results": results}


def _rates(test: Encoded, hypotheses: list[str]) -> dict:
    digits = [i for i, t in enumerate(test.texts) if set(t.split()) <= set(corpora.DIGITS)]
    by_voice = defaultdict(list)
    for i, speaker in enumerate(test.speakers):
        by_voice[speaker].append(i)
    out = ctc.error_rates(test.texts, hypotheses)
    if digits:
        out["digits"] = ctc.error_rates([test.texts[i] for i in digits],
                                        [hypotheses[i] for i in digits])
    out["per_voice"] = {v: ctc.error_rates([test.texts[i] for i in rows],
                                           [hypotheses[i] for i in rows])
                        for v, rows in sorted(by_voice.items())}
    out["examples"] = [[test.texts[i], hypotheses[i]] for i in range(min(5, len(hypotheses)))]
    return out


def evaluate(model, config: SpeechConfig) -> dict:
    """Error rates of a loaded checkpoint on the test split of the corpus ``config`` names."""
    test = encode(load_corpus(config)["test"], model.meta)
    return evaluate_models({model.meta["kind"]: model}, test, model.meta)


def predict(model, config: SpeechConfig):
    """The model's transcripts of the test split of the corpus ``config`` names, as a DataFrame
    (speaker, reference, transcript)."""
    from lstmkit._optional import require

    pd = require("pandas", "apps", "tables")
    test = encode(load_corpus(config)["test"], model.meta)
    transcripts = [decode(frames, model.meta) for frames in log_probs(model, test)]
    return pd.DataFrame({"speaker": test.speakers, "reference": test.texts,
                         "transcript": transcripts})


def _describe(config: SpeechConfig, data: dict) -> dict:
    return {"source": config.data or "eSpeak NG (synthesised)",
            **{split: {"utterances": len(c), "seconds": round(c.seconds, 1),
                       "voices": len(set(c.speakers))} for split, c in data.items()}}


def _picture(path: Path, model, corpus: corpora.Corpus, test: Encoded, meta: dict) -> None:
    from lstmkit.apps.plots import transcription_plot

    frames = log_probs(model, Encoded(test.x[:1], test.y[:1], test.texts[:1], test.speakers[:1]))
    spectrogram = audio.log_mel(corpus.float_audio(0), audio.FeatureConfig(**meta["features"]))
    transcription_plot(path, spectrogram, np.exp(frames[0]), meta["alphabet"],
                       reference=test.texts[0], decoded=decode(frames[0], meta),
                       title=f"{meta.get('kind', '')} model, voice {test.speakers[0]}")


def format_table(report: dict) -> str:
    corpus = report["corpus"]
    lines = [f"{corpus['source']}: train {corpus['train']['utterances']} utterances "
             f"({corpus['train']['voices']} voices), test {corpus['test']['utterances']} "
             f"({corpus['test']['voices']} unseen voices)",
             f"  {'model':<20} {'WER %':>7} {'CER %':>7} {'digits WER %':>13}"]
    for name, r in report["results"].items():
        digits = r.get("digits", {}).get("wer", float("nan"))
        lines.append(f"  {name:<20} {r['wer']:7.2f} {r['cer']:7.2f} {digits:13.2f}")
    for kind, t in report["training"].items():
        if isinstance(t, dict):
            lines.append(f"  trained {kind}: {t['epochs']} epochs, {t['seconds']:.0f} s "
                         f"({t['cpu_seconds']:.0f} s of CPU time)")
    if "streaming" in report:
        s = report["streaming"]
        lines.append(f"  streaming: real-time factor {s['real_time_factor']:.3f} "
                     f"({s['cpu_real_time_factor']:.3f} in CPU time), {s['ms_per_chunk']:.2f} "
                     f"ms per {s['chunk_ms']} ms chunk, final equals offline decode in "
                     f"{s['equal_to_offline']}/{s['utterances']}")
    return "\n".join(lines)
