"""The cpu backend in bfloat16 and float16 (precision.h): the dtypes of what comes back, a
longer sequence than the conformance table's against the float64 truth, and the AVX-512 BF16
path against the fallback where the CPU has it."""

import os

import pytest
import torch
from support import cpu_flags, cpu_scan_args, parts, probe_loss, python_output
from tolerances import assert_close, assert_conforms

import lstmkit
from lstmkit import kernels
from lstmkit.cells.base import ANY
from lstmkit.kernels import cpu, reference
from lstmkit.kernels.contract import Backend, Declaration

LOW = (torch.bfloat16, torch.float16)
LAYERS = {
    "lstm": (lstmkit.LSTM, {}),
    "lstm, every option": (lstmkit.LSTM, dict(peephole=True, proj_size=5, layer_norm=True,
                                              zoneout=0.1)),
    "gru": (lstmkit.GRU, {}),
    "gru, reset before": (lstmkit.GRU, dict(reset_after=False, recurrent_dropout=0.2)),
    "rnn": (lstmkit.RNN, dict(nonlinearity="relu")),
}
ids = [str(d).replace("torch.", "") for d in LOW]


def _layer(name, backend, dtype, like=None):
    cls, options = LAYERS[name]
    torch.manual_seed(0)
    layer = cls(6, 12, backend=backend, **options)
    if like is not None:
        layer.load_state_dict(like.state_dict())
    return layer.to(dtype)


def _run(layer, x, lengths):
    """[y, final state..., gradients of x and every parameter] under one dropout seed."""
    x = x.detach().to(layer.weight_ih_l0.dtype).requires_grad_()
    torch.manual_seed(1)
    y, state = layer(x, lengths=lengths)
    grads = torch.autograd.grad(probe_loss(y, *parts(state)), [x, *layer.parameters()])
    return [t.detach() for t in (y, *parts(state), *grads)]


def test_declares_16_bit():
    config = lstmkit.LSTM(3, 4, layer_norm=True).config
    for dtype in LOW:
        assert cpu.BACKEND.supports(config, torch.device("cpu"), dtype, True) is None


@pytest.mark.parametrize("dtype", LOW, ids=ids)
def test_auto_takes_it_in_16_bits_even_where_torch_computes_the_layer(dtype):
    config = lstmkit.LSTM(3, 4).config
    kernels.resolve.cache_clear()
    assert kernels.resolve("auto", config, torch.device("cpu"), dtype, True).name == "cpu"
    assert kernels.resolve("auto", config, torch.device("cpu"), torch.float32, True).name \
        == "native"


@pytest.mark.parametrize("dtype", LOW, ids=ids)
@pytest.mark.parametrize("name", LAYERS)
def test_results_come_back_in_the_tensors_dtypes(name, dtype):
    layer = _layer(name, "cpu", dtype).train()
    x = torch.randn(7, 2, 6, dtype=dtype, requires_grad=True)
    y, state = layer(x)
    assert y.dtype == dtype and all(s.dtype == dtype for s in parts(state))
    probe_loss(y, *parts(state)).backward()
    assert x.grad.dtype == dtype
    assert all(p.grad is not None and p.grad.dtype == dtype for p in layer.parameters())


@pytest.mark.parametrize("dtype", LOW, ids=ids)
@pytest.mark.parametrize("name", LAYERS)
def test_a_longer_sequence_conforms(name, dtype, monkeypatch):
    """T=40 with lengths, training: within the 16-bit row of the float64 truth on the same
    16-bit weights and inputs, against the baseline of plain PyTorch in ``dtype``."""
    def bernoulli(like, shape, p):  # the same 0/1 masks in every dtype
        return (torch.rand(shape, device=like.device) < p).to(like.dtype)

    op_by_op = Backend("op_by_op", Declaration(families=ANY), scan=reference.scan_in_dtype)
    get = kernels.get
    monkeypatch.setattr(lstmkit.layers.stack, "_bernoulli", bernoulli)
    monkeypatch.setattr(kernels, "get", lambda n: op_by_op if n == "op_by_op" else get(n))
    kernels.resolve.cache_clear()
    steps = 40
    ours = _layer(name, "cpu", dtype)
    x = torch.randn(steps, 3, 6).to(dtype)
    lengths = torch.tensor([steps, 31, 9])
    truth = _run(_layer(name, "reference", torch.float64, like=ours), x, lengths)
    plain = _run(_layer(name, "op_by_op", dtype, like=ours), x, lengths)
    for k, (got, ideal, low) in enumerate(zip(_run(ours, x, lengths), truth, plain)):
        assert_conforms(got, ideal, low, dtype, steps, f"part {k}")
    kernels.resolve.cache_clear()


CONTRACTING = {
    "lstm": (lstmkit.LSTM, {}),
    "lstm, peephole proj cell_clip": (lstmkit.LSTM, dict(peephole=True, proj_size=5,
                                                         cell_clip=1.0)),
    "lstm coupled, 2 layers bidirectional": (lstmkit.LSTM, dict(coupled=True, num_layers=2,
                                                                bidirectional=True)),
    "gru": (lstmkit.GRU, {}),
    "gru, reset before": (lstmkit.GRU, dict(reset_after=False)),
    "rnn": (lstmkit.RNN, {}),
    "rnn relu": (lstmkit.RNN, dict(nonlinearity="relu")),
}
"""Every family and the LSTM's options but layer_norm, whose default initialisation is
expanding (docs/equations.md, "16-bit arithmetic"): no fixed tolerance holds over T for it."""


@pytest.mark.parametrize("dtype", LOW, ids=ids)
@pytest.mark.parametrize("name", CONTRACTING)
def test_16_bits_stay_within_the_tolerance_of_float32(name, dtype):
    """The documented promise: a float32 layer cast to 16 bits gives, over 150 steps, outputs
    and a final state within tests/tolerances.py's row for the dtype of the float32 layer's."""
    cls, options = CONTRACTING[name]
    torch.manual_seed(0)
    wide = cls(16, 32, backend="cpu", **options)
    narrow = cls(16, 32, backend="cpu", dtype=dtype, **options)
    narrow.load_state_dict(wide.state_dict())  # rounds each weight once
    x = torch.randn(150, 4, 16)
    with torch.no_grad():
        expected, got = wide(x), narrow(x.to(dtype))
    for k, (g, e) in enumerate(zip((got[0], *parts(got[1])), (expected[0], *parts(expected[1])))):
        assert g.dtype == dtype
        assert_close(g.float(), e, dtype, f"{name}, part {k}")


def test_bf16_dot_runs_wherever_the_cpu_has_avx512_bf16():
    """The path is on wherever the CPU has AVX-512 BF16 and oneDNN may use it, so that
    test_bf16_dot_equals_the_fallback cannot skip on a CPU that runs it; off while torch's
    oneDNN is disabled, where brgemm would refuse bfloat16."""
    if "ONEDNN_MAX_CPU_ISA" in os.environ or "DNNL_MAX_CPU_ISA" in os.environ:
        pytest.skip("this run sets oneDNN's instruction set itself")
    assert cpu.bf16_dot_active() == ("avx512_bf16" in cpu_flags())
    enabled, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, False
    try:
        assert not cpu.bf16_dot_active()
        layer = _layer("lstm", "cpu", torch.bfloat16)
        layer(torch.randn(3, 2, 6).to(torch.bfloat16))  # the fallback, which needs no oneDNN
    finally:
        torch.backends.mkldnn.enabled = enabled


def test_bf16_dot_is_off_where_onednn_is_held_below_avx512():
    """With oneDNN held to AVX2, brgemm refuses bfloat16: the start-up probe sees it, and a
    bfloat16 scan takes the fallback instead of failing."""
    script = ("import torch, lstmkit; from lstmkit.kernels import cpu; "
              "y, _ = lstmkit.LSTM(4, 8, backend='cpu').to(torch.bfloat16)("
              "torch.ones(3, 2, 4, dtype=torch.bfloat16)); "
              "print(cpu.bf16_dot_active(), bool(y.isfinite().all()))")
    out = python_output(script, env={"ONEDNN_MAX_CPU_ISA": "AVX2"}).split()
    assert out[-2:] == ["False", "True"]


def test_bf16_dot_equals_the_fallback():
    """Where the CPU has AVX-512 BF16, its products equal the fallback's to float32 summation
    order: the outputs and gradients within two bfloat16 ulps of their largest value."""
    if not cpu.bf16_dot_active():
        pytest.skip("this CPU has no AVX-512 BF16: the fallback is the only path it runs")
    runs = []
    try:
        for wanted in (False, True):
            cpu.use_bf16_dot(wanted)
            layer = _layer("lstm, every option", "cpu", torch.bfloat16)
            x = torch.randn(30, 33, 6).to(torch.bfloat16)
            runs.append(_run(layer, x, None))
    finally:
        cpu.use_bf16_dot(True)
    eps = torch.finfo(torch.bfloat16).eps
    for k, (fallback, dot) in enumerate(zip(*runs)):
        scale = float(fallback.abs().max())
        error = float((dot.double() - fallback.double()).abs().max())
        assert error <= 2 * eps * scale, f"part {k}: {error:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("name", ["lstm, every option", "gru, reset before", "rnn"])
def test_the_custom_op_in_bf16(name):
    """The fake kernel's shapes and dtypes (saved tensors in float32) and the registered
    autograd, as torch.compile and torch.export see them."""
    layer = _layer(name, "cpu", torch.bfloat16)
    args = cpu_scan_args(layer, 5, 2)
    torch.library.opcheck(cpu.scan_op, args, test_utils=("test_schema", "test_faketensor",
                                                         "test_autograd_registration"))
