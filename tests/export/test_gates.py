import numpy as np
import pytest

from lstmkit.export.gates import (
    GRU_TO_ONNX,
    LSTM_TO_ONNX,
    ONNX_GRU,
    ONNX_LSTM,
    ONNX_PEEPHOLE,
    PEEPHOLE_TO_ONNX,
    TORCH_GRU,
    TORCH_LSTM,
    TORCH_PEEPHOLE,
    inverse,
    permute,
)


@pytest.mark.parametrize("blocks, source, target", [
    (LSTM_TO_ONNX, TORCH_LSTM, ONNX_LSTM),
    (GRU_TO_ONNX, TORCH_GRU, ONNX_GRU),
    (PEEPHOLE_TO_ONNX, TORCH_PEEPHOLE, ONNX_PEEPHOLE),
])
def test_each_gate_block_lands_under_its_own_name_and_round_trips(blocks, source, target):
    hidden = 3
    # Row r of gate k holds 10*k + r, so every block is recognisable after the move.
    array = np.concatenate([10 * k + np.arange(hidden) for k in range(len(source))])
    moved = permute(array, blocks)
    for position, gate in enumerate(target):
        np.testing.assert_array_equal(moved[position * hidden:(position + 1) * hidden],
                                      10 * source.index(gate) + np.arange(hidden))
    np.testing.assert_array_equal(permute(moved, inverse(blocks)), array)


def test_known_layouts():
    assert LSTM_TO_ONNX == (0, 3, 1, 2)  # i, f, g, o -> i, o, f, c
    assert GRU_TO_ONNX == (1, 0, 2)  # r, z, n -> z, r, h
    assert PEEPHOLE_TO_ONNX == (0, 2, 1)  # i, f, o -> i, o, f


def test_permute_along_columns():
    weight = np.arange(12).reshape(2, 6)
    np.testing.assert_array_equal(permute(weight, (1, 0, 2), axis=1),
                                  weight[:, [2, 3, 0, 1, 4, 5]])
