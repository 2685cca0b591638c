"""lstmkit.xLSTM: block patterns, streaming, lengths, gradcheck."""

import pytest
import torch
from support import probe_loss
from tolerances import assert_close

import lstmkit
from lstmkit.layers.xlstm_blocks import mLSTMBlock, sLSTMBlock


def model(pattern="mLSTM:sLSTM 1:1", blocks=3, **options):
    torch.manual_seed(0)
    config = lstmkit.xLSTMConfig.from_pattern(16, pattern, blocks, mlstm_heads=2, slstm_heads=2,
                                              round_to=8, chunk_size=4, **options)
    m = lstmkit.xLSTM(config, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every tensor non-trivial (the initialisation zeroes some)
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    return m


def flat(state):
    return [t for block in state for t in (block.conv, *block.cell)]


def test_patterns_place_the_blocks():
    config = lstmkit.xLSTMConfig.from_pattern(64, "mLSTM:sLSTM 7:1", 16)
    assert config.slstm_at == (7, 15)
    m = lstmkit.xLSTM(lstmkit.xLSTMConfig(64, 3, slstm_at=(1,)))
    assert [type(b) for b in m.blocks] == [mLSTMBlock, sLSTMBlock, mLSTMBlock]
    assert lstmkit.xLSTMConfig.from_pattern(8, "sLSTM", 2).slstm_at == (0, 1)
    with pytest.raises(ValueError, match="pattern: expected"):
        lstmkit.xLSTMConfig.from_pattern(8, "mLSTM-sLSTM", 2)
    with pytest.raises(ValueError, match="slstm_at: expected positions in 0..1"):
        lstmkit.xLSTMConfig(8, 2, slstm_at=(2,))


def test_steps_and_chunks_equal_one_call():
    m = model(input_size=3)
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    y, state = m(x)
    s, ys = None, []
    for t in range(3):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t[:, None])
    mid, s = m(x[:, 3:7], s)
    rest, s = m(x[:, 7:], s)
    assert_close(torch.cat([*ys, mid, rest], 1), y)
    for a, e in zip(flat(s), flat(state)):
        assert_close(a, e)


def test_padding_never_reaches_outputs_or_states():
    m = model(input_size=3)
    x = torch.randn(3, 9, 3, dtype=torch.float64)
    lengths = torch.tensor([9, 2, 5])
    padded = x.clone()
    for b, n in enumerate(lengths):
        padded[b, n:] = float("nan")
    y, state = m(padded, lengths=lengths)
    for b, n in enumerate(lengths):
        yb, sb = m(x[b:b + 1, :n])
        assert_close(y[b:b + 1, :n], yb)
        assert torch.all(y[b, n:] == 0)
        for a, e in zip(flat(state), flat(sb)):
            assert_close(a[b:b + 1], e)


def test_gradients_are_finite_and_gradcheck_passes():
    m = model(blocks=2)
    x = torch.randn(1, 3, 16, dtype=torch.float64, requires_grad=True)
    y, state = m(x)
    grads = torch.autograd.grad(probe_loss(y), [x, *m.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.autograd.gradcheck(lambda x: m(x)[0], (x,))


def test_forms_agree():
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    y = [model("mLSTM", 2, form=form)(x)[0] for form in ("parallel", "chunkwise", "recurrent")]
    assert_close(y[0], y[2])
    assert_close(y[1], y[2])


def test_bad_input_is_refused():
    m = model()
    with pytest.raises(ValueError, match="input: expected shape"):
        m(torch.zeros(2, 3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="state: expected a tuple of 3 block states"):
        m(torch.zeros(2, 3, 16, dtype=torch.float64), state=())
