"""lstmkit.nxai: NX-AI's xLSTMBlockStack and lstmkit's xLSTM compute the same function for the
same weights, both ways."""

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

import lstmkit
from lstmkit import nxai

pytest.importorskip("xlstm", reason="xlstm is not installed (pip install 'lstmkit[xlstm]')")


def lstmkit_model(pattern, dtype=torch.float64):
    torch.manual_seed(0)
    config = lstmkit.xLSTMConfig.from_pattern(32, pattern, 3, mlstm_heads=2, slstm_heads=4,
                                              round_to=16, chunk_size=8)
    model = lstmkit.xLSTM(config, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.3)
    return model


@pytest.mark.parametrize("pattern", ["mLSTM:sLSTM 1:1", "mLSTM", "sLSTM"])
@pytest.mark.parametrize("backend", ["vanilla", "cuda"])
def test_round_trip_gives_the_same_outputs(pattern, backend):
    model = lstmkit_model(pattern)
    theirs = nxai.to_nxai(model, context_length=24)  # built with the vanilla backend
    if backend == "cuda":  # the cuda layout as a state dict only (no GPU here)
        sd = nxai.to_nxai_state_dict(model.state_dict(), model.config, slstm_backend="cuda")
        back = nxai.from_nxai_state_dict(sd, model.config)
    else:
        back = nxai.from_nxai(theirs).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(back[name], tensor), name
    x = torch.randn(2, 24, 32, dtype=torch.float64, requires_grad=True)
    expected = theirs(x)
    ours, _ = model(x, nxai.nxai_initial_state(model, 2))
    assert_close(ours, expected)
    ga = torch.autograd.grad(probe_loss(ours), x)[0]
    ge = torch.autograd.grad(probe_loss(expected), x)[0]
    assert_close(ga, ge)
    plain, _ = model(x)  # from lstmkit's zero state (m_0 = 0): eps weighs differently
    assert (plain - expected).abs().max() <= 1e-5 * (1 + expected.abs().max())


def test_an_nxai_model_loads_with_its_config():
    import xlstm
    config = xlstm.xLSTMBlockStackConfig(
        mlstm_block=xlstm.mLSTMBlockConfig(mlstm=xlstm.mLSTMLayerConfig(num_heads=2)),
        slstm_block=xlstm.sLSTMBlockConfig(
            slstm=xlstm.sLSTMLayerConfig(backend="vanilla", num_heads=2, dtype="float32"),
            feedforward=xlstm.FeedForwardConfig(proj_factor=1.3)),
        context_length=16, num_blocks=2, embedding_dim=64, slstm_at=[1])
    torch.manual_seed(0)
    stack = xlstm.xLSTMBlockStack(config).double()
    model = nxai.from_nxai(stack)
    assert model.config.slstm_at == (1,) and model.config.mlstm_inner == 128
    x = torch.randn(2, 16, 64, dtype=torch.float64)
    assert_close(model(x, nxai.nxai_initial_state(model, 2))[0], stack(x))


def test_unsupported_options_are_refused():
    from xlstm import mLSTMBlockConfig, mLSTMLayerConfig, xLSTMBlockStackConfig
    config = xLSTMBlockStackConfig(mlstm_block=mLSTMBlockConfig(mlstm=mLSTMLayerConfig()),
                                   context_length=8, num_blocks=1, embedding_dim=32,
                                   add_post_blocks_norm=False)
    with pytest.raises(ValueError, match="add_post_blocks_norm: expected True"):
        nxai.config_from_nxai(config)
