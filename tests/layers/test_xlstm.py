"""lstmkit.sLSTM and lstmkit.mLSTM layers: the reference step, stacking, lengths, streaming."""

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

import lstmkit
from lstmkit.cells import mlstm as mlstm_cell
from lstmkit.cells import slstm as slstm_cell

LAYERS = {
    "slstm": lambda **kw: lstmkit.sLSTM(3, 8, num_heads=2, dtype=torch.float64, **kw),
    "mlstm": lambda **kw: lstmkit.mLSTM(3, 8, num_heads=2, dtype=torch.float64, chunk_size=4,
                                        **kw),
}


def randomise(layer):
    """Every parameter non-trivial (the initialisation zeroes the recurrent matrix)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return layer


def reference(layer, x):
    """The layer by its cell's reference step, one layer and one step at a time; x (T, B, I)."""
    cfg, family = layer.config, layer.family
    states = []
    for k in range(layer.num_layers):
        c = cfg.layer_cell(k)
        w = layer.layer_weights(k)
        s = family.zero_state(c, (x.shape[1],), x)
        ys = []
        for t in range(x.shape[0]):
            if family is slstm_cell:
                s = slstm_cell.step(slstm_cell.input_term(x[t], w, c), s, w, c)
                ys.append(s.h)
            else:
                h, s = mlstm_cell.cell_step(mlstm_cell.input_term(x[t], w, c), s, w, c)
                ys.append(h)
        x = torch.stack(ys)
        states.append(s)
    return x, type(states[0])(*(torch.stack(p) for p in zip(*states)))


CASES = [(kind, options) for kind, family in (("slstm", slstm_cell), ("mlstm", mlstm_cell))
         for options in family.OPTION_SETS]


@pytest.mark.parametrize("kind, options", CASES)
def test_layer_is_its_cells_reference_step(kind, options):
    layer = randomise(LAYERS[kind](num_layers=2, **options))
    x = torch.randn(7, 3, 3, dtype=torch.float64, requires_grad=True)
    y, state = layer(x)
    y_ref, state_ref = reference(layer, x)
    assert_close(y, y_ref)
    for a, e in zip(state, state_ref):
        assert_close(a, e)
    params = list(layer.parameters())
    for a, e in zip(torch.autograd.grad(probe_loss(y, *state), [x, *params]),
                    torch.autograd.grad(probe_loss(y_ref, *state_ref), [x, *params])):
        assert_close(a, e)


@pytest.mark.parametrize("kind", LAYERS)
def test_steps_and_chunks_equal_one_call(kind):
    layer = randomise(LAYERS[kind](num_layers=2, batch_first=True))
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    y, state = layer(x)
    s, ys = None, []
    for t in range(4):
        y_t, s = layer.step(x[:, t], s)
        ys.append(y_t[:, None])
    rest, s = layer(x[:, 4:], s)
    assert_close(torch.cat([*ys, rest], 1), y)
    for a, e in zip(s, state):
        assert_close(a, e)


@pytest.mark.parametrize("kind", LAYERS)
def test_padding_never_reaches_outputs_or_states(kind):
    layer = randomise(LAYERS[kind](num_layers=2))
    x = torch.randn(8, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([8, 3, 1])
    padded = x.clone()
    for b, n in enumerate(lengths):
        padded[n:, b] = float("nan")
    padded.requires_grad_()
    y, state = layer(padded, lengths=lengths)
    grad = torch.autograd.grad(probe_loss(y, *state), padded)[0]
    assert torch.isfinite(grad).all()
    for b, n in enumerate(lengths):
        yb, sb = layer(x[:n, b:b + 1])
        assert_close(y[:n, b:b + 1], yb)
        assert torch.all(y[n:, b] == 0)
        for a, e in zip(state, sb):
            assert_close(a[:, b:b + 1], e)
        assert torch.all(grad[n:, b] == 0)


@pytest.mark.parametrize("kind", LAYERS)
def test_init_state_and_bad_input(kind):
    layer = LAYERS[kind](num_layers=2)
    state = layer.init_state(5)
    assert all(t.shape[:2] == (2, 5) for t in state)
    with pytest.raises(ValueError, match="input: expected shape"):
        layer(torch.zeros(4, 2, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="input: expected dtype"):
        layer(torch.zeros(4, 2, 3))
    with pytest.raises(ValueError, match="lengths: expected values in"):
        layer(torch.zeros(4, 2, 3, dtype=torch.float64), lengths=torch.tensor([5, 1]))
    with pytest.raises(ValueError, match="expected shape"):
        layer(torch.zeros(4, 2, 3, dtype=torch.float64), layer.init_state(3))
    with pytest.raises(ValueError, match="batch_size"):
        layer.init_state(-1)


def test_mlstm_forms_agree_in_the_layer():
    x = torch.randn(10, 2, 3, dtype=torch.float64)
    outputs = []
    for form in ("parallel", "chunkwise", "recurrent"):
        torch.manual_seed(0)
        layer = lstmkit.mLSTM(3, 8, num_heads=2, form=form, chunk_size=3, dtype=torch.float64)
        outputs.append(layer(x)[0])
    assert_close(outputs[0], outputs[2])
    assert_close(outputs[1], outputs[2])


def test_config_errors():
    with pytest.raises(ValueError, match="hidden_size: expected a multiple of num_heads"):
        lstmkit.sLSTM(3, 7, num_heads=2)
    with pytest.raises(ValueError, match="form: expected one of"):
        lstmkit.mLSTM(3, 8, form="fast")
    with pytest.raises(ValueError, match="stabilizer: expected one of"):
        lstmkit.sLSTM(3, 8, stabilizer="max")
