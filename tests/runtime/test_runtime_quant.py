"""Int8 weights in the NumPy runtime (lstmkit/runtime/quant.py): a model from
lstmkit.quantize_dynamic, exported, loads and computes what the torch int8 model computes; the
NumPy rounding is torch's bit for bit; a float file quantised in NumPy is the same file."""

import numpy as np
import pytest
import torch

import lstmkit
import lstmkit.runtime
from lstmkit.export import export_runtime
from lstmkit.layers.quantized import quantize_weight as torch_quantize
from lstmkit.runtime.model import CONFIG_KEY
from lstmkit.runtime.quant import dequantize_arrays, quantize_arrays, quantize_weight
from tests.tiny_models import ZOO


@pytest.mark.parametrize("name", ["plain", "charlm", "variant", "layernorm_proj_bidir",
                                  "gru_paper", "gru_zoneout", "rnn_relu_bidir"])
def test_exported_int8_model_equals_the_torch_int8_model(name, tmp_path):
    int8 = lstmkit.quantize_dynamic(ZOO[name](), backend="reference")
    path = tmp_path / "int8.npz"
    export_runtime(int8, path)
    with np.load(path) as archive:
        assert archive["rnn.weight_hh_l0"].dtype == np.int8
    runtime = lstmkit.runtime.load(path)
    gen = torch.Generator().manual_seed(0)
    if int8.config.vocab_size:
        x = torch.randint(0, int8.config.vocab_size, (3, 7), generator=gen)
    else:
        x = torch.randn(3, 7, int8.config.layer.cell.input_size, generator=gen)
    lengths = torch.tensor([7, 2, 5])
    with torch.no_grad():
        want, _ = int8(x, lengths=lengths)
    got, _ = runtime.forward(x.numpy(), lengths=lengths.numpy())
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_numpy_rounding_is_torchs():
    w = (torch.randn(64, 33) * torch.logspace(-4, 2, 64)[:, None]).float()
    w[5] = 0.0
    w[7, 3] = 2.5 * w[7].abs().max() / 127  # exactly between two steps: both round to even
    q_t, s_t = torch_quantize(w)
    q_n, s_n = quantize_weight(w.numpy())
    np.testing.assert_array_equal(q_n, q_t.numpy())
    np.testing.assert_array_equal(s_n, s_t.numpy())


def test_quantize_arrays_round_trip_and_errors():
    model = ZOO["variant"]()
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    int8 = quantize_arrays(arrays)
    torch_int8 = lstmkit.quantize_dynamic(model, backend="reference").state_dict()
    assert set(int8) == set(torch_int8)
    for name, array in int8.items():
        np.testing.assert_array_equal(array, torch_int8[name].numpy())
    back = dequantize_arrays(int8)
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == np.float32
        bound = np.abs(array).max(axis=-1, keepdims=True) / 254 * (1 + 1e-5)
        assert np.all(np.abs(back[name] - array) <= (bound if back[name] is not array else 0))
    del int8["rnn.weight_hh_l0_scale"]
    with pytest.raises(ValueError, match="expected rnn.weight_hh_l0_scale"):
        dequantize_arrays(int8)
    assert CONFIG_KEY not in int8
