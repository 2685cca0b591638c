"""The one training loop behind every application.

An application hands :func:`fit` a :class:`~lstmkit.SequenceModel` and a task with three methods:

- ``batches(epoch, generator)``: the epoch's batches, each a tuple of tensors whose first
  dimension is the sequences of the *global* batch (all processes together);
- ``loss(model, batch, carry) -> (loss, carry)``: the mean loss of a batch; ``carry`` is the
  recurrent state handed from one batch to the next (truncated BPTT), None at each epoch's start;
  the loop detaches it, so the graph never reaches back across batches;
- ``validate(model) -> float | None``: the validation loss (None: no validation set).

The loop owns everything else, once for all applications: Adam, gradient clipping, the progress
bar, early stopping on the validation loss, checkpoints written atomically after every epoch,
``--resume`` that continues exactly where the last checkpoint left off, and data-parallel training
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lstmkit import checkpoint
from lstmkit._optional import require

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
    threads: int = 0
    """Torch CPU threads (0: torch's default)."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto`` (cuda when available)."""

    def __post_init__(self):
        for name, least in (("epochs", 1), ("batch_size", 1), ("patience", 0), ("threads", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name}: expected an int >= {least}, got {value!r}")
        for name in ("lr", "weight_decay", "clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device: expected 'cpu', 'cuda' or 'auto', got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    history, best = History(), _copy_state(model)
    if config.resume:
        best = _restore(out / STATE_FILE, model, optimizer, history, config)
    net = model
    if runtime.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(
            model, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)
    bar, saved = _progress(config, runtime), history.epochs
    try:
        for epoch in range(history.epochs, config.epochs):
            if config.patience and history.bad_epochs >= config.patience:
                break
            _train_epoch(net, model, task, optimizer, config, runtime, epoch, history, bar)
            val = _validate(model, task)
            history.val_loss.append(val)
            if val is None or val < history.best_val:
                history.best_val = math.inf if val is None else val
                history.best_epoch, history.bad_epochs = epoch, 0
                best = _copy_state(model)
            else:
                history.bad_epochs += 1
            bar.set_postfix_str(_postfix(history), refresh=False)
            if runtime.is_main:
                _save(out, model, best, optimizer, history, config, meta)
            saved = history.epochs
    except KeyboardInterrupt:
        bar.close()
        if runtime.is_main:
            where = f"the checkpoint of epoch {saved} is intact in {out}; continue with --resume"
            print(f"interrupted: {where if saved else 'no epoch had finished'}", file=sys.stderr)
        raise
    bar.close()
    model.load_state_dict(best)
    return history


def _train_epoch(net, model, task, optimizer, config, runtime, epoch, history, bar) -> None:
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    net.train()
    carry, losses = None, []
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
        loss.backward()
        if config.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        carry = detach(carry)
        losses.append(_global_mean(loss.detach(), runtime))
        bar.update(1)
        bar.set_postfix_str(f"loss {losses[-1]:.4f} " + _postfix(history), refresh=False)
    history.step_loss.extend(losses)
    history.train_loss.append(sum(losses) / max(len(losses), 1))


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
    """``carry`` cut from the graph: a tensor, an LSTMState or a tuple of them, or None."""
    if carry is None:
        return None
    if isinstance(carry, torch.Tensor):
        return carry.detach()
    if hasattr(carry, "detach"):
        return carry.detach()
    return type(carry)(detach(c) for c in carry)


def _postfix(history: History) -> str:
    if not history.val_loss or history.val_loss[-1] is None:
        return f"epoch {history.epochs}"
    return f"val {history.val_loss[-1]:.4f} best {history.best_val:.4f} epoch {history.epochs}"


def _progress(config: TrainConfig, runtime: Runtime):
    tqdm = require("tqdm", "apps", "the progress bar").tqdm
    # Redirected to a log, a bar redrawn ten times a second is noise: update it rarely there.
    return tqdm(disable=not (config.progress and runtime.is_main), unit="step", file=sys.stderr,
                dynamic_ncols=True, desc="training",
                mininterval=0.1 if sys.stderr.isatty() else 30.0)


def _copy_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save(out: Path, model, best, optimizer, history: History, config, meta: dict) -> None:
    """The training state first, then the best model; both atomically."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["history.step_loss"] = torch.tensor(history.step_loss, dtype=torch.float64)
    optim_tensors, optim_meta = _optimizer_parts(optimizer)
    tensors.update(optim_tensors)
    record = {k: v for k, v in dataclasses.asdict(history).items() if k != "step_loss"}
    record["best_val"] = None if math.isinf(history.best_val) else history.best_val
    state_meta = {"config": config.to_dict(), "history": record, "optimizer": optim_meta}
    checkpoint.save_tensors(out / STATE_FILE, tensors, state_meta)
    live = _copy_state(model)
    model.load_state_dict(best)
    try:
        checkpoint.save(out / MODEL_FILE, model, **(meta or {}),
                        training={"epochs": history.epochs, "best_epoch": history.best_epoch})
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


def _restore(path: Path, model, optimizer, history: History, config) -> dict:
    """Load the training state at ``path`` into the arguments; returns the best weights."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: expected a training state {path}, found none "
                                "(train without --resume first)")
    tensors, meta = checkpoint.load_tensors(path)
    saved = {k: v for k, v in meta.get("config", {}).items() if k not in _RESUMABLE}
    now = {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE}
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ValueError(f"--resume: expected the settings of the interrupted run, got changes "
                         f"in {changed}")
    model.load_state_dict(_prefixed(tensors, "model."))
    optimizer.load_state_dict(_optimizer_state(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    record = meta["history"]
    history.step_loss = tensors["history.step_loss"].tolist()
    history.train_loss, history.val_loss = record["train_loss"], record["val_loss"]
    history.best_epoch, history.bad_epochs = record["best_epoch"], record["bad_epochs"]
    history.best_val = math.inf if record["best_val"] is None else record["best_val"]
    return _prefixed(tensors, "best.")


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
