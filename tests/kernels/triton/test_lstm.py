"""The Triton LSTM kernels (lstmkit/kernels/triton/lstm.py) against the reference: forward values
and gradients of every input and parameter, for every option, on every launch plan."""

import pytest
import torch

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

from lstmkit import LSTM  # noqa: E402
from lstmkit.cells.lstm import FAMILY  # noqa: E402
from lstmkit.config import cell_config  # noqa: E402
from lstmkit.kernels.contract import StepMasks  # noqa: E402
from lstmkit.kernels.triton import common  # noqa: E402
from lstmkit.kernels.triton import lstm as kernels  # noqa: E402

IN, H = 3, 8  # input and hidden sizes
LENGTHS = torch.tensor([4, 1, 3])

OPTIONS = {
    "plain": {},
    "no bias": dict(bias=False),
    "peephole": dict(peephole=True),
    "coupled": dict(coupled=True),
    "cell clip": dict(cell_clip=0.3),
    "hard_sigmoid softsign relu": dict(gate_activation="hard_sigmoid", cell_activation="softsign",
                                       output_activation="relu"),
    "elu leaky_relu": dict(cell_activation="elu", output_activation="leaky_relu"),
    "tanh softplus identity": dict(gate_activation="tanh", cell_activation="softplus",
                                   output_activation="identity"),
    "layer norm": dict(layer_norm=True),
    "projection": dict(proj_size=5),
    "everything": dict(peephole=True, coupled=True, cell_clip=0.5, layer_norm=True, proj_size=5,
                       recurrent_dropout=0.3, zoneout=0.2),
    "recurrent dropout": dict(recurrent_dropout=0.4),
    "zoneout": dict(zoneout=0.3),
    "bidirectional, 2 layers": dict(bidirectional=True, num_layers=2, dropout=0.2),
}


def _make(options, hidden=H):
    return lambda backend: LSTM(IN, hidden, backend=backend, **options)


@pytest.mark.parametrize("name", OPTIONS)
def test_matches_reference_with_lengths(name, device, compare):
    compare(_make(OPTIONS[name]), torch.float64, device, lengths=LENGTHS)


@pytest.mark.parametrize("name", ["plain", "everything", "bidirectional, 2 layers"])
def test_matches_reference_full_length(name, device, compare):
    compare(_make(OPTIONS[name]), torch.float64, device)


@pytest.mark.parametrize("name", ["zoneout", "everything"])
def test_matches_reference_in_evaluation(name, device, compare):
    compare(_make(OPTIONS[name]), torch.float64, device, lengths=LENGTHS, training=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["plain", "everything"])
def test_matches_reference_in_low_precision(name, dtype, device, compare):
    compare(_make(OPTIONS[name]), dtype, device, lengths=LENGTHS)


PLANS = {  # at H=24: two hidden tiles; two chunks of every product; weights held
    "per-step launches, split hidden": common.Plan(16, 16, 16, persistent=False),
    # One hidden tile, so in the interpreter (programs run one after another) the barrier's
    # only program meets it at once; several tiles meet it on a GPU only.
    "persistent, grid barrier": common.Plan(16, 32, 32, persistent=True, sync=True, hold=True),
    "persistent, weights streamed in chunks": common.Plan(16, 32, 16, persistent=True),
}


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("name", ["peephole", "everything"])
def test_every_launch_plan(name, plan, device, monkeypatch, compare):
    options = OPTIONS[name]
    chosen = PLANS[plan]
    if (options.get("layer_norm") or options.get("proj_size")) and chosen.block_h < 24:
        pytest.skip("layer norm and the projection need every hidden unit in one program")
    monkeypatch.setattr(kernels, "plans", lambda cfg, batch, dev: (chosen, chosen))
    compare(_make(options, hidden=24), torch.float64, device, lengths=LENGTHS)


def test_gradcheck_float64(device):
    """The autograd Function's backward against finite differences, every option at once, and
    its second derivative (the reference's, lstmkit.kernels.second_order) too."""
    cfg = cell_config("lstm", 2, 4, peephole=True, cell_clip=2.0, layer_norm=True, proj_size=3,
                     output_activation="softsign")
    steps, batch = 2, 2
    torch.manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)

    shapes = [(16, 2), (16, 3), (16,), (16,), (3, 4), (12,), (16,), (16,), (4,), (4,)]
    masks = StepMasks(torch.full((batch, 3), 1.25, dtype=torch.float64, device=device),
                      tuple(torch.rand(steps, batch, n, dtype=torch.float64, device=device)
                            for n in (3, 4)))
    lengths = torch.tensor([2, 1])

    def fn(x, h0, c0, flat):  # the weights as one tensor: one finite difference for all
        parts = flat.split([torch.Size(s).numel() for s in shapes])
        views = (p.view(s) for p, s in zip(parts, shapes, strict=True))
        w = dict(zip(FAMILY.parameters(cfg), views))
        y, (h, c) = kernels.scan(cfg, w, x, (h0, c0), lengths, masks)
        return y, h, c

    flat = tensor(sum(torch.Size(s).numel() for s in shapes))
    inputs = (tensor(steps, batch, 2), tensor(batch, 3), tensor(batch, 4), flat)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("name", ["plain", "everything"])
def test_chunked_and_stepwise_equal_full(name, device):
    """Streaming: chunks, and single steps, carrying the state equal one call (evaluation)."""
    torch.manual_seed(0)
    layer = LSTM(IN, H, backend="triton", **OPTIONS[name]).to(device, torch.float64).eval()
    x = torch.randn(6, 2, IN, device=device, dtype=torch.float64)
    with torch.no_grad():
        full, full_state = layer(x)
        first, state = layer(x[:2])
        second, state = layer(x[2:5], state)
        steps = []
        for t in range(5, 6):
            y_t, state = layer.step(x[t], state)
            steps.append(y_t[None])
    torch.testing.assert_close(torch.cat([first, second, *steps]), full, rtol=1e-12, atol=1e-12)
    for a, e in zip(state, full_state, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
