"""sLSTM and mLSTM as registered families: configs by key, and a generic RecurrentLayer (the
reference backend's loop over the family's step) that computes what the lstmkit.sLSTM and
lstmkit.mLSTM layers' fast paths (lstmkit.functional) compute, forward and gradients."""

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

import lstmkit
from lstmkit.cells import family_of
from lstmkit.config import LayerConfig, cell_config, cell_from_dict
from lstmkit.layers import RecurrentLayer, layer_from_config

FAST = {
    "slstm": lambda **kw: lstmkit.sLSTM(3, 8, num_heads=2, num_layers=2, dtype=torch.float64,
                                        **kw),
    "mlstm": lambda **kw: lstmkit.mLSTM(3, 8, num_heads=2, num_layers=2, chunk_size=3,
                                        dtype=torch.float64, **kw),
}


@pytest.mark.parametrize("key", ["slstm", "mlstm"])
def test_configs_by_key(key):
    cfg = cell_config(key, 3, 8, num_heads=2, forget="exp")
    assert family_of(cfg).key == key and cfg.head_size == 4
    assert cell_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TypeError, match="hidden_size: expected an int, got str"):
        cell_config(key, 3, "8")
    with pytest.raises(ValueError, match="hidden_size: expected a multiple of num_heads=3"):
        cell_config(key, 3, 8, num_heads=3)


@pytest.mark.parametrize("key", ["slstm", "mlstm"])
def test_the_family_layer_computes_the_fast_layer(key):
    fast = FAST[key]()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # every parameter non-trivial (the sLSTM's R starts at zero)
        for p in fast.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    cell = fast.config.cell
    layer = layer_from_config(LayerConfig(cell, num_layers=2), dtype=torch.float64)
    assert type(layer) is RecurrentLayer and layer.backend().name == "reference"
    layer.load_state_dict(fast.state_dict())  # the same parameter names
    x = torch.randn(7, 3, 3, dtype=torch.float64, generator=g)
    lengths = torch.tensor([7, 4, 1])
    results = []
    for module in (fast, layer):
        xi = x.clone().requires_grad_()
        y, state = module(xi, lengths=lengths)
        loss = probe_loss(y, *state)
        results.append([y, *state, *torch.autograd.grad(loss, [xi, *module.parameters()])])
    for got, want in zip(*results):
        assert_close(got, want)
