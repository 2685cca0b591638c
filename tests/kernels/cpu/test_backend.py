"""The cpu backend's entry points (lstmkit/kernels/cpu/__init__.py): what it runs, where "auto"
takes it, its results across thread counts, and its streaming."""

import pytest
import torch
from support import parts
from tolerances import assert_close

import lstmkit
from lstmkit import kernels
from lstmkit.activations import ACTIVATIONS
from lstmkit.config import LayerConfig, cell_config
from lstmkit.kernels import cpu

CPU = torch.device("cpu")
PLAIN = {mode: LayerConfig(cell_config(mode, 3, 4)) for mode in ("lstm", "gru", "rnn")}
VARIANTS = [LayerConfig(cell_config("lstm", 3, 4, layer_norm=True)),
            LayerConfig(cell_config("gru", 3, 4, reset_after=False)),
            LayerConfig(cell_config("lstm", 3, 4), zoneout=0.1)]


@pytest.fixture(autouse=True)
def _fresh_resolution():
    kernels.resolve.cache_clear()
    yield
    kernels.resolve.cache_clear()


def test_every_activation_has_a_kernel():
    assert sorted(cpu.KERNEL_ACTIVATIONS) == sorted(ACTIVATIONS)


def test_supports_the_cpu_in_float_dtypes_only():
    config, supports = VARIANTS[0], cpu.BACKEND.supports
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        assert supports(config, CPU, dtype, True) is None
    assert "computes float32, float64, bfloat16, float16 only, got complex64" in supports(
        config, CPU, torch.complex64, True)
    assert "runs on cpu devices only, got cuda" in supports(config, torch.device("cuda"),
                                                            torch.float32, True)


@pytest.mark.parametrize("training", [True, False])
def test_auto_takes_it_for_variants(training):
    for config in VARIANTS:
        for dtype in (torch.float32, torch.float64):
            assert kernels.resolve("auto", config, CPU, dtype, training).name == "cpu"


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("training", [True, False])
def test_auto_leaves_what_torch_computes_to_native_for_its_exact_numbers(mode, training):
    config = PLAIN[mode]
    assert kernels.resolve("auto", config, CPU, torch.float32, training).name == "native"
    why = dict(kernels.explain(config, CPU, torch.float32, training=training))["cpu"]
    assert "native gives its exact numbers" in why
    assert kernels.resolve("cpu", config, CPU, torch.float32, training).name == "cpu"  # if named


def test_auto_never_takes_it_off_the_cpu():
    rows = dict(kernels.explain(VARIANTS[0], "cuda"))
    assert "cpu devices only" in rows["cpu"]


def test_a_layer_built_for_it_reports_it():
    layer = lstmkit.LSTM(3, 4, peephole=True)
    assert layer.backend().name == "cpu"


def test_threads_do_not_change_the_numbers():
    """Work is split over threads by whole tiles, rows and columns, never inside a sum, so two
    threads give one thread's numbers bit for bit. The size makes every parallel loop split."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(40, 160, peephole=True, layer_norm=True, backend="cpu")  # 4H > 512
    x = torch.randn(6, 64, 40)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            layer.zero_grad()
            y, state = layer(x)
            (y.square().sum() + sum(s.sum() for s in parts(state))).backward()
            results.append([y, *parts(state), *(p.grad.clone() for p in layer.parameters())])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results):
        assert torch.equal(one, two)


def test_two_threads_match_the_reference(compare):
    torch.set_num_threads(2)
    try:
        compare(lambda b: lstmkit.LSTM(40, 128, coupled=True, proj_size=50, backend=b),
                steps=6, batch=64)
        compare(lambda b: lstmkit.GRU(40, 128, reset_after=False, backend=b), steps=6, batch=64)
    finally:
        torch.set_num_threads(1)


STREAMED = {
    "lstm": (lstmkit.LSTM, {}),
    "lstm, every option": (lstmkit.LSTM, dict(peephole=True, coupled=True, cell_clip=0.5,
                                              layer_norm=True, proj_size=2, zoneout=0.2,
                                              output_activation="softsign")),
    "lstm, no forget gate": (lstmkit.LSTM, dict(forget_gate=False)),
    "gru, reset before": (lstmkit.GRU, dict(reset_after=False, zoneout=0.2)),
    "rnn, relu": (lstmkit.RNN, dict(nonlinearity="relu")),
}


@pytest.mark.parametrize("name", STREAMED)
def test_chunked_and_stepwise_equal_one_call(name):
    """Streaming: chunks, and single steps, carrying the state equal one call (evaluation)."""
    cls, options = STREAMED[name]
    layer = cls(3, 4, num_layers=2, backend="cpu", dtype=torch.float64, **options).eval()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        full, full_state = layer(x)
        first, state = layer(x[:3])
        second, state = layer(x[3:5], state)
        steps = []
        for t in range(5, 7):
            y_t, state = layer.step(x[t], state)
            steps.append(y_t[None])
    assert_close(torch.cat([first, second, *steps]), full)
    for a, e in zip(parts(state), parts(full_state)):
        assert_close(a, e)


def test_auto_logs_its_choice_and_why(caplog):
    with caplog.at_level("DEBUG", logger="lstmkit.kernels"):
        kernels.resolve("auto", PLAIN["lstm"], CPU, torch.float32, False)
    assert "backend auto skips cpu: torch.nn computes this configuration" in caplog.text
    assert "backend auto -> native" in caplog.text
