"""Int8 inference: speed against torch.ao's dynamically quantised LSTM and ONNX Runtime's
quantised model, and what int8 weights cost the applications' metrics.

    PYTHONPATH=src python benchmarks/quant.py speed    # a few minutes, one thread
    PYTHONPATH=src python benchmarks/quant.py apps     # trains short runs first: ~15 minutes

``speed`` times one model (LSTM + a linear head of 16) per size, every peer side by side in one
loop (each takes its turn, best of several repeats): lstmkit float (backend="cpu") and int8
(lstmkit.quantize_dynamic, the cpu kernel: weights only, and with int8 activations' integer
products), torch.nn.LSTM float and torch.ao's
``quantize_dynamic({nn.LSTM, nn.Linear}, qint8)``, ONNX Runtime float and int8
(lstmkit.export.quantize). It writes the ``quant`` section of docs/benchmarks.md.

``apps`` trains each application briefly (``runs/quant/<app>-<dataset>``), then scores the same
checkpoint as float, lstmkit int8 (both settings), torch.ao int8 and ONNX Runtime int8 (the
ONNX graph run through the application's own evaluation), and prints the table for
docs/applications.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import _report  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit import LayerConfig, ModelConfig, SequenceModel, cell_config  # noqa: E402
from lstmkit.cells.lstm import LSTMState  # noqa: E402
from lstmkit.export.onnx import export_onnx  # noqa: E402
from lstmkit.export.quantize import export_onnx_int8  # noqa: E402
from lstmkit.kernels.cpu import quant as cpu_quant  # noqa: E402

INPUT, OUTPUT = 64, 16
SIZES = [  # (T, B, H): a step of one stream, then whole sequences
    (1, 1, 128), (1, 1, 256), (1, 1, 512), (100, 1, 128), (100, 1, 512), (100, 32, 256),
]


def _ort():
    import onnxruntime as ort

    return ort


def _session(path):
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtModel(nn.Module):
    """An ONNX Runtime session behind SequenceModel's call, ``model(x, state, lengths)``, so
    that the applications' own evaluation code scores it."""

    def __init__(self, path, model: SequenceModel):
        super().__init__()
        self.config, self.meta, self.session = model.config, model.meta, _session(path)
        self.like = model.init_state
        self._device = nn.Parameter(torch.zeros(0))  # what code asking for a device finds
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, x, state=None, lengths=None):
        batch, steps = x.shape[:2]
        feed = {"input": x.numpy().astype(np.float32 if x.is_floating_point() else np.int64)}
        if "lengths" in self.names:
            lengths = torch.full((batch,), steps) if lengths is None else lengths
            feed["lengths"] = lengths.numpy().astype(np.int64)
        state = self.like(batch) if state is None else state
        tensors = tuple(state) if isinstance(state, tuple) else (state,)
        for name, t in zip([n for n in self.names if n.endswith("0")], tensors):
            feed[name] = t.numpy().astype(np.float32)
        y, *final = (torch.from_numpy(a) for a in self.session.run(None, feed))
        return y, (LSTMState(*final) if len(final) == 2 else final[0])


class TorchAOStack(nn.Module):
    """torch.ao's quantised torch.nn.LSTM in a SequenceModel's ``rnn`` slot (lengths by
    packing, as torch.nn takes them)."""

    def __init__(self, rnn):
        super().__init__()
        module = nn.Sequential(rnn.to_torch())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice
            self.rnn = torch.ao.quantization.quantize_dynamic(module, {nn.LSTM},
                                                              dtype=torch.qint8)[0]

    def forward(self, x, state=None, lengths=None):
        if lengths is None:
            y, final = self.rnn(x, state)
            return y, LSTMState(*final)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                   enforce_sorted=False)
        y, final = self.rnn(packed, state)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return y, LSTMState(*final)


def torch_ao_model(model: SequenceModel) -> SequenceModel:
    out = copy.deepcopy(model).eval()
    out.rnn = TorchAOStack(model.rnn)
    return out


# --- speed ----------------------------------------------------------------------------------


def best_us(peers: dict) -> dict[str, float]:
    """Microseconds per call: the best of 7 loops of about 0.05 s (at least 3 calls)."""
    return _report.best_us(peers, 7, loop_seconds=0.05, warmup=3, least=3)


def speed_peers(steps: int, batch: int, hidden: int, folder: Path) -> dict:
    torch.manual_seed(0)
    config = ModelConfig(LayerConfig(cell_config("lstm", INPUT, hidden), batch_first=True,
                                     backend="cpu"), OUTPUT)
    model = SequenceModel(config).eval()
    int8 = lstmkit.quantize_dynamic(model)
    integer = lstmkit.quantize_dynamic(model, activations="int8")
    torch_float = model.rnn.to_torch().eval()
    head = copy.deepcopy(model.head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = torch.ao.quantization.quantize_dynamic(
            nn.ModuleDict({"rnn": model.rnn.to_torch(), "head": copy.deepcopy(model.head)}),
            {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    export_onnx(model, folder / "f.onnx", lengths=False, initial_state=False)
    export_onnx_int8(model, folder / "q.onnx", lengths=False, initial_state=False)
    ort_float, ort_int8 = _session(folder / "f.onnx"), _session(folder / "q.onnx")
    x = torch.randn(batch, steps, INPUT)
    xn = x.numpy()

    def torch_call(rnn, linear):
        return lambda: linear(rnn(x)[0])

    peers = {
        "lstmkit float (cpu kernel)": lambda: model(x),
        "lstmkit int8 (cpu kernel)": lambda: int8(x),
        INTEGER: lambda: integer(x),
        **(_step_peers(model, int8, integer, x[:, 0]) if steps == 1 else {}),
        "torch.nn.LSTM float": torch_call(torch_float, head),
        "torch.ao int8 (quantize_dynamic)": torch_call(ao["rnn"], ao["head"]),
        "ONNX Runtime float": lambda: ort_float.run(None, {"input": xn}),
        "ONNX Runtime int8 (quantize_dynamic)": lambda: ort_int8.run(None, {"input": xn}),
    }
    with torch.no_grad():
        return best_us(peers)


STEP_FLOAT, STEP_INT8 = "lstmkit float, SequenceModel.step", "lstmkit int8, SequenceModel.step"
INTEGER = "lstmkit int8, int8 activations (cpu kernel)"
STEP_INTEGER = "lstmkit int8, int8 activations, SequenceModel.step"


def _step_peers(model, int8, integer, x_t) -> dict:
    """A step of one stream through ``step`` (the fused single-stream kernel, weights packed
    once; with int8 activations the int8 scan's own step), the path a stream takes, against
    ``model(x)`` at T=1 above (the sequence path)."""
    state = [model.init_state(x_t.shape[0]) for _ in range(3)]

    def stepper(m, k):
        def run():
            _, state[k] = m.step(x_t, state[k])
        return run

    return {STEP_FLOAT: stepper(model, 0), STEP_INT8: stepper(int8, 1),
            STEP_INTEGER: stepper(integer, 2)}


def speed() -> str:
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in SIZES:
            results[size] = speed_peers(*size, Path(folder))
            print(size, {k: round(v, 1) for k, v in results[size].items()}, flush=True)
    names = list(dict.fromkeys(name for row in results.values() for name in row))
    head = "| us per call (I=64, head of 16) | " + " | ".join(
        f"T={t}, B={b}, H={h}" for t, b, h in SIZES) + " |"
    lines = [head, "|---" + "|---:" * len(SIZES) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            f"{results[s][name]:.1f}" if name in results[s] else "" for s in SIZES) + " |")

    def ratio(a, b, label):
        return (f"| **{label}** | " + " | ".join(
            f"**{results[s][a] / results[s][b]:.2f}x**" if a in results[s] else ""
            for s in SIZES) + " |")

    lines += [ratio("lstmkit int8 (cpu kernel)", "lstmkit float (cpu kernel)",
                    "lstmkit int8 / lstmkit float"),
              ratio("lstmkit int8 (cpu kernel)", "torch.ao int8 (quantize_dynamic)",
                    "lstmkit int8 / torch.ao int8"),
              ratio("lstmkit int8 (cpu kernel)", "ONNX Runtime int8 (quantize_dynamic)",
                    "lstmkit int8 / ONNX Runtime int8"),
              ratio(STEP_INT8, "ONNX Runtime int8 (quantize_dynamic)",
                    "lstmkit int8 step / ONNX Runtime int8"),
              ratio(STEP_INT8, STEP_FLOAT, "lstmkit int8 step / lstmkit float step"),
              ratio(STEP_INTEGER, "ONNX Runtime int8 (quantize_dynamic)",
                    "lstmkit int8 activations step / ONNX Runtime int8"),
              ratio(INTEGER, "lstmkit float (cpu kernel)",
                    "lstmkit int8 activations / lstmkit float"),
              ratio(INTEGER, "torch.ao int8 (quantize_dynamic)",
                    "lstmkit int8 activations / torch.ao int8"),
              ratio(INTEGER, "ONNX Runtime int8 (quantize_dynamic)",
                    "lstmkit int8 activations / ONNX Runtime int8")]
    return "\n".join(lines)


def proj_size_row() -> str:
    """Item 4 of issue 12: int8 with proj_size, which torch.ao cannot quantise."""
    torch.manual_seed(0)
    layer = lstmkit.LSTM(INPUT, 512, proj_size=128, backend="cpu").eval()
    int8 = lstmkit.quantize_dynamic(layer)
    x = torch.randn(1, 1, INPUT)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(nn.Sequential(layer.to_torch()),
                                                   {nn.LSTM}, dtype=torch.qint8)[0](x)
        ao = "runs"
    except Exception as error:  # what torch.ao says, quoted in the doc
        ao = f"fails: {type(error).__name__}: {str(error).splitlines()[0][:90]}"
    with torch.no_grad():
        t = best_us({"float": lambda: layer(x), "int8": lambda: int8(x)})
    return (f"proj_size=128, H=512, one step at batch 1: lstmkit float {t['float']:.1f} us, "
            f"int8 {t['int8']:.1f} us ({t['int8'] / t['float']:.2f}x); torch.ao: {ao}")


# --- applications ---------------------------------------------------------------------------

FORECASTS, CLASSIFIES = ("airline", "sunspots", "nile"), ("ItalyPowerDemand", "digits",
                                                           "BasicMotions")


def _train(app: str, name: str, out: Path):
    from lstmkit.apps import charlm, classify, forecast

    if (out / "model.safetensors").exists():
        return
    if app == "forecast":
        forecast.train(forecast.ForecastConfig(dataset=name, progress=False, out=str(out)))
    elif app == "classify":
        classify.train(classify.ClassifyConfig(dataset=name, progress=False, out=str(out)))
    else:
        charlm.train(charlm.CharLMConfig(threads=1, progress=False, epochs=3, out=str(out)))


def _metric(app: str, model, name: str) -> float:
    from lstmkit.apps import charlm, classify, forecast

    if app == "forecast":
        report = forecast.evaluate(model, forecast.ForecastConfig(dataset=name))
        return float(np.mean([t["lstm"]["mase"] for t in report["metrics"].values()]))
    if app == "classify":
        report = classify.evaluate(model, classify.ClassifyConfig(dataset=name))
        return report["metrics"]["lstm"]["accuracy"]
    return charlm.evaluate(model, charlm.CharLMConfig())["test_bits_per_char"]


def apps(root: Path, only: tuple[str, ...] = ("forecast", "classify", "charlm")) -> str:
    torch.set_num_threads(1)
    jobs = ([("forecast", n) for n in FORECASTS] + [("classify", n) for n in CLASSIFIES]
            + [("charlm", "kjv")])
    jobs = [(app, name) for app, name in jobs if app in only]
    lines = ["| application, data | metric | float | lstmkit int8 | lstmkit int8, int8 "
             "activations | torch.ao int8 | ONNX Runtime int8 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    label = {"forecast": "MASE (lower is better)", "classify": "test accuracy",
             "charlm": "test bits per character"}
    for app, name in jobs:
        out = root / f"{app}-{name}"
        start = time.perf_counter()
        _train(app, name, out)
        model = lstmkit.load(out)
        scores = [_metric(app, model, name), _metric(app, lstmkit.quantize_dynamic(model), name),
                  _metric(app, lstmkit.quantize_dynamic(model, activations="int8"), name),
                  _metric(app, torch_ao_model(model), name)]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "q.onnx"
            export_onnx_int8(model, path)
            scores.append(_metric(app, OrtModel(path, model), name))
        cells = " | ".join(f"{s:.3f}" for s in scores)
        lines.append(f"| {app}, {name} | {label[app]} | {cells} |")
        print(lines[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    return "\n".join(lines)


NOTES = """### Reading the numbers

- What each int8 peer computes differs. `lstmkit int8` quantises the weights only (int8 per
  output row, float32 activations: the float model of the dequantised weights) and keeps the
  head float. `lstmkit int8, int8 activations` (`quantize_dynamic(model, activations="int8")`)
  also rounds each product's input to 7 bits per row at run time and multiplies in integers
  (kernels/cpu/int8_dot.h), head float. torch.ao and ONNX Runtime round each product's input
  to uint8 at run time (torch.ao to 7 bits on x86) and multiply in integers (fbgemm's and
  MLAS's u8 x s8 kernels), head included; ONNX Runtime's weights have 7 bits (see
  lstmkit/export/quantize.py for why).
- `SequenceModel.step` is the path a stream takes (layers/fused_step.py): one call into the cpu
  backend's step kernel (kernels/cpu/step.h) for the stack and the head, on weights packed once;
  an int8 model's panels hold its int8 rows and their two row scales (W_ih's, W_hh's), a
  quarter of float32's bytes, widened eight at a time in registers. It is lstmkit's int8 step,
  and the one to set against ONNX Runtime's int8 model at T=1. With int8 activations a step
  is one call into the int8 scan's own step code (quant_ops.h, quant_lstm_step: the same bits
  as the sequence path), then torch's head.
- `model(x)` at T=1 is the sequence path: the model's and the layer's Python (checks, backend
  dispatch, the stack's loop) costs a few hundred us a call on this machine, more than the
  products. Its int8 kernel dots the int8 rows in place for a call of at most 4 rows (T * B)
  and packs nothing, where the float kernel packs its weights on every call; longer calls
  dequantise each matrix once and run the float products, so they cost about what float
  does. Widening int8 to float costs three instructions per eight weights (the kernels' AVX2
  code, which AVX-512 CPUs run too), which is why weight-only int8 does not beat float
  products where they are compute-bound.
- Integer products (int8 activations) read a quarter of float's bytes and multiply 32 bytes
  in two instructions on AVX2 (vpmaddubsw, vpmaddwd), 64 bytes in one on AVX-512 VNNI
  (vpdpbusd; the machine line names the path that ran). They win most where a sequence's
  products are matrix-vector ones (one stream, B=1: the recurrent product reads every weight
  each step). At B=32 the products are compute-bound: on AVX2 without VNNI those two multiply
  instructions per 32 products run at about 1.2x the rate of float32's fused multiply-adds
  (the kernel alone, 70 of about 75 GMAC/s measured for the loop on an AMD Zen 3). What stays
  between them and ONNX Runtime's int8 model at T=100 is the rest of a call: the gate math of
  every step (3-4 us at H=128), and the model's and layer's Python (about 200 us a call, as at
  T=1).
- The NumPy runtime computes int8 files in float32 (NumPy has no int8 product), so it is not a
  row here.
- Under heavy load a row out of order with its neighbours (a smaller size slower than a larger
  one) is a burst that hit that peer's loops; compare ratios across columns, not single cells.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["speed", "apps"])
    parser.add_argument("--out", default="runs/quant", help="apps: where the runs go")
    parser.add_argument("--app", action="append", choices=["forecast", "classify", "charlm"],
                        help="apps: only these applications' rows (repeatable; default all)")
    args = parser.parse_args(argv)
    load, start_note = os.getloadavg()[0], _report.load_note("start")
    if args.part == "apps":
        print(apps(Path(args.out), tuple(args.app or ("forecast", "classify", "charlm"))))
        print(f"\nMachine: {_report.machine()}; load average {load:.1f} at the start.")
        return 0
    table, proj = speed(), proj_size_row()
    text = (f"## Int8 inference, {_report.cpu_class()[1]} (benchmarks/quant.py)\n\n"
            f"Machine: {_report.machine()}; the integer product: {cpu_quant.isa()}. One "
            f"thread everywhere; best of 7 timed loops, the "
            f"peers taking turns; {start_note}; the ratios come from one run.\n\n{table}\n\n"
            f"{proj}.\n\n{NOTES}")
    print(text)
    _report.write_section(_report.keyed("quant"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
