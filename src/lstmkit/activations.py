"""The activations a cell may use, by name: ONNX's recurrent activation list where it makes sense.

Parameterised ONNX activations take ONNX's default parameters: ``hard_sigmoid`` is
``clamp(0.2 x + 0.5, 0, 1)`` (ONNX HardSigmoid, alpha 0.2, beta 0.5; torch's ``hardsigmoid`` is
``x / 6 + 0.5`` instead), ``leaky_relu`` has slope 0.01 and ``elu`` alpha 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return (0.2 * x + 0.5).clamp(0.0, 1.0)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "hard_sigmoid": hard_sigmoid,
    "softsign": F.softsign,
    "softplus": F.softplus,
    "elu": F.elu,
    "leaky_relu": F.leaky_relu,
    "identity": identity,
}
"""Activation name -> function of one tensor."""

ONNX_NAMES = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "hard_sigmoid": "HardSigmoid",
    "softsign": "Softsign",
    "softplus": "Softplus",
    "elu": "Elu",
    "leaky_relu": "LeakyRelu",
    "identity": "Affine",
}
"""Activation name -> ONNX recurrent activation. All but "identity" compute the same function at
ONNX's default alpha and beta; ``Affine`` needs ``alpha=1, beta=0`` given explicitly, since ONNX
Runtime's default for it is alpha 0 (the constant 0)."""
