"""Fixtures shared by the whole suite."""

import pytest
import torch

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


def pytest_collection_modifyitems(config, items):
    """Tests that run torch.compile or torch.export go last: once dynamo has traced a frame,
    calls into Triton's interpreter in the same process fail ("Cannot call @triton.jit'd outside
    of the scope of a kernel"), and the Triton tests run under that interpreter."""
    items.sort(key=lambda item: item.get_closest_marker("compiles") is not None)
