"""The fused LSTM (lstmkit/kernels/cpu/lstm.h, lstm_backward.h) against the reference: outputs,
final states and the gradients of the input, the initial state and every parameter, for every
cell option, with lengths, masks, stacking and both directions, in float64 and float32."""

import copy

import pytest
import torch
from support import cpu_scan_args, parts, probe_loss
from tolerances import TOLERANCES

from lstmkit import LSTM
from lstmkit.activations import ACTIVATIONS
from lstmkit.cells.lstm import FAMILY
from lstmkit.config import cell_config
from lstmkit.kernels import cpu
from lstmkit.kernels.contract import StepMasks

IN, H = 3, 6  # input and hidden sizes
LENGTHS = torch.tensor([5, 1, 3])

OPTIONS = {
    "plain": {},
    "no bias": dict(bias=False),
    "peephole": dict(peephole=True),
    "coupled": dict(coupled=True),
    "cell clip": dict(cell_clip=0.4),
    "layer norm": dict(layer_norm=True),
    "layer norm, peephole, projection": dict(layer_norm=True, peephole=True, proj_size=4),
    "projection": dict(proj_size=4),
    "no input gate": dict(input_gate=False),
    "no forget gate, peephole": dict(forget_gate=False, peephole=True),
    "no output gate, layer norm": dict(output_gate=False, layer_norm=True),
    **{f"gate {a}": dict(gate_activation=a) for a in ACTIVATIONS if a != "sigmoid"},
    **{f"cell {a}": dict(cell_activation=a) for a in ACTIVATIONS if a != "tanh"},
    **{f"output {a}": dict(output_activation=a) for a in ACTIVATIONS if a != "tanh"},
    "everything": dict(peephole=True, coupled=True, cell_clip=0.5, layer_norm=True, proj_size=4,
                       gate_activation="hard_sigmoid", output_activation="softsign",
                       bias=False),
}
LAYERS = {  # what the layer around the cell adds
    "recurrent dropout": dict(recurrent_dropout=0.4),
    "zoneout": dict(zoneout=0.3),
    "zoneout, dropout, peephole, layer norm": dict(zoneout=0.2, recurrent_dropout=0.3,
                                                   peephole=True, layer_norm=True, proj_size=4),
    "bidirectional, 2 layers": dict(bidirectional=True, num_layers=2, dropout=0.2),
    "bidirectional, 2 layers, variant": dict(bidirectional=True, num_layers=2, coupled=True,
                                             proj_size=4, zoneout=0.1),
    "batch first": dict(batch_first=True, peephole=True),
}


def _make(options, hidden=H, inputs=IN):
    return lambda backend: LSTM(inputs, hidden, backend=backend, **options)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", OPTIONS)
def test_every_option_matches_reference(name, dtype, compare):
    compare(_make(OPTIONS[name]), dtype)


@pytest.mark.parametrize("name", ["plain", "everything", "layer norm, peephole, projection",
                                  "no forget gate, peephole", "output softplus"])
def test_lengths(name, compare):
    compare(_make(OPTIONS[name]), lengths=LENGTHS)


@pytest.mark.parametrize("name", LAYERS)
def test_masks_stacking_and_directions(name, compare):
    compare(_make(LAYERS[name]), lengths=LENGTHS)
    compare(_make(LAYERS[name]), torch.float32)


@pytest.mark.parametrize("name", ["plain", "everything", "zoneout"])
def test_inference_without_saving(name, compare):
    """No gradient wanted: the kernels keep two state rows and a chunk of input terms only."""
    options = {**OPTIONS, **LAYERS}[name]
    compare(_make(options), lengths=LENGTHS, grad=False)
    compare(_make(options), training=False)


def _errors(layer, reference, x, x_layer=None):
    """Largest error of every output and gradient of ``layer`` (any dtype; on ``x_layer`` if
    given, else ``x``) relative to the largest value of the float64 ``reference``'s on ``x``;
    the loss is taken in float64 on both."""
    results = []
    for m, inputs in ((layer, x if x_layer is None else x_layer), (reference, x)):
        xx = inputs.to(next(m.parameters()).dtype).requires_grad_()
        y, state = m(xx)
        loss = probe_loss(y.double(), *(s.double() for s in parts(state)))
        results.append([y, *torch.autograd.grad(loss, [xx, *m.parameters()])])
    return [float((a.detach().double() - e.detach()).abs().max() / e.detach().abs().max())
            for a, e in zip(*results)]


def _one_ulp_perturbed(exact, x):
    """A float64 copy of ``exact`` and of ``x`` with every value moved by one float32 ulp
    (relative), up or down at random: (layer, x) for :func:`_errors`'s ``layer, x_layer``."""
    generator = torch.Generator().manual_seed(1)
    eps = torch.finfo(torch.float32).eps

    def nudge(t):
        signs = torch.randint(0, 2, t.shape, generator=generator, dtype=t.dtype) * 2 - 1
        return t * (1 + eps * signs)

    layer = copy.deepcopy(exact)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(nudge(p))
    return layer, nudge(x)


@pytest.mark.parametrize("options", [{}, dict(peephole=True, layer_norm=True, proj_size=33)],
                         ids=["plain", "peephole, layer norm, projection"])
@pytest.mark.parametrize("steps, batch, inputs, hidden", [(40, 9, 520, 70), (30, 1, 40, 70)])
def test_long_sequences_and_wide_layers(steps, batch, inputs, hidden, options, compare):
    """Sizes past every block of matmul.h (256-row and 256-wide tiles, 256- and 512-deep sums,
    64-wide panels with a ragged last one), of the input chunks, and batch 1 (the one-row
    product). A weight gradient here sums hundreds of terms that cancel, so errors are measured
    against each tensor's largest value: float64 within the table's rtol of it; float32 within
    32 times what a one-ulp float32 perturbation of the input and weights moves the float64
    result (about 3 times is measured here). That scale belongs to the problem, not to a BLAS:
    bounding by another float32 computation's error failed on Intel machines, where MKL's
    AVX-512 path rounds the float32 reference differently."""
    make = _make(options, hidden=hidden, inputs=inputs)
    torch.manual_seed(0)
    exact = make("reference").double()
    x = torch.randn(steps, batch, inputs, dtype=torch.float64)
    layers = {}
    for backend, dtype in (("cpu", torch.float64), ("cpu", torch.float32)):
        layers[backend, dtype] = make(backend).to(dtype)
        layers[backend, dtype].load_state_dict(exact.state_dict())
    assert max(_errors(layers["cpu", torch.float64], exact, x)) <= TOLERANCES[torch.float64]["rtol"]
    ours = _errors(layers["cpu", torch.float32], exact, x)
    nudged, x_nudged = _one_ulp_perturbed(exact, x)
    scale = _errors(nudged, exact, x, x_layer=x_nudged)
    eps = torch.finfo(torch.float32).eps
    assert all(a <= 32 * d + 4 * eps for a, d in zip(ours, scale)), (ours, scale)
    compare(make, steps=steps, batch=batch, training=False, grad=False)


@pytest.mark.parametrize("steps", [80, 88], ids=["one block", "three blocks"])
def test_layer_norm_saves_its_terms_in_one_block_up_to_its_bound(steps):
    """With layer norm the forward saves the pre-activations and both normalised terms in one
    block while they take at most 32 MiB (lstm.h's kJointBytes), else in three: 3 x T x 64 x
    256 float64 values are 31.5 MB at T=80 and 34.6 MB at T=88. The fake kernel shapes the
    saved tensors as the kernel does on both sides, and the outputs and gradients match the
    reference's (relative to each tensor's largest value, as the batch of 64 sums terms that
    cancel)."""
    torch.manual_seed(0)
    make = _make(dict(layer_norm=True), hidden=64, inputs=2)
    reference, layer = make("reference").double(), make("cpu").double()
    layer.load_state_dict(reference.state_dict())
    args = cpu_scan_args(layer, steps, 64)
    assert cpu.scan_op(*args)[3].shape[0] == (3 if steps == 80 else 1)  # saved[0], Gates
    torch.library.opcheck(cpu.scan_op, args, test_utils=("test_faketensor",))
    x = torch.randn(steps, 64, 2, dtype=torch.float64)
    assert max(_errors(layer, reference, x)) <= TOLERANCES[torch.float64]["rtol"]


def test_gradcheck_float64():
    """The autograd Function's backward against finite differences, with every option that has
    parameters, the masks and lengths."""
    cfg = cell_config("lstm", 2, 4, peephole=True, cell_clip=2.0, layer_norm=True, proj_size=3,
                     output_activation="softsign")
    steps, batch = 3, 2
    shapes = [(16, 2), (16, 3), (16,), (16,), (3, 4), (12,), (16,), (16,), (4,), (4,)]
    masks = StepMasks(torch.full((batch, 3), 1.25, dtype=torch.float64),
                      tuple(torch.rand(steps, batch, n, dtype=torch.float64) for n in (3, 4)))

    def fn(x, h0, c0, flat):  # the weights as one tensor: one finite difference for all
        parts = flat.split([torch.Size(s).numel() for s in shapes])
        w = dict(zip(FAMILY.parameters(cfg), (p.view(s) for p, s in zip(parts, shapes))))
        y, (h, c) = cpu.scan(FAMILY, cfg, w, x, (h0, c0), torch.tensor([3, 2]), masks)
        return y, h, c

    def tensor(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    flat = tensor(sum(torch.Size(s).numel() for s in shapes))
    inputs = (tensor(steps, batch, 2), tensor(batch, 3), tensor(batch, 4), flat)
    assert torch.autograd.gradcheck(fn, inputs)
