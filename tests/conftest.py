"""Fixtures shared by the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global generator state, so a failure reproduces alone."""
    torch.manual_seed(0)


@pytest.fixture(params=["reference", "native"])
def backend(request) -> str:
    """Each backend that runs torch.nn's configurations."""
    return request.param
