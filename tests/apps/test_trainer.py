import math
import os
import subprocess
import sys

import pytest
import torch

import lstmkit
import lstmkit.cli
from lstmkit import LayerConfig, ModelConfig, SequenceModel, cell_config
from lstmkit.apps import trainer
from lstmkit.apps.trainer import TrainConfig, fit
from lstmkit.checkpoint import load_tensors


class Toy:
    """Sum of a short sequence; ``interrupt_at`` raises KeyboardInterrupt at that global step."""

    def __init__(self, interrupt_at=None):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(40, 6, 2, generator=g)
        self.y = self.x.sum((1, 2))[:, None]
        self.steps, self.interrupt_at = 0, interrupt_at

    def batches(self, epoch, generator):
        order = torch.randperm(32, generator=generator)
        return [(self.x[i], self.y[i]) for i in order.split(8)]

    def loss(self, model, batch, carry):
        self.steps += 1
        if self.steps == self.interrupt_at:
            raise KeyboardInterrupt
        x, y = batch
        return torch.nn.functional.mse_loss(model(x)[0], y), None

    def validate(self, model):
        return float(torch.nn.functional.mse_loss(model(self.x[32:])[0], self.y[32:]))


class Worsening(Toy):
    """Every validation loss is worse than the one before."""

    def validate(self, model):
        self.calls = getattr(self, "calls", 0) + 1
        return float(self.calls)


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    layer = LayerConfig(cell_config("lstm", 2, 8), 2, batch_first=True, dropout=dropout)
    return SequenceModel(ModelConfig(layer, 1, pooling="last"))


def _config(tmp_path, **kw):
    return TrainConfig(**{"epochs": 6, "lr": 1e-2, "progress": False, "out": str(tmp_path),
                          **kw})


def test_same_seed_same_run(tmp_path):
    runs = []
    for name in ("a", "b"):
        model = _model(dropout=0.3)  # dropout draws from the seeded generator too
        history = fit(model, Toy(), _config(tmp_path / name, epochs=3))
        runs.append((history.step_loss, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key])


def test_interrupted_run_resumes_exactly(tmp_path):
    whole = _model(dropout=0.3)
    expected = fit(whole, Toy(), _config(tmp_path / "whole"))

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the 4th epoch (steps 13-16)
        fit(_model(dropout=0.3), Toy(interrupt_at=14), _config(tmp_path / "cut"))
    kept = lstmkit.load(tmp_path / "cut" / trainer.MODEL_FILE)  # the last good checkpoint
    assert kept.meta["training"]["epochs"] == 3
    assert len(load_tensors(tmp_path / "cut" / trainer.STATE_FILE)[0]["history.step_loss"]) == 12

    resumed = _model(seed=123, dropout=0.3)  # other initial weights: the state replaces them
    history = fit(resumed, Toy(), _config(tmp_path / "cut", resume=True))
    assert history.step_loss == expected.step_loss
    assert history.val_loss == expected.val_loss
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_resume_refuses_other_settings_and_a_missing_state(tmp_path):
    fit(_model(), Toy(), _config(tmp_path, epochs=1))
    with pytest.raises(ValueError, match=r"changes in \['lr'\]"):
        fit(_model(), Toy(), _config(tmp_path, lr=0.5, resume=True))
    with pytest.raises(FileNotFoundError, match="train without --resume"):
        fit(_model(), Toy(), _config(tmp_path / "none", resume=True))


def test_early_stopping_keeps_the_best_weights(tmp_path):
    model = _model()
    history = fit(model, Worsening(), _config(tmp_path, epochs=50, patience=2))
    assert history.epochs == 3 and history.best_epoch == 0
    best = lstmkit.load(tmp_path / trainer.MODEL_FILE)
    for key, value in best.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


@pytest.mark.parametrize("across_epochs", [False, True])
def test_carried_state_is_detached_and_reset_each_epoch_unless_asked(tmp_path, across_epochs):
    seen = []

    class Stream(Toy):
        carry_across_epochs = across_epochs

        def loss(self, model, batch, carry):
            seen.append(carry)
            x, y = batch
            out, state = model(x, carry)
            return torch.nn.functional.mse_loss(out, y), state

    fit(_model(), Stream(), _config(tmp_path, epochs=2))
    assert seen[0] is None and (seen[4] is not None) == across_epochs  # 4 batches per epoch
    for carry in seen[1:4] + seen[5:] + seen[4:5] * across_epochs:
        h, c = carry[0]  # layer 0 of the LSTM's (h, c) per layer
        assert h.grad_fn is None and not h.requires_grad


def test_detach_handles_nested_states():
    h = torch.ones(2, requires_grad=True) * 2
    state = lstmkit.LSTMState(h, h)
    out = trainer.detach((state, h))
    assert out[0].h.grad_fn is None and out[1].grad_fn is None and trainer.detach(None) is None


def _csv(path):
    t = torch.arange(90.0)
    values = 10 + torch.sin(2 * torch.pi * t / 6) + 0.01 * t
    lines = ["time,y"] + [f"{int(a)},{b:.5f}" for a, b in zip(t, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_two_processes_equal_one_on_the_combined_batch(tmp_path):
    """torchrun with 2 CPU processes (gloo) trains the same weights as one process."""
    data = _csv(tmp_path / "s.csv")
    args = ["forecast", "--data", str(data), "--horizon", "4", "--season", "6", "--epochs", "3",
            "--model.hidden-size", "8", "--batch-size", "5", "--patience", "0",
            "--progress", "false"]
    assert lstmkit.cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "-m", "lstmkit", *args, "--out",
                          str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    one = load_tensors(tmp_path / "one" / trainer.STATE_FILE)[0]
    two = load_tensors(tmp_path / "two" / trainer.STATE_FILE)[0]
    # batches of 5 split 3 + 2: unequal shares must still give the combined batch's gradient
    for key in one:
        if key.startswith("model."):
            torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two["history.step_loss"], one["history.step_loss"])


def test_early_stop_ends_the_bar_full_and_says_so(tmp_path, capsys):
    """Before: the bar stopped at 3 of 50 epochs' steps (6%) with no word of early stopping,
    its time left counted for all 50."""
    history = fit(_model(), Worsening(), _config(tmp_path, epochs=50, patience=2,
                                                 progress=True))
    err = capsys.readouterr().err
    assert history.stopped_early and history.epochs == 3
    assert "stopped early at epoch 3: no better validation loss for 2 epochs; keeping epoch 1" \
        in err
    assert "100%" in err and "12/12 steps" in err  # 3 epochs of 4 steps: the bar ends full
    assert "at most" in err  # the time left is an upper bound under early stopping


def test_no_early_stop_line_when_training_runs_to_the_end(tmp_path, capsys):
    history = fit(_model(), Toy(), _config(tmp_path, epochs=2, patience=0, progress=True))
    err = capsys.readouterr().err
    assert not history.stopped_early and "stopped early" not in err and "at most" not in err


def test_training_time_adds_up_across_resumes(tmp_path, monkeypatch):
    """Before: after --resume the reported seconds counted only the resumed part."""
    clock = iter(range(10_000))
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: float(next(clock)))
    whole = fit(_model(), Toy(), _config(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), Toy(interrupt_at=14), _config(tmp_path / "cut"))
    resumed = fit(_model(), Toy(), _config(tmp_path / "cut", resume=True))
    assert whole.seconds == 6.0  # one tick per epoch: the fake clock is read twice an epoch
    assert resumed.seconds == whole.seconds
    assert lstmkit.load(tmp_path / "cut" / trainer.MODEL_FILE).meta["training"]["seconds"] == 6


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [0.01] * 4),
    ("cosine", [0.01 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]),
    ("exponential", [0.01, 0.01, 0.005, 0.0025]),  # lr_decay_after=1
    ("plateau", [0.01, 0.01, 0.01, 0.005]),  # 2nd, 3rd worse than the 1st: the 4th halves
])
def test_learning_rate_schedules(schedule, expected, tmp_path):
    config = _config(tmp_path, epochs=4, patience=0, lr_schedule=schedule, lr_patience=2,
                     lr_decay_after=1)
    history = fit(_model(), Worsening(), config)
    assert history.lr == pytest.approx(expected)


def test_schedule_resumes_exactly(tmp_path):
    config = dict(epochs=6, patience=0, lr_schedule="plateau", lr_patience=1)
    whole = fit(_model(), Worsening(), _config(tmp_path / "whole", **config))
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), Worsening(interrupt_at=14), _config(tmp_path / "cut", **config))
    task = Worsening()
    task.calls = 3  # the validations the interrupted run made
    resumed = fit(_model(), task, _config(tmp_path / "cut", resume=True, **config))
    assert resumed.lr == whole.lr and resumed.step_loss == whole.step_loss


def test_every_app_defaults_to_one_thread():
    """Before: charlm ran torch's default (a thread per core), 3-6x slower than one thread on
    a busy machine."""
    from lstmkit.apps.registry import APPS

    assert trainer.TrainConfig().threads == 1
    for app in APPS.values():
        assert app.config().threads == 1, app.name


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_sixteen_bit_training_keeps_float32_master_weights(tmp_path, precision, dtype):
    """The network runs in 16 bits; the parameters, the optimizer and the checkpoint stay
    float32, and training still learns the toy sum."""
    model = _model()
    seen = []
    model.rnn.register_forward_hook(lambda m, args, out: seen.append(
        (args[0].dtype, m.weight_ih_l0.dtype)))
    history = fit(model, Toy(), _config(tmp_path, epochs=8, precision=precision))
    assert set(seen) == {(dtype, dtype)}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert lstmkit.load(tmp_path / trainer.MODEL_FILE).head.weight.dtype == torch.float32
    assert history.val_loss[-1] < 0.75 * history.val_loss[0]


def test_fp16_resumes_with_its_loss_scale(tmp_path):
    whole = _model()
    expected = fit(whole, Toy(), _config(tmp_path / "whole", precision="fp16"))
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), Toy(interrupt_at=14), _config(tmp_path / "cut", precision="fp16"))
    _, meta = load_tensors(tmp_path / "cut" / trainer.STATE_FILE)
    assert meta["scaler"]["scale"] > 0
    resumed = _model()
    history = fit(resumed, Toy(), _config(tmp_path / "cut", precision="fp16", resume=True))
    assert history.step_loss == expected.step_loss


def test_precision_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"precision: expected one of \('fp32', 'bf16', 'fp16'\)"):
        _config(tmp_path, precision="int8")
