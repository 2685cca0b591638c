"""What the cells share: zero states, state checks and the messages for bad input."""

from __future__ import annotations

import pytest
import torch

from lstmkit import GRUCell, LSTMCell, LSTMState, RNNCell

IN, H, B = 3, 4, 2


@pytest.mark.parametrize("cell", [LSTMCell(IN, H, proj_size=2), GRUCell(IN, H), RNNCell(IN, H)],
                         ids=["lstm", "gru", "rnn"])
def test_init_state_is_zeros_of_the_state_shape(cell):
    batched, unbatched = cell.init_state(B), cell.init_state()
    if isinstance(cell, LSTMCell):
        assert isinstance(batched, LSTMState)
        assert batched.h.shape == (B, 2) and batched.c.shape == (B, H)
        assert unbatched.h.shape == (2,) and unbatched.c.shape == (H,)
        assert all(torch.all(t == 0) for t in (*batched, *unbatched))
    else:
        assert batched.shape == (B, H) and unbatched.shape == (H,)
        assert torch.all(batched == 0) and torch.all(unbatched == 0)


def test_lstm_state_detaches_both_tensors():
    h, c = (torch.randn(B, H, requires_grad=True) * 2 for _ in "hc")
    detached = LSTMState(h, c).detach()
    assert isinstance(detached, LSTMState)
    assert not detached.h.requires_grad and not detached.c.requires_grad
    assert torch.equal(detached.h, h) and torch.equal(detached.c, c)


LSTM, GRU = LSTMCell(IN, H), GRUCell(IN, H)

BAD_INPUTS = {
    "rank": (lambda: LSTM(torch.randn(1, B, IN)), ValueError,
             r"input: expected shape \(B, 3\) or \(3,\), got \(1, 2, 3\)"),
    "features": (lambda: GRU(torch.randn(B, IN + 1)), ValueError,
                 r"input: expected shape \(B, 3\) or \(3,\), got \(2, 4\)"),
    "dtype": (lambda: GRU(torch.randn(B, IN, dtype=torch.float64)), TypeError,
              r"input: expected dtype torch.float32.*got torch.float64"),
    "device": (lambda: GRU(torch.randn(B, IN, device="meta")), ValueError,
               r"input: expected device cpu.*got meta"),
    "lstm_state_of_one": (lambda: LSTM(torch.randn(B, IN), (torch.zeros(B, H),)), TypeError,
                          r"state: expected a tuple \(h, c\), got tuple of length 1"),
    "c_shape": (lambda: LSTM(torch.randn(B, IN), (torch.zeros(B, H), torch.zeros(B + 1, H))),
                ValueError, r"state.c: expected shape \(2, 4\), got \(3, 4\)"),
    "unbatched_input_batched_state": (lambda: GRU(torch.randn(IN), torch.zeros(B, H)),
                                      ValueError, r"state: expected shape \(4,\), got \(2, 4\)"),
    "state_not_a_tensor": (lambda: RNNCell(IN, H)(torch.randn(B, IN), [[0.0] * H] * B),
                           TypeError, r"state: expected a torch.Tensor, got list"),
}


@pytest.mark.parametrize("call, error, pattern", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_says_what_was_expected_and_what_came(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
