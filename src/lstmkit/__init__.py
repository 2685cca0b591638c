"""lstmkit: the LSTM family for PyTorch, a drop-in for torch.nn.LSTM/GRU/RNN and beyond it."""

# Names are imported on first use (PEP 562), so ``import lstmkit.runtime`` (NumPy only) works on
# a device without torch: importing a subpackage runs this file, which must not import torch.
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GRU": "lstmkit.layers",
    "GRUCell": "lstmkit.cells",
    "LSTM": "lstmkit.layers",
    "LSTMCell": "lstmkit.cells",
    "LSTMState": "lstmkit.cells",
    "RNN": "lstmkit.layers",
    "RNNCell": "lstmkit.cells",
    "CellConfig": "lstmkit.config",
    "cell_config": "lstmkit.config",
    "FAMILIES": "lstmkit.cells",
    "LayerConfig": "lstmkit.config",
    "ModelConfig": "lstmkit.models",
    "SequenceModel": "lstmkit.models",
    "load": "lstmkit.checkpoint",
    "quantize_dynamic": "lstmkit.layers.quantized",
    "sLSTM": "lstmkit.layers.xlstm",
    "mLSTM": "lstmkit.layers.xlstm",
    "xLSTM": "lstmkit.layers.xlstm_blocks",
    "xLSTMConfig": "lstmkit.layers.xlstm_blocks",
}
"""Public name -> the module that defines it."""

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lstmkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
