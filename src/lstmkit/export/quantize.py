"""Export a model to ONNX quantised for ONNX Runtime's int8 kernels.

The float graph of :func:`lstmkit.export.onnx.export_onnx` goes through
``onnxruntime.quantization.quantize_dynamic``, which rewrites it for the kernels ONNX Runtime
has: each ONNX LSTM operator becomes ``com.microsoft.DynamicQuantizeLSTM`` and each MatMul with
a constant weight (the head, and the products inside the Scan steps of every other layer)
``DynamicQuantizeLinear`` + ``MatMulInteger``. That is ONNX Runtime's own dynamic quantisation,
which we chose over writing QLinear nodes ourselves because its int8 LSTM and integer products
are what it runs fast, and a hand-written graph would have to match them node for node. Its
scheme differs from :func:`lstmkit.quantize_dynamic` in two ways:

* activations are quantised too, dynamically: each product's float input is rounded to uint8
  with one scale and zero point per tensor, computed at run time;
* weights are int8 per output channel with ``reduce_range`` (7 bits, [-64, 64]): on x86 CPUs
  without VNNI, ONNX Runtime's u8 x s8 products sum pairs in int16 (``vpmaddubsw``), which
  saturates with full-range weights (measured here: 0.2 absolute error on outputs of 0.4 with
  8 bits, 0.002 with 7).

ONNX Runtime has no quantised GRU or RNN operator, so every layer other than an LSTM that ONNX's
operator computes is written as a Scan (``native_operators=False``), whose MatMuls it does
quantise. Quantising needs ``onnxruntime`` (the ``onnx`` extra).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lstmkit._optional import require
from lstmkit.io import atomic_write
from lstmkit.models import SequenceModel

INT8_OPS = ("DynamicQuantizeLSTM", "MatMulInteger")
"""The int8 nodes of a quantised graph (what tests and the benchmark look for)."""


def export_onnx_int8(model: SequenceModel, path: str | Path, *, lengths: bool = True,
                     initial_state: bool = True):
    """Write ``model`` to ``path`` as an ONNX model for ONNX Runtime's int8 kernels.

    Args:
        model: a float SequenceModel (not one from :func:`lstmkit.quantize_dynamic`: ONNX
            Runtime quantises the float weights itself).
        path: the .onnx file, written atomically.
        lengths, initial_state: as :func:`lstmkit.export.onnx.export_onnx`.

    Returns:
        The quantised ModelProto.
    """
    onnx = require("onnx", "onnx", "ONNX export")
    quantization = require("onnxruntime.quantization", "onnx", "int8 ONNX export")
    from lstmkit.export.onnx import export_onnx
    from lstmkit.layers.quantized import QuantizedLayer

    if isinstance(model, SequenceModel) and isinstance(model.rnn, QuantizedLayer):
        raise TypeError("model: expected the float model, got one with int8 layers (ONNX "
                        "Runtime quantises the float weights itself)")
    native = model.config.layer.cell.family == "lstm" if isinstance(model, SequenceModel) else True
    with tempfile.TemporaryDirectory() as folder:
        float_path, folded = Path(folder) / "float.onnx", Path(folder) / "folded.onnx"
        export_onnx(model, float_path, lengths=lengths, initial_state=initial_state,
                    native_operators=native)
        # ONNX Runtime's recommended pre-processing: its constant folding turns the Scan
        # steps' Split of a constant weight into constants, which quantize_dynamic needs.
        shape_inference = require("onnxruntime.quantization.shape_inference", "onnx",
                                  "int8 ONNX export")
        shape_inference.quant_pre_process(str(float_path), str(folded), skip_symbolic_shape=True)

        def write(tmp):
            quantization.quantize_dynamic(
                folded, tmp, weight_type=quantization.QuantType.QInt8, per_channel=True,
                reduce_range=True, op_types_to_quantize=["LSTM", "MatMul"],
                extra_options={"EnableSubgraph": True})

        atomic_write(path, write)
    return onnx.load(str(path))
