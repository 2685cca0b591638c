"""The activations a cell may use, declared once: name, torch function, ONNX names.

The set is ONNX's recurrent activation list where it makes sense. Parameterised ONNX activations
take ONNX's default parameters: ``hard_sigmoid`` is ``clamp(0.2 x + 0.5, 0, 1)`` (ONNX
HardSigmoid, alpha 0.2, beta 0.5; torch's ``hardsigmoid`` is ``x / 6 + 0.5`` instead),
``leaky_relu`` has slope 0.01 and ``elu`` alpha 1.

Adding an activation is one row of :data:`TABLE`. The compiled kernels receive the table's
order as a generated enum (``kernels/cpu/_build.py``) and the Triton kernels as constexpr codes
of :data:`CODES`; each backend declares the names it implements, so a new row is refused by a
backend until its kernel computes it. The NumPy runtime keeps its own functions (it runs without
torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return (0.2 * x + 0.5).clamp(0.0, 1.0)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


class Activation(NamedTuple):
    fn: Callable[[torch.Tensor], torch.Tensor]
    """The function of one tensor."""
    onnx: str
    """ONNX's recurrent-operator activation (the ``activations`` attribute)."""
    element: tuple[str, dict]
    """ONNX's elementwise operator and attributes computing it (in Scan bodies)."""


TABLE: dict[str, Activation] = {
    "sigmoid": Activation(torch.sigmoid, "Sigmoid", ("Sigmoid", {})),
    "tanh": Activation(torch.tanh, "Tanh", ("Tanh", {})),
    "relu": Activation(torch.relu, "Relu", ("Relu", {})),
    "hard_sigmoid": Activation(hard_sigmoid, "HardSigmoid",
                               ("HardSigmoid", {"alpha": 0.2, "beta": 0.5})),
    "softsign": Activation(F.softsign, "Softsign", ("Softsign", {})),
    "softplus": Activation(F.softplus, "Softplus", ("Softplus", {})),
    "elu": Activation(F.elu, "Elu", ("Elu", {"alpha": 1.0})),
    "leaky_relu": Activation(F.leaky_relu, "LeakyRelu", ("LeakyRelu", {"alpha": 0.01})),
    # ONNX Runtime's default Affine is alpha 0 (the constant 0): the exporter gives alpha=1,
    # beta=0 explicitly.
    "identity": Activation(identity, "Affine", ("Identity", {})),
}
"""Activation name -> its row."""

ACTIVATIONS = {name: row.fn for name, row in TABLE.items()}
"""Activation name -> function of one tensor."""

ONNX_NAMES = {name: row.onnx for name, row in TABLE.items()}
"""Activation name -> ONNX recurrent activation."""

CODES = {name: code for code, name in enumerate(TABLE)}
"""Activation name -> its code in the compiled kernels (the table's order)."""
