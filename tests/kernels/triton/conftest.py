"""Where the Triton kernels run in these tests: on a CUDA GPU when there is one, else under
Triton's CPU interpreter.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, that is when lstmkit's kernel
modules are first imported (on a layer's first run), so it is set here, at collection, before
any test runs. Other tests are unaffected: "auto" never picks the Triton backend on the CPU.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
