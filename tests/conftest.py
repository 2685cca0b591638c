"""Fixtures shared by the whole suite."""

import os

import pytest
import torch

# Triton reads TRITON_INTERPRET when it is first imported, and torch.library's custom operators
# (the cpu and native backends register theirs on import) import torch._dynamo, which imports
# Triton: set it before any test module is collected, not only in the Triton tests' conftest.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# --doctest-modules runs the package's examples; the tests' helper modules have none, and
# collecting them would import them a second time as tests.<name> beside <name> (the
# pythonpath entry), registering tests/families.py's families twice.
collect_ignore = ["families.py", "support.py", "tiny_models.py", "tolerances.py"]

# The tests' tensors are tiny, so a second thread buys nothing, and on a loaded machine idle
# OpenMP threads spinning at barriers made the suite 6x slower (77 s against 13 s measured).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global generator state, so a failure reproduces alone."""
    torch.manual_seed(0)


@pytest.fixture(params=["reference", "native"])
def backend(request) -> str:
    """Each backend that runs torch.nn's configurations."""
    return request.param

