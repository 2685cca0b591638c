"""SequenceModel on an xLSTM backbone: tokens or floats in, pooling, streaming, checkpoints."""

import torch
from tolerances import assert_close

import lstmkit
from lstmkit.checkpoint import load, save
from lstmkit.models import ModelConfig, SequenceModel


def model(pooling="none", vocab=7):
    torch.manual_seed(0)
    backbone = lstmkit.xLSTMConfig.from_pattern(16, "mLSTM:sLSTM 1:1", 2, mlstm_heads=2,
                                                slstm_heads=2, round_to=8)
    return SequenceModel(ModelConfig(backbone, 5, vocab, pooling)).double()


def test_steps_equal_one_call_and_pooling_reads_the_last_valid_step():
    m = model().eval()
    x = torch.randint(0, 7, (3, 6))
    y, _ = m(x)
    state, steps = m.init_state(3), []
    for t in range(6):
        y_t, state = m.step(x[:, t], state)
        steps.append(y_t)
    assert_close(torch.stack(steps, 1), y)
    last = model("last").eval()
    lengths = torch.tensor([6, 2, 4])
    pooled, _ = last(x, lengths=lengths)
    for b, n in enumerate(lengths):
        assert_close(pooled[b], last(x[b:b + 1, :n])[0][0])


def test_checkpoint_round_trip(tmp_path):
    m = model()
    save(tmp_path / "m.safetensors", m)
    back = load(tmp_path / "m.safetensors")
    assert back.config == m.config
    x = torch.randint(0, 7, (2, 5))
    assert_close(back.double()(x)[0], m(x)[0])
