"""sLSTM and mLSTM as registered families: configs by key, and a generic RecurrentLayer (the
reference backend's loop over the family's step) that computes what the lstmkit.sLSTM and
lstmkit.mLSTM layers' fast paths (lstmkit.functional) compute, forward and gradients."""

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

import lstmkit
from lstmkit import kernels
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
    """The reference backend's loop over the family's step, the xlstm backend and the
    lstmkit.sLSTM / mLSTM layer: one function, with every parameter non-trivial (the table's
    layers keep the sLSTM's initial R = 0)."""
    fast = FAST[key]()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in fast.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    layers = [fast]
    for backend in ("reference", "xlstm"):
        config = LayerConfig(fast.config.cell, num_layers=2, backend=backend)
        layer = layer_from_config(config, dtype=torch.float64)
        assert type(layer) is RecurrentLayer and layer.backend().name == backend
        layer.load_state_dict(fast.state_dict())  # the same parameter names
        layers.append(layer)
    x = torch.randn(7, 3, 3, dtype=torch.float64, generator=g)
    lengths = torch.tensor([7, 4, 1])
    results = []
    for module in layers:
        xi = x.clone().requires_grad_()
        y, state = module(xi, lengths=lengths)
        loss = probe_loss(y, *state)
        results.append([y, *state, *torch.autograd.grad(loss, [xi, *module.parameters()])])
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            assert_close(a, b)


@pytest.mark.parametrize("key", ["slstm", "mlstm"])
def test_auto_takes_the_xlstm_backend_unless_it_refuses(key):
    cell = cell_config(key, 3, 8, num_heads=2)
    assert layer_from_config(LayerConfig(cell)).backend().name == "xlstm"
    layer = layer_from_config(LayerConfig(cell, zoneout=0.1))
    assert layer.backend().name == "reference"
    reason = kernels.get("xlstm").supports(layer.config, torch.device("cpu"), torch.float32)
    assert reason == "does not declare the layer feature zoneout"
    lstm = LayerConfig(cell_config("lstm", 3, 8))
    assert "does not compute the 'lstm' family" in kernels.get("xlstm").supports(
        lstm, torch.device("cpu"), torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("key", ["slstm", "mlstm"])
def test_the_xlstm_backend_on_cuda_computes_the_reference(key):
    """The backend declares CUDA: there it must give the CPU reference's numbers (float64)."""
    cell = cell_config(key, 3, 8, num_heads=2)
    torch.manual_seed(0)
    ref = layer_from_config(LayerConfig(cell, backend="reference"), dtype=torch.float64)
    gpu = layer_from_config(LayerConfig(cell, backend="xlstm"), dtype=torch.float64,
                            device="cuda")
    gpu.load_state_dict(ref.state_dict())
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 3])
    results = []
    for module in (ref, gpu):
        xi = x.to(module.weight_ih_l0.device).requires_grad_()
        y, state = module(xi, lengths=lengths)
        grads = torch.autograd.grad(probe_loss(y, *state), [xi, *module.parameters()])
        results.append([t.cpu() for t in (y, *state, *grads)])
    for got, want in zip(results[1], results[0]):
        assert_close(got, want)
