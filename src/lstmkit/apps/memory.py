"""The long-time-lag experiments: train a recurrent network on a memory task until the paper's
criterion says it is solved, or the budget is spent.

Training is online, as in Hochreiter & Schmidhuber (1997): every batch is freshly generated, so
"training sequences" counts every sequence the network saw. Every ``check_every`` sequences a
quick test on 256 fresh sequences runs; when it passes, the full test (the paper's 2,560 fresh
sequences, or the task's own set) decides. The result is a JSON file written atomically.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass

import torch

from lstmkit import tasks
from lstmkit.apps.memory_xlstm import XLSTM_CELLS, build_xlstm_model
from lstmkit.apps.model_options import XLSTM, ModelOptions, model_config
from lstmkit.config import LayerConfig, cell_config
from lstmkit.io import write_text
from lstmkit.models import ModelConfig, SequenceModel

CELLS = {
    "lstm": ("lstm", {}),
    "gru": ("gru", {}),
    "rnn": ("rnn", {}),
    "lstm-peephole": ("lstm", {"peephole": True}),
    "lstm-nig": ("lstm", {"input_gate": False}),
    "lstm-nfg": ("lstm", {"forget_gate": False}),
    "lstm-nog": ("lstm", {"output_gate": False}),
    "lstm-niaf": ("lstm", {"cell_activation": "identity"}),
    "lstm-noaf": ("lstm", {"output_activation": "identity"}),
    "lstm-cifg": ("lstm", {"coupled": True}),
    "lstm-ln": ("lstm", {"layer_norm": True}),
}
"""``--cell`` name -> (mode, CellConfig options). "lstm" is torch.nn's LSTM (no peepholes:
Greff et al.'s NP); "lstm-peephole" is their vanilla LSTM; the ablations remove one part from
"lstm": input gate (NIG), forget gate (NFG, the 1997 LSTM), output gate (NOG), input activation
(NIAF), output activation (NOAF); "lstm-cifg" couples input and forget gates."""

INITS = ("forget", "chrono", "torch")
"""``--init``: gate biases that keep memory (forget gate open, input gate shut), chrono
initialisation to the task's lag (the default), or torch.nn's uniform initialisation."""

NAMED_BUDGETS = {"small": 2_048}
DEFAULT_BUDGET = 200_000
"""Sequences allowed by ``--budget paper`` where the paper reports no number."""
QUICK_TEST = 256


@dataclass(frozen=True)
class MemoryConfig:
    """One run of one task."""

    task: str = "adding"
    """The task: a name from lstmkit.tasks.TASKS."""
    cell: str = "lstm"
    """lstm, gru, rnn or an LSTM variant (see lstmkit.apps.memory.CELLS), or slstm, mlstm,
    xlstm (xLSTM block stacks, see lstmkit.apps.memory_xlstm)."""
    init: str = "chrono"
    """Gate-bias initialisation: chrono (T_max = the task's lag), forget (forget bias
    --forget-bias, input bias --input-bias; a GRU's update gate gets the forget bias) or torch
    (torch.nn's default). An Elman RNN has no gates: only torch applies. Chrono is the default
    because it scales with the lag: a fixed forget bias of 3 (f = 0.95) solved adding at T = 100
    but stayed at the blind predictor at T = 500 for 209,000 sequences, where chrono solved it in
    23,552 (docs/memory.md)."""
    forget_bias: float = 3.0
    """Initial forget-gate bias with --init forget."""
    input_bias: float = -3.0
    """Initial input-gate bias with --init forget."""
    length: int | None = None
    """T (adding, multiplication, copy), q (long-lag-2c), the longest training length (the
    length-generalisation tasks), the number of pairs (mqar) or the chunk of truncated
    backpropagation (reber-continual); none: the task's default."""
    distractors: int | None = None
    """p, the distractor symbols of long-lag-2c; none: p = q."""
    hidden: int = 32
    """Hidden units per layer."""
    layers: int = 1
    """Stacked recurrent layers."""
    batch_size: int = 32
    """Sequences per training step."""
    lr: float = 0.01
    """Adam's learning rate."""
    clip: float = 1.0
    """Gradient norm clipping (0: none)."""
    budget: str = "paper"
    """Training sequences allowed: a number (100000, 100k, 1.5M), 'small' (2,048, for smoke
    tests) or 'paper' (what the paper needed, else 200,000)."""
    max_seconds: float = 0.0
    """Stop after this much wall time (0: no limit)."""
    check_every: int = 1024
    """Training sequences between quick tests."""
    seed: int = 0
    """Seeds the weights, the training sequences and the test sequences."""
    threads: int = 1
    """torch CPU threads (0: torch's default). One is fastest for networks this small: on this
    project's 2-core machine two threads took 7 times the CPU time of one for the same run."""
    backend: str = "auto"
    """Recurrent kernel backend."""
    out: str = "runs/memory"
    """Directory of the result JSON."""
    quiet: bool = False
    """No progress bar or summary."""
    model: ModelOptions | None = None
    """The network as the other applications' --model.* options describe it (any cell family
    and its variants, or an xlstm block stack); when given, it replaces cell, hidden, layers,
    backend and the gate initialisation options, which must keep their defaults."""

    def __post_init__(self):
        if self.task not in tasks.TASKS:
            raise ValueError(f"task: expected one of {sorted(tasks.TASKS)}, got {self.task!r}")
        if self.cell not in CELLS and self.cell not in XLSTM_CELLS:
            raise ValueError(f"cell: expected one of {sorted([*CELLS, *XLSTM_CELLS])}, "
                             f"got {self.cell!r}")
        if self.init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {self.init!r}")
        for name in ("hidden", "layers", "batch_size", "check_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive float, got {self.lr}")
        parse_budget(self.budget, None)
        if self.model is not None:
            clash = [n for n in _NETWORK_FIELDS
                     if getattr(self, n) != MemoryConfig.__dataclass_fields__[n].default]
            if clash:
                raise ValueError(f"{', '.join(clash)}: expected the default with model options "
                                 f"(they describe the network), got "
                                 f"{', '.join(repr(getattr(self, n)) for n in clash)}")

    def make_task(self) -> tasks.Task:
        return tasks.make(self.task, self.length, self.distractors, self.seed)

    @property
    def name(self) -> str:
        """The result file's stem: what distinguishes runs in a grid."""
        length = "" if self.length is None else f"-L{self.length}"
        network = f"{self.cell}-{self.init}" if self.model is None else f"model-{self.model.cell}"
        return f"{self.task}{length}-{network}-s{self.seed}"


_NETWORK_FIELDS = ("cell", "init", "forget_bias", "input_bias", "hidden", "layers", "backend")
"""What model options replace."""


def network_label(cfg: dict) -> tuple[str, str, int]:
    """(cell, init, units) of a result's config, for tables and summaries."""
    model = cfg.get("model")
    if model:
        return f"{model['cell']} (model options)", "model options", model["hidden_size"]
    fields = MemoryConfig.__dataclass_fields__
    return tuple(cfg.get(n, fields[n].default) for n in ("cell", "init", "hidden"))


def parse_budget(budget: str, task: tasks.Task | None) -> int:
    """Training sequences allowed by ``budget`` (see :class:`MemoryConfig`)."""
    text = str(budget).strip().lower()
    if text in NAMED_BUDGETS:
        return NAMED_BUDGETS[text]
    if text == "paper":
        return (task.paper if task is not None else None) or DEFAULT_BUDGET
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        value = -1
    if value < 1:
        raise ValueError(f"budget: expected 'small', 'paper' or a positive number of sequences "
                         f"(e.g. 100000, 100k, 1.5M), got {budget!r}")
    return int(value)


def build_model(config: MemoryConfig, task: tasks.Task) -> tuple[SequenceModel, str]:
    """The network for ``task`` and a description of the gate initialisation it got."""
    if config.model is not None:
        options = config.model
        width = options.hidden_size if options.cell == XLSTM else min(task.vocab_size, 64)
        input_size = width if task.vocab_size else task.input_size
        return SequenceModel(model_config(options, input_size, task.output_size, task.vocab_size,
                                          task.pooling)), "as the model options set it"
    if config.cell in XLSTM_CELLS:
        return build_xlstm_model(config, task)
    mode, options = CELLS[config.cell]
    options, described = _init_options(config, task, mode, dict(options))
    input_size = task.input_size if not task.vocab_size else min(task.vocab_size, 64)
    cell = cell_config(mode, input_size, config.hidden, **options)
    layer = LayerConfig(cell, config.layers, batch_first=True, backend=config.backend)
    model = SequenceModel(ModelConfig(layer, task.output_size, task.vocab_size, task.pooling))
    if mode == "gru" and config.init != "torch":
        _open_update_gates(model, config, task)
    return model, described


def _init_options(config, task, mode, options):
    if config.init == "torch":
        return options, "torch.nn default"
    if mode == "rnn":
        return options, "torch.nn default (an Elman RNN has no gates)"
    if mode == "gru":
        what = (f"update-gate bias {config.forget_bias:g}" if config.init == "forget"
                else f"chrono update-gate bias, T_max={task.lag}")
        return options, what
    if config.init == "chrono":
        return {**options, "chrono": task.lag}, f"chrono, T_max={task.lag}"
    if options.get("forget_gate", True):
        options["forget_bias"] = config.forget_bias
    if options.get("input_gate", True) and not options.get("coupled"):
        options["input_bias"] = config.input_bias
    described = ", ".join(f"{k} {v:g}" for k, v in options.items() if k.endswith("_bias"))
    return options, described


@torch.no_grad()
def _open_update_gates(model, config, task):
    """A GRU keeps h when its update gate z is near 1: the analogue of an open forget gate.
    Rows H..2H of the GRU's tensors are z (gate order r, z, n)."""
    h = config.hidden
    for layer in range(config.layers):
        bias_ih, bias_hh = (getattr(model.rnn, f"bias_{k}_l{layer}") for k in ("ih", "hh"))
        if config.init == "forget":
            bias_ih[h:2 * h] = config.forget_bias
        else:
            bias_ih[h:2 * h] = torch.empty(h).uniform_(1.0, task.lag - 1.0).log()
        bias_hh[h:2 * h] = 0.0


def train(config: MemoryConfig, progress=None) -> dict:
    """Train until solved or out of budget; returns the result that :func:`run` writes.

    Args:
        config: the run.
        progress: optional callable ``(sequences, loss, last_test)`` called after each step.
    """
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, progress)
    finally:
        torch.set_num_threads(threads)


def _train(config: MemoryConfig, progress) -> dict:
    task = config.make_task()
    budget = parse_budget(config.budget, task)
    torch.manual_seed(config.seed)
    model, init_described = build_model(config, task)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_gen = torch.Generator().manual_seed(config.seed)
    test_gen = torch.Generator().manual_seed(config.seed + 1_000_003)
    start, cpu, seen = time.perf_counter(), time.process_time(), 0
    next_check = config.check_every
    curve, stopped, solved_at, state, last, full = [], "budget", None, None, None, False
    for batch in task.train_batches(config.batch_size, train_gen):
        model.train()
        out, state = model(batch.x, state if batch.carry else None, lengths=batch.lengths)
        loss = task.loss(out, batch)
        if not torch.isfinite(loss):
            stopped = "diverged"
            break
        optimizer.zero_grad()
        loss.backward()
        if config.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        state = state.detach() if hasattr(state, "detach") else None  # the next batch decides
        seen += batch.sequences
        if progress is not None:
            progress(seen, loss.item(), last)
        if seen >= next_check or seen >= budget:
            next_check = (seen // config.check_every + 1) * config.check_every
            last, full = _check(model, task, test_gen)
            curve.append([seen, round(time.perf_counter() - start, 2), last.wrong, last.total,
                          round(last.loss, 6)])
            if full and task.solved(last):
                stopped, solved_at = "solved", seen
                break
        if seen >= budget:
            break
        if config.max_seconds and time.perf_counter() - start > config.max_seconds:
            stopped = "time"
            break
    if not full:
        last = _evaluate(model, task, test_gen, task.test_size)
    times = (time.perf_counter() - start, time.process_time() - cpu)
    return _result(config, task, budget, init_described, stopped, solved_at, seen, last, times,
                   curve)


def _evaluate(model, task, generator, n):
    model.eval()
    return task.evaluate(model, n, generator)


def _check(model, task, generator):
    """(evaluation, whether it was the full test): a quick test first, the full one only when
    the quick one passes."""
    if task.test_size <= QUICK_TEST:
        return _evaluate(model, task, generator, task.test_size), True
    quick = _evaluate(model, task, generator, QUICK_TEST)
    if task.solved(quick):
        return _evaluate(model, task, generator, task.test_size), True
    return quick, False


def _result(config, task, budget, init_described, stopped, solved_at, seen, test, times, curve):
    return {
        "task": task.describe(),
        "solved": stopped == "solved",
        "sequences_to_solve": solved_at,
        "sequences_trained": seen,
        "stopped": stopped,
        "budget": budget,
        "paper_sequences": task.paper,
        "lag": task.lag,
        "test": {"wrong": test.wrong, "total": test.total, "loss": test.loss,
                 "baseline_loss": task.baseline},
        "wall_seconds": round(times[0], 2),
        "cpu_seconds": round(times[1], 2),
        "init": init_described,
        "config": asdict(config),
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "curve": curve,
    }


def write_result(path, result: dict) -> None:
    """Write ``result`` as JSON, atomically."""
    text = json.dumps(result, indent=1)
    write_text(path, text)


def summary(result: dict) -> str:
    """Two lines for a person: did it solve, how fast against the paper, how well."""
    test, paper = result["test"], result["paper_sequences"]
    against = f" (paper: {paper:,})" if paper else ""
    if result["solved"]:
        head = (f"{result['task']}: solved after {result['sequences_to_solve']:,} training "
                f"sequences{against} in {result['wall_seconds']:.1f} s "
                f"({result['cpu_seconds']:.1f} s of CPU)")
    else:
        head = (f"{result['task']}: NOT solved after {result['sequences_trained']:,} training "
                f"sequences{against} in {result['wall_seconds']:.1f} s "
                f"({result['cpu_seconds']:.1f} s of CPU; stopped: {result['stopped']})")
    baseline = test["baseline_loss"]
    base = f", blind predictor {baseline:.4g}" if baseline is not None else ""
    cell, _, units = network_label(result["config"])
    return (f"{head}\n  {cell}, init {result['init']}, hidden {units}; test: "
            f"{test['wrong']:,} of {test['total']:,} wrong, loss {test['loss']:.4g}{base}")


def run(config: MemoryConfig, path=None) -> dict:
    """Train, write the result JSON (to ``path`` or ``<out>/<name>.json``) and print a summary
    unless quiet."""
    bar = _progress_bar(config)
    try:
        result = train(config, progress=bar and _updater(bar))
    finally:
        if bar is not None:
            bar.close()
    path = path or f"{config.out}/{config.name}.json"
    write_result(path, result)
    result["path"] = str(path)
    if not config.quiet:
        print(summary(result))
        print(f"  result: {path}")
    return result


def _progress_bar(config):
    if config.quiet or not sys.stderr.isatty():
        return None
    from lstmkit._optional import require
    tqdm = require("tqdm", "apps", "the progress bar").tqdm
    task = config.make_task()
    return tqdm(total=parse_budget(config.budget, task), unit="seq", unit_scale=True,
                desc=task.describe(), file=sys.stderr, leave=False)


def _updater(bar):
    def update(seen, loss, last):
        bar.update(seen - bar.n)
        if last is not None:
            bar.set_postfix(loss=f"{loss:.3g}", wrong=f"{last.wrong}/{last.total}", refresh=False)
    return update
