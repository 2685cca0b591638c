"""The one training loop behind every application.

An application hands :func:`fit` a :class:`~lstmkit.SequenceModel` and a task with three methods:

- ``batches(epoch, generator)``: the epoch's batches, each a tuple of tensors whose first
  dimension is the sequences of the *global* batch (all processes together);
- ``loss(model, batch, carry) -> (loss, carry)``: the mean loss of a batch; ``carry`` is the
  recurrent state handed from one batch to the next (truncated BPTT), None at each epoch's start;
  the loop detaches it, so the graph never reaches back across batches;
- ``validate(model) -> float | None``: the validation loss (None: no validation set).

and optionally two attributes: ``carry_across_epochs = True`` hands the last state of an epoch to
the first batch of the next (a text read on across epochs; it is saved with the training state,
so ``--resume`` carries it too), and ``loss_unit = (name, scale)`` shows the loss in the progress
bar as ``scale * loss`` followed by ``name`` (bits per character from nats).

The loop owns everything else, once for all applications: Adam, a learning-rate schedule
(constant, reduce on plateau, cosine or exponential decay), gradient clipping, the progress
bar, early stopping on the validation loss, checkpoints written atomically after every epoch,
``--resume`` that continues exactly where the last checkpoint left off, ``--precision bf16`` or
``fp16`` (16-bit forward and backward passes on float32 master weights, :mod:`.precision`), and
data-parallel training
when launched by ``torchrun`` (the environment variable WORLD_SIZE > 1): each process takes its
share of every global batch and DistributedDataParallel averages the gradients, with gloo on CPU
and NCCL on GPU.

Files written in ``config.out``: ``model.safetensors`` (the best weights so far plus the
application's metadata; :func:`lstmkit.load` reads it) and ``train_state.safetensors`` (the last
weights, optimizer moments, random state and history, for ``--resume``). No pickle anywhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from lstmkit import checkpoint
from lstmkit._optional import require
from lstmkit.apps import precision as precisions
from lstmkit.apps.configs import from_dict

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"

# Fields that may change between a run and its --resume without changing what is computed.
_RESUMABLE = frozenset({"epochs", "patience", "resume", "progress", "threads", "device", "out"})


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every application's config extends this one."""

    epochs: int = 100
    """Passes over the training batches (an upper bound when early stopping)."""
    batch_size: int = 32
    """Sequences per optimisation step, over all processes together."""
    lr: float = 3e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay (L2)."""
    clip: float = 1.0
    """Clip the gradient norm to this value (0: no clipping)."""
    patience: int = 20
    """Stop after this many epochs without a better validation loss (0: never stop early)."""
    seed: int = 0
    """Seed of every random choice: initial weights, shuffling, dropout."""
    out: str = "runs/app"
    """Folder for the checkpoint, training state, metrics and pictures."""
    resume: bool = False
    """Continue from the training state in ``out`` instead of starting afresh."""
    progress: bool = True
    """Show a progress bar with the live loss and the time left."""
    threads: int = 1
    """Torch CPU threads (0: torch's default, one per core). The models of the applications
    are small: one thread runs them fastest, and two slow to a crawl on a busy machine."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto`` (cuda when available)."""
    lr_schedule: str = "constant"
    """Learning rate over the epochs: constant; plateau (times lr_decay after lr_patience epochs
    without a better validation loss); cosine (from lr to 0 over the epochs); exponential
    (times lr_decay every epoch after lr_decay_after epochs, as char-rnn)."""
    lr_decay: float = 0.5
    """Factor of the plateau and exponential schedules."""
    lr_patience: int = 5
    """Plateau schedule: epochs without a better validation loss before the rate falls."""
    lr_decay_after: int = 0
    """Exponential schedule: epochs at the full rate before the decay starts."""
    precision: str = "fp32"
    """What the forward and backward passes compute in: fp32, bf16 or fp16 (16-bit copies of
    the float32 master weights; fp16 with dynamic loss scaling). docs/applications.md has what
    each costs and saves."""

    path_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that name input files: stored absolute, so that a checkpoint's config finds its
    data from any working directory."""

    def __post_init__(self):
        for name in self.path_fields:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(Path(getattr(self, name)).resolve()))
        for name, least in (("epochs", 1), ("batch_size", 1), ("patience", 0), ("threads", 0),
                            ("lr_patience", 1), ("lr_decay_after", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name}: expected an int >= {least}, got {value!r}")
        for name in ("lr", "weight_decay", "clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device: expected 'cpu', 'cuda' or 'auto', got {self.device!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {SCHEDULES}, got "
                             f"{self.lr_schedule!r}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay: expected a number in (0, 1], got {self.lr_decay!r}")
        if self.precision not in precisions.DTYPES:
            raise ValueError(f"precision: expected one of {tuple(precisions.DTYPES)}, got "
                             f"{self.precision!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """The config ``to_dict`` wrote (or a JSON config file holds); unknown keys and values
        of the wrong type raise ValueError."""
        return from_dict(cls, data)


SCHEDULES = ("constant", "plateau", "cosine", "exponential")


def epoch_lr(config: TrainConfig, history: History) -> float:
    """The learning rate of the next epoch, from the config and what training did so far."""
    epoch = history.epochs
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    if config.lr_schedule == "exponential":
        return config.lr * config.lr_decay ** max(0, epoch - config.lr_decay_after)
    last = history.lr[-1] if history.lr else config.lr
    if config.lr_schedule == "plateau" and history.bad_epochs \
            and history.bad_epochs % config.lr_patience == 0:
        return last * config.lr_decay
    return last


@dataclass
class History:
    """What training did, epoch by epoch; stored in the training state."""

    step_loss: list[float] = field(default_factory=list)
    """Mean training loss of every step (over all processes)."""
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = math.inf
    bad_epochs: int = 0
    """Epochs since the last improvement of the validation loss."""
    lr: list[float] = field(default_factory=list)
    """Learning rate of every epoch."""
    seconds: float = 0.0
    """Time spent training and validating, over every run of a resumed training."""
    stopped_early: bool = False
    """Whether early stopping ended training before the last epoch."""

    @property
    def epochs(self) -> int:
        return len(self.train_loss)


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextmanager
def session(config: TrainConfig) -> Iterator[Runtime]:
    """Seed, threads and, under torchrun, the process group; torn down on exit."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                          else "cpu" if config.device == "auto" else config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected an available GPU for 'cuda', found none")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        import torch.distributed as dist
        rank = int(os.environ["RANK"])
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(config.seed)
    try:
        yield Runtime(rank, world, device)
        if world > 1:
            # Leave together: a rank that tears gloo down while its peer still holds the
            # connection can abort the peer ("terminate called without an active exception").
            torch.distributed.barrier()
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def fit(model: torch.nn.Module, task, config: TrainConfig, meta: dict | None = None,
        runtime: Runtime = Runtime()) -> History:
    """Train ``model`` on ``task``; returns the history, with the best weights loaded.

    ``meta`` (JSON-ready: the application, its config, data statistics) goes into the checkpoint
    beside the weights so that :func:`lstmkit.load` needs nothing else.
    """
    if config.batch_size < 2 * runtime.world:
        raise ValueError(f"batch_size: expected at least 2 per process ({2 * runtime.world}), "
                         f"got {config.batch_size}")
    out = Path(config.out)
    model.to(runtime.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    scaler = precisions.scaler(config.precision, runtime.device)
    history, best, carry = History(), _copy_state(model), None
    if config.resume:
        best, carry = _restore(out / STATE_FILE, model, optimizer, history, config, scaler)
    if not (getattr(task, "carry_across_epochs", False) and runtime.world == 1):
        carry = None  # each process's share of the streams would differ from one process's
    net = low = precisions.wrap(model, config.precision)  # low: validation's, without DDP
    if runtime.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(
            low, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)
    unit = getattr(task, "loss_unit", ("", 1.0))
    bar, saved = _progress(config, runtime), history.epochs
    try:
        for epoch in range(history.epochs, config.epochs):
            if _patience_spent(config, history):
                break
            started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = epoch_lr(config, history)
            history.lr.append(optimizer.param_groups[0]["lr"])
            carry = _train_epoch(net, model, task, optimizer, config, runtime, epoch, history,
                                 bar, carry, unit, scaler)
            if _record(history, _validate(low, task), epoch, config):
                best = _copy_state(model)
            history.seconds += time.perf_counter() - started
            bar.set_postfix_str(_postfix(history, unit), refresh=False)
            if runtime.is_main:
                _save(out, model, best, optimizer, history, config, meta, carry, scaler)
            saved = history.epochs
            if history.stopped_early:
                break
    except KeyboardInterrupt:
        bar.close()
        if runtime.is_main:
            where = f"the checkpoint of epoch {saved} is intact in {out}; continue with --resume"
            print(f"interrupted: {where if saved else 'no epoch had finished'}", file=sys.stderr)
        raise
    if history.stopped_early:
        bar.total = bar.n  # the bar ends full, not at the share of the maximum epochs
        bar.refresh()
    bar.close()
    if history.stopped_early and config.progress and runtime.is_main:
        print(f"stopped early at epoch {history.epochs}: no better validation loss for "
              f"{config.patience} epochs; keeping epoch {history.best_epoch + 1}",
              file=sys.stderr)
    model.load_state_dict(best)
    return history


def _record(history: History, val: float | None, epoch: int, config: TrainConfig) -> bool:
    """Book the epoch's validation loss; True when the epoch is the best so far."""
    history.val_loss.append(val)
    better = val is None or val < history.best_val
    if better:
        history.best_val = math.inf if val is None else val
        history.best_epoch, history.bad_epochs = epoch, 0
    else:
        history.bad_epochs += 1
    history.stopped_early = _patience_spent(config, history) and epoch + 1 < config.epochs
    return better


def _patience_spent(config: TrainConfig, history: History) -> bool:
    return bool(config.patience) and history.bad_epochs >= config.patience


def _train_epoch(net, model, task, optimizer, config, runtime, epoch, history, bar,
                 carry=None, unit=("", 1.0), scaler=None):
    """One pass over the epoch's batches; returns the state after the last batch when the
    task carries it across epochs, else None."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    net.train()
    losses = []
    scaler = scaler or precisions.scaler("fp32", runtime.device)
    carries = getattr(task, "carry_across_epochs", False) and runtime.world == 1
    carry = carry if carries else None
    batches = _join_short_tail(list(task.batches(epoch, generator)))
    if bar.total is None:
        bar.total = len(batches) * (config.epochs - epoch)
        bar.refresh()
    for batch in batches:
        rows = len(batch[0])
        part = tuple(t.tensor_split(runtime.world)[runtime.rank].to(runtime.device) for t in batch)
        loss, carry = task.loss(net, part, carry)
        # DDP averages gradients over processes; weighting by the share of rows makes the result
        # the gradient of the global batch's mean loss even when the shares are unequal.
        loss = loss * (len(part[0]) * runtime.world / rows)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # disabled: the plain calls (fp16 only scales)
        if config.clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        scaler.step(optimizer)
        scaler.update()
        carry = detach(carry)
        losses.append(_global_mean(loss.detach(), runtime))
        bar.update(1)
        bar.set_postfix_str(f"loss {_shown(losses[-1], unit)} " + _postfix(history, unit),
                            refresh=False)
    history.step_loss.extend(losses)
    history.train_loss.append(sum(losses) / max(len(losses), 1))
    return carry if carries else None


def _join_short_tail(batches: list) -> list:
    """A last batch of less than half the first's rows joins the one before: every batch then
    has at least one sequence per process (``fit`` asks for batch_size >= 2 processes), by a
    rule that does not depend on the number of processes."""
    if len(batches) > 1 and 2 * len(batches[-1][0]) < len(batches[0][0]):
        tail = batches.pop()
        batches[-1] = tuple(torch.cat([a, b]) for a, b in zip(batches[-1], tail))
    return batches


def _validate(model, task) -> float | None:
    model.eval()
    with torch.no_grad():
        value = task.validate(model)
    return None if value is None else float(value)


def _global_mean(loss: torch.Tensor, runtime: Runtime) -> float:
    if runtime.world > 1:
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= runtime.world
    return float(loss)


def detach(carry):
    """``carry`` cut from the graph: a tensor, a family's state (a NamedTuple: LSTMState,
    sLSTMState, ...) or a tuple of them, or None."""
    if carry is None:
        return None
    if isinstance(carry, torch.Tensor):
        return carry.detach()
    if hasattr(carry, "detach"):
        return carry.detach()
    parts = [detach(c) for c in carry]
    return type(carry)(*parts) if hasattr(carry, "_fields") else type(carry)(parts)


def _shown(loss: float, unit: tuple[str, float]) -> str:
    name, scale = unit
    return f"{loss * scale:.4f}" + (f" {name}" if name else "")


def _postfix(history: History, unit=("", 1.0)) -> str:
    if not history.val_loss or history.val_loss[-1] is None:
        return f"epoch {history.epochs}"
    return (f"val {_shown(history.val_loss[-1], unit)} best {_shown(history.best_val, unit)} "
            f"epoch {history.epochs}")


def _progress(config: TrainConfig, runtime: Runtime):
    tqdm = require("tqdm", "apps", "the progress bar").tqdm
    # Under early stopping the total is the most training can take, and so is the time left.
    left = "at most {remaining} left" if config.patience else "{remaining} left"
    # Redirected to a log, a bar redrawn ten times a second is noise: update it rarely there.
    return tqdm(disable=not (config.progress and runtime.is_main), unit="step", file=sys.stderr,
                dynamic_ncols=True, desc="training",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps "
                           f"[{{elapsed}}, {left}{{postfix}}]",
                mininterval=0.1 if sys.stderr.isatty() else 30.0)


def _copy_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save(out: Path, model, best, optimizer, history: History, config, meta: dict,
          carry=None, scaler=None) -> None:
    """The training state first, then the best model; both atomically."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best.items()})
    tensors.update({f"carry.{i}": v for i, v in enumerate(_leaves(carry))})
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["history.step_loss"] = torch.tensor(history.step_loss, dtype=torch.float64)
    optim_tensors, optim_meta = _optimizer_parts(optimizer)
    tensors.update(optim_tensors)
    record = {k: v for k, v in dataclasses.asdict(history).items() if k != "step_loss"}
    record["best_val"] = None if math.isinf(history.best_val) else history.best_val
    state_meta = {"config": config.to_dict(), "history": record, "optimizer": optim_meta}
    if scaler is not None and scaler.is_enabled():  # fp16's loss scale, for --resume
        state_meta["scaler"] = scaler.state_dict()
    checkpoint.save_tensors(out / STATE_FILE, tensors, state_meta)
    live = _copy_state(model)
    model.load_state_dict(best)
    try:
        checkpoint.save(out / MODEL_FILE, model, **(meta or {}),
                        training={"epochs": history.epochs, "best_epoch": history.best_epoch,
                                  "seconds": round(history.seconds, 1)})
    finally:
        model.load_state_dict(live)


def _optimizer_parts(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _leaves(carry) -> list[torch.Tensor]:
    if carry is None:
        return []
    if isinstance(carry, torch.Tensor):
        return [carry]
    return [leaf for part in carry for leaf in _leaves(part)]


def _rebuild(leaves: list[torch.Tensor], template):
    """``leaves`` in the structure of ``template`` (a state of the same model)."""
    if isinstance(template, torch.Tensor):
        return leaves.pop(0)
    return type(template)(*(_rebuild(leaves, part) for part in template))


def _restore(path: Path, model, optimizer, history: History, config, scaler=None):
    """Load the training state at ``path`` into the arguments; returns the best weights and
    the carried state (None if none was saved)."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: expected a training state {path}, found none "
                                "(train without --resume first)")
    tensors, meta = checkpoint.load_tensors(path)
    # A key the saved config lacks was added later, with the default the old run trained with.
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    saved = {k: v for k, v in meta.get("config", {}).items() if k not in _RESUMABLE}
    now = {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE}
    changed = sorted(k for k in set(saved) | set(now)
                     if saved.get(k, defaults.get(k)) != now.get(k))
    if changed:
        raise ValueError(f"--resume: expected the settings of the interrupted run, got changes "
                         f"in {changed}")
    model.load_state_dict(_prefixed(tensors, "model."))
    optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    if scaler is not None and "scaler" in meta:
        scaler.load_state_dict(meta["scaler"])
    record = meta["history"]
    history.step_loss = tensors["history.step_loss"].tolist()
    history.train_loss, history.val_loss = record["train_loss"], record["val_loss"]
    history.best_epoch, history.bad_epochs = record["best_epoch"], record["bad_epochs"]
    history.best_val = math.inf if record["best_val"] is None else record["best_val"]
    # States written before these fields existed: the rate was constant, the time unknown.
    history.lr = record.get("lr", [config.lr] * history.epochs)
    history.seconds = record.get("seconds", 0.0)
    history.stopped_early = record.get("stopped_early", False)
    leaves = [tensors[f"carry.{i}"] for i in range(len(_prefixed(tensors, "carry.")))]
    carry = _rebuild(leaves, model.init_state(1)) if leaves else None
    return _prefixed(tensors, "best."), carry


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_state(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in _prefixed(tensors, "optim.").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
