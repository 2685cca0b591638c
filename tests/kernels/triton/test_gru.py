"""The Triton GRU kernels (lstmkit/kernels/triton/gru.py) against the reference: forward values
and gradients of every input and parameter, for every option, on every launch plan."""

import pytest
import torch

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

from lstmkit import GRU  # noqa: E402
from lstmkit.cells.gru import FAMILY  # noqa: E402
from lstmkit.config import cell_config  # noqa: E402
from lstmkit.kernels.contract import StepMasks  # noqa: E402
from lstmkit.kernels.triton import common  # noqa: E402
from lstmkit.kernels.triton import gru as kernels  # noqa: E402

IN, H = 3, 8  # input and hidden sizes
LENGTHS = torch.tensor([4, 1, 3])

OPTIONS = {
    "plain": {},
    "no bias": dict(bias=False),
    "reset before": dict(reset_after=False),
    "recurrent dropout": dict(recurrent_dropout=0.4),
    "zoneout": dict(zoneout=0.3),
    "everything": dict(reset_after=False, recurrent_dropout=0.3, zoneout=0.2),
    "bidirectional, 2 layers": dict(bidirectional=True, num_layers=2, dropout=0.2),
}


def _make(options, hidden=H):
    return lambda backend: GRU(IN, hidden, backend=backend, **options)


@pytest.mark.parametrize("name", OPTIONS)
def test_matches_reference_with_lengths(name, device, compare):
    compare(_make(OPTIONS[name]), torch.float64, device, lengths=LENGTHS)


@pytest.mark.parametrize("name", ["plain", "everything"])
def test_matches_reference_full_length(name, device, compare):
    compare(_make(OPTIONS[name]), torch.float64, device)


def test_matches_reference_in_evaluation(device, compare):
    compare(_make(OPTIONS["everything"]), torch.float64, device, lengths=LENGTHS, training=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["plain", "everything"])
def test_matches_reference_in_low_precision(name, dtype, device, compare):
    compare(_make(OPTIONS[name]), dtype, device, lengths=LENGTHS)


PLANS = {  # at H=24: two hidden tiles; two chunks of every product; weights held
    "per-step launches, split hidden": common.Plan(16, 16, 16, persistent=False),
    # One hidden tile: see tests/kernels/triton/test_lstm.py.
    "persistent, grid barrier": common.Plan(16, 32, 32, persistent=True, sync=True, hold=True),
    "persistent, weights streamed in chunks": common.Plan(16, 32, 16, persistent=True),
}


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("name", ["recurrent dropout", "everything"])
def test_every_launch_plan(name, plan, device, monkeypatch, compare):
    options = OPTIONS[name]
    chosen = PLANS[plan]
    if options.get("reset_after") is False and chosen.block_h < 24:
        pytest.skip("the reset-before form needs every hidden unit in one program")
    monkeypatch.setattr(kernels, "plans", lambda cfg, batch, dev: (chosen, chosen))
    compare(_make(options, hidden=24), torch.float64, device, lengths=LENGTHS)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gradcheck_float64(reset_after, device):
    """The autograd Function's backward against finite differences, and its second
    derivative (the reference's, lstmkit.kernels.second_order) too."""
    cfg = cell_config("gru", 2, 4, reset_after=reset_after)
    steps, batch = 2, 2
    torch.manual_seed(0)
    shapes = [(12, 2), (12, 4), (12,), (12,)]
    masks = StepMasks(torch.full((batch, 4), 1.25, dtype=torch.float64, device=device),
                      (torch.rand(steps, batch, 4, dtype=torch.float64, device=device),))

    def fn(x, h0, flat):  # the weights as one tensor: one finite difference for all
        parts = flat.split([torch.Size(s).numel() for s in shapes])
        views = (p.view(s) for p, s in zip(parts, shapes, strict=True))
        w = dict(zip(FAMILY.parameters(cfg), views))
        return kernels.scan(cfg, w, x, h0, torch.tensor([2, 1]), masks)

    def tensor(*shape):
        return torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)

    flat = tensor(sum(torch.Size(s).numel() for s in shapes))
    inputs = (tensor(steps, batch, 2), tensor(batch, 4), flat)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_chunked_and_stepwise_equal_full(device):
    """Streaming: chunks, and single steps, carrying the state equal one call (evaluation)."""
    torch.manual_seed(0)
    layer = GRU(IN, H, backend="triton", **OPTIONS["everything"]).to(device, torch.float64).eval()
    x = torch.randn(6, 2, IN, device=device, dtype=torch.float64)
    with torch.no_grad():
        full, full_state = layer(x)
        first, state = layer(x[:2])
        second, state = layer(x[2:5], state)
        last, state = layer.step(x[5], state)
    torch.testing.assert_close(torch.cat([first, second, last[None]]), full, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(state, full_state, rtol=1e-12, atol=1e-12)
