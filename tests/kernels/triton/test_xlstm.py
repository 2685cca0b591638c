"""The triton_xlstm backend's entry (lstmkit/kernels/triton/xlstm.py): what it declares and
refuses, how "auto" treats it, and layers of both families run through it in 16 bits against
the float64 reference (the float32 cases are in the conformance table)."""

import pytest
import torch
from support import parts, probe_loss

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

from lstmkit import kernels  # noqa: E402
from lstmkit.config import LayerConfig, cell_config  # noqa: E402
from lstmkit.kernels.triton import interpreting  # noqa: E402
from lstmkit.kernels.triton import xlstm as backend  # noqa: E402
from lstmkit.layers import layer_from_config  # noqa: E402

CPU = torch.device("cpu")
SLSTM = LayerConfig(cell_config("slstm", 3, 8, num_heads=2))
MLSTM = LayerConfig(cell_config("mlstm", 3, 8, num_heads=2))


@pytest.mark.parametrize("config", [SLSTM, MLSTM])
def test_auto_picks_it_only_on_cuda(config, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.BACKEND.supports(config, CPU, torch.float32, True) is None
    assert kernels.resolve("auto", config, CPU, torch.float32, True).name != "triton_xlstm"
    assert kernels.resolve("triton_xlstm", config, CPU, torch.float32, True).name == \
        "triton_xlstm"
    reasons = dict(kernels.explain(config, CPU))
    assert "auto picks it only on cuda devices" in reasons["triton_xlstm"]


@pytest.mark.parametrize("config, words", [
    (LayerConfig(cell_config("lstm", 3, 8)), "does not compute the 'lstm' family"),
    (LayerConfig(cell_config("slstm", 3, 8), zoneout=0.1), "layer feature zoneout"),
    (LayerConfig(cell_config("mlstm", 3, 8), recurrent_dropout=0.1),
     "layer feature recurrent_dropout"),
    (LayerConfig(cell_config("slstm", 3, 514, num_heads=2)), "hidden_size / num_heads <= 256"),
])
def test_reasons(config, words, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert words in backend.BACKEND.supports(config, CPU, torch.float32, True)


def test_the_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA" in backend.BACKEND.supports(SLSTM, CPU, torch.float32, True)


def test_complex_inputs_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "got complex64" in backend.BACKEND.supports(MLSTM, CPU, torch.complex64, True)


def _run(layer, x, lengths):
    x = x.detach().requires_grad_()
    y, state = layer(x, lengths=lengths)
    grads = torch.autograd.grad(probe_loss(y, *parts(state)), [x, *layer.parameters()])
    return [t.detach() for t in (y, *parts(state), *grads)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("config", [SLSTM, MLSTM], ids=["slstm", "mlstm"])
def test_16_bit_layers_stay_within_the_16_bit_reference_error(config, dtype, device):
    """A 16-bit layer on the kernels (float32 state) is at most twice as far from the float64
    reference as the 16-bit reference (which rounds every operation) is, plus the table's atol."""
    if dtype == torch.bfloat16 and interpreting():
        pytest.skip("Triton's interpreter computes bfloat16 arithmetic wrongly (numpy has no "
                    "bfloat16); bfloat16 is checked on a GPU (benchmarks/triton_gpu.py --tests)")
    from dataclasses import replace

    from tolerances import tolerance

    torch.manual_seed(0)
    exact = layer_from_config(config, dtype=torch.float64).to(device)
    low = layer_from_config(config, dtype=dtype).to(device)
    ours = layer_from_config(replace(config, backend="triton_xlstm"), dtype=dtype).to(device)
    for layer in (low, ours):
        layer.load_state_dict({k: v.to(dtype) for k, v in exact.state_dict().items()})
    x = torch.randn(6, 3, 3, dtype=torch.float64, device=device)
    lengths = torch.tensor([6, 2, 5])
    truth = _run(exact, x, lengths)
    theirs = _run(low, x.to(dtype), lengths)
    actual = _run(ours, x.to(dtype), lengths)
    for k, (a, b, e) in enumerate(zip(actual, theirs, truth, strict=True)):
        assert a.dtype == dtype
        error, reference = (float((v.double() - e).abs().max()) for v in (a, b))
        assert error <= 2 * reference + tolerance(dtype)["atol"], \
            f"part {k}: {error:.2e} from float64, the {dtype} reference {reference:.2e}"
