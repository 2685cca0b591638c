import os
import subprocess
import sys

import pytest
import torch

import lstmkit
import lstmkit.cli
from lstmkit import CellConfig, LayerConfig, ModelConfig, SequenceModel
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


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    layer = LayerConfig(CellConfig("lstm", 2, 8), 2, batch_first=True, dropout=dropout)
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
    class Worsening(Toy):
        def validate(self, model):
            self.calls = getattr(self, "calls", 0) + 1
            return float(self.calls)

    model = _model()
    history = fit(model, Worsening(), _config(tmp_path, epochs=50, patience=2))
    assert history.epochs == 3 and history.best_epoch == 0
    best = lstmkit.load(tmp_path / trainer.MODEL_FILE)
    for key, value in best.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


def test_carried_state_is_detached_and_reset_each_epoch(tmp_path):
    seen = []

    class Stream(Toy):
        def loss(self, model, batch, carry):
            seen.append(carry)
            x, y = batch
            out, state = model(x, carry)
            return torch.nn.functional.mse_loss(out, y), state

    fit(_model(), Stream(), _config(tmp_path, epochs=2))
    assert seen[0] is None and seen[4] is None  # 4 batches per epoch
    for carry in seen[1:4] + seen[5:]:
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
