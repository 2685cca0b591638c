"""The Triton backend's entry (lstmkit/kernels/triton/__init__.py): what it accepts, and how
"auto" treats it; and the launch plans of lstmkit/kernels/triton/common.py."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="the Triton backend needs pip install 'lstmkit[triton]'")

from lstmkit import kernels  # noqa: E402
from lstmkit.config import LayerConfig, cell_config  # noqa: E402
from lstmkit.kernels import triton as backend  # noqa: E402
from lstmkit.kernels.triton import common  # noqa: E402

CPU = torch.device("cpu")
VARIANT = LayerConfig(cell_config("lstm", 3, 8, peephole=True))


def test_auto_never_picks_it_on_the_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.BACKEND.supports(VARIANT, CPU, torch.float32, True) is None
    assert kernels.resolve("auto", VARIANT, CPU, torch.float32, True).name != "triton"
    assert kernels.resolve("triton", VARIANT, CPU, torch.float32, True).name == "triton"


def test_the_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA" in backend.BACKEND.supports(VARIANT, CPU, torch.float32, True)


def test_missing_triton_says_how_to_install(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "triton" else find_spec(name, *a))
    assert "pip install" in backend.BACKEND.supports(VARIANT, CPU, torch.float32, True)


@pytest.mark.parametrize("config, dtype, words", [
    (LayerConfig(cell_config("rnn", 3, 8)), torch.float32, "does not compute the 'rnn' family"),
    (LayerConfig(cell_config("lstm", 3, 257, layer_norm=True)), torch.float32, "hidden_size"),
    (LayerConfig(cell_config("lstm", 3, 257, proj_size=4)), torch.float32, "hidden_size"),
    (LayerConfig(cell_config("gru", 3, 257, reset_after=False)), torch.float32, "hidden_size"),
    (VARIANT, torch.complex64, "got complex64"),
])
def test_reasons(config, dtype, words):
    assert words in backend.BACKEND.supports(config, CPU, dtype, True)


def test_one_program_variants_run_up_to_256_units():
    config = LayerConfig(cell_config("lstm", 3, 256, layer_norm=True, proj_size=4))
    assert backend.BACKEND.supports(config, torch.device("cuda"), torch.float32, True) is None


def test_naming_it_for_what_it_cannot_run_is_an_error():
    with pytest.raises(ValueError, match="does not compute the 'rnn' family"):
        kernels.resolve("triton", LayerConfig(cell_config("rnn", 3, 8)), CPU, torch.float32, True)


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device with 132 multiprocessors, as an H100, for the planner's arithmetic."""
    properties = type("Properties", (), {"multi_processor_count": 132})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: properties)
    return torch.device("cuda")


def test_plans_split_large_layers_over_a_resident_grid(gpu):
    plan = common.plan(4, 16, 768, 768, gpu, single=False)
    assert plan.grid(16, 768) == (1, 48)
    assert plan.persistent and plan.sync and not plan.hold


def test_plans_fall_back_to_per_step_launches(gpu):
    plan = common.plan(4, 1024, 768, 768, gpu, single=False)  # 16 x 48 programs > 132
    assert not plan.persistent and not plan.sync
    assert not common.plan(4, 16, 768, 768, CPU, single=False).persistent  # no barrier on a CPU


def test_plans_hold_small_layers_in_one_program(gpu):
    small = common.plan(4, 4, 32, 32, gpu, single=False)
    assert small.grid(4, 32) == (1, 1) and small.persistent and small.hold and not small.sync
    normed = common.plan(4, 4, 256, 256, gpu, single=True)
    assert normed.grid(4, 256) == (1, 1) and not normed.hold
    assert 4 * normed.block_h * normed.block_k <= 16384  # a chunk of weights stays in registers


@pytest.mark.parametrize("gates", [3, 4])
@pytest.mark.parametrize("hidden", [8, 24, 100, 128, 768, 1024])
@pytest.mark.parametrize("single", [False, True])
def test_plan_blocks_are_powers_of_two(gates, hidden, single, gpu):
    """tl.arange and tl.dot need power-of-two blocks of at least 16 on a GPU."""
    plan = common.plan(gates, 5, hidden, hidden, gpu, single)
    for block in (plan.block_b, plan.block_h, plan.block_k):
        assert block >= 16 and block & (block - 1) == 0


def test_kernels_built_for_a_gpu_refuse_cpu_tensors_clearly():
    """TRITON_INTERPRET set too late (after the kernels' import) is an error that says so."""
    code = ("import torch\n"
            "from lstmkit.config import cell_config\n"
            "from lstmkit.kernels.triton import lstm\n"
            "from lstmkit.kernels.contract import StepMasks\n"
            "w = dict(weight_ih=torch.randn(16, 2), weight_hh=torch.randn(16, 4))\n"
            "state = (torch.zeros(2, 4), torch.zeros(2, 4))\n"
            "lstm.scan(cell_config('lstm', 2, 4), w, torch.randn(3, 2, 2), state, None, "
            "StepMasks())\n")
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "set TRITON_INTERPRET=1 before" in result.stderr


@pytest.mark.parametrize("gate", ["input_gate", "forget_gate", "output_gate"])
def test_gate_ablations_are_refused_and_auto_never_picks_it_for_them(gate):
    """The kernels fix no gate to 1, so an ablation is not declared (issue 9, defect 2: they
    were computed as the plain LSTM, max |triton - reference| 0.2-0.45)."""
    config = LayerConfig(cell_config("lstm", 3, 8, **{gate: False}))
    cuda = torch.device("cuda")
    assert f"{gate}=False is not covered" in backend.BACKEND.supports(config, cuda,
                                                                      torch.float32)
    assert dict(kernels.explain(config, cuda))["triton"].startswith(f"{gate}=False")
    assert kernels.resolve("auto", config, cuda, torch.float32, False).name == "reference"
