"""``lstmkit demo``: a short training that shows the library working end to end."""

from __future__ import annotations

import time

import torch

import lstmkit


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="train a small LSTM variant for a few seconds")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    parser.set_defaults(run=run)


def run(args) -> int:
    """Next-step prediction of noisy sines with a peephole, layer-norm LSTM."""
    torch.manual_seed(0)
    model = lstmkit.LSTM(1, 32, batch_first=True, peephole=True, layer_norm=True, forget_bias=1.0)
    head = torch.nn.Linear(32, 1)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        phase = torch.rand(16, 1, 1) * 6.28
        t = torch.arange(51).float()[None, :, None] * 0.3
        series = torch.sin(t + phase) + 0.05 * torch.randn(16, 51, 1)
        y, _ = model(series[:, :-1])
        loss = torch.nn.functional.mse_loss(head(y), series[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == 1:
            print(f"step {step:4d}  mse {loss.item():.4f}  ({time.perf_counter() - start:.1f}s, "
                  f"backend {model.backend().name})")
    return 0
