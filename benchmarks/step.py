"""The single-stream step: every lstmkit step path against ONNX Runtime's, side by side.

One plain LSTM layer (I=64, H=64..512) with a linear head (O=16), batch 1, one thread for every
peer (torch, ONNX Runtime, BLAS). The peers take turns in many short loops and each keeps its
best (:func:`_report.best_us`), so load from other processes, which preempts a loop now and then,
inflates numbers rather than ratios; by default each loop is timed in the thread's CPU time,
which preemption does not inflate. Prints the table and writes its
section of docs/benchmarks.md (``step`` markers) with the machine named; the error that float16
and int8 weights (and int8 activations) add is measured against float64 on the same models.

    PYTHONPATH=src python benchmarks/step.py           # the full run (a few minutes)
    PYTHONPATH=src python benchmarks/step.py --quick   # a smoke run that writes nothing
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import _report  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from streaming import INPUT, make_model, ort_step  # noqa: E402

import lstmkit  # noqa: E402
import lstmkit.runtime  # noqa: E402
from lstmkit.export import export_runtime  # noqa: E402
from lstmkit.kernels.cpu import step as cpu_step  # noqa: E402

ORT = "ONNX Runtime fp32 (1 thread)"
NUMPY = "runtime Stepper (NumPy, fp32)"
PEERS = {  # row name -> runtime Stepper precision
    NUMPY: None,
    "runtime Stepper (compiled, fp32)": "float32",
    "runtime Stepper (compiled, fp16 weights)": "float16",
    "runtime Stepper (compiled, int8 weights)": "int8",
}
LAYER, MODEL, FORWARD = "layer.step (torch)", "SequenceModel.step (torch)", \
    "layer(x) with T=1 (torch, the path step took before)"
INT8 = "SequenceModel.step (torch, int8 weights)"
INTEGER = "SequenceModel.step (torch, int8 activations)"


def peers(model, tmp: Path) -> dict:
    """Row name -> a function taking one step of one stream, its state carried."""
    export_runtime(model, tmp / "m.npz")
    runtime = lstmkit.runtime.load(tmp / "m.npz")
    x = torch.randn(1, INPUT)
    xn = x.numpy()[0]
    out = {ORT: ort_step(model, tmp)}
    for name, precision in PEERS.items():
        out[name] = _call(runtime.stepper(precision), xn)
    layer, carried = model.rnn, [model.init_state(1), model.init_state(1), None,
                                 model.init_state(1), model.init_state(1)]
    int8 = lstmkit.quantize_dynamic(model)
    integer = lstmkit.quantize_dynamic(model, activations="int8")

    def layer_step():
        _, carried[0] = layer.step(x, carried[0])

    def model_step():
        _, carried[1] = model.step(x, carried[1])

    def forward():
        _, carried[2] = layer(x[:, None], carried[2])

    def int8_step():
        _, carried[3] = int8.step(x, carried[3])

    def integer_step():
        _, carried[4] = integer.step(x, carried[4])

    out.update({LAYER: layer_step, MODEL: model_step, INT8: int8_step, INTEGER: integer_step,
                FORWARD: forward})
    return out


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
"""The calling thread's CPU time (every peer runs on it: one thread each), which other jobs
preempting it do not inflate, or wall-clock time."""


def _call(stepper, x):
    return lambda: stepper(x)


def step_errors(model, tmp: Path, steps: int = 200) -> dict[str, float]:
    """Largest |output - float64 truth| over ``steps`` steps of random input, for the NumPy
    float32 stepper, the compiled one with float32 and float16 weights, and the int8 models'
    steps, weights only and with int8 activations (the float64 truth is the float model's:
    the error includes the weights' rounding, and the activations')."""
    export_runtime(model.double(), tmp / "m64.npz")
    truth = lstmkit.runtime.load(tmp / "m64.npz").stepper()
    model.float()
    export_runtime(model, tmp / "m.npz")
    runtime = lstmkit.runtime.load(tmp / "m.npz")
    steppers = {name: runtime.stepper(precision) for name, precision in PEERS.items()}
    def int8_stepper(int8):
        state = [None]

        def run(x):
            y, state[0] = int8.step(torch.from_numpy(x)[None], state[0])
            return y[0].numpy()
        return run

    steppers[INT8] = int8_stepper(lstmkit.quantize_dynamic(model))
    steppers[INTEGER] = int8_stepper(lstmkit.quantize_dynamic(model, activations="int8"))
    xs = np.random.default_rng(0).standard_normal((steps, INPUT))
    error = dict.fromkeys(steppers, 0.0)
    for x in xs:
        want = truth(x)
        for name, stepper in steppers.items():
            error[name] = max(error[name], float(np.abs(stepper(x.astype(np.float32))
                                                        - want).max()))
    return error


def table(hiddens, rounds: int, clock) -> tuple[list[str], list[str]]:
    results, errors = {}, {}
    with torch.inference_mode(), tempfile.TemporaryDirectory() as tmp:
        for hidden in hiddens:
            model = make_model(hidden)
            results[hidden] = _report.best_us(peers(model, Path(tmp)), rounds,
                                              loop_seconds=0.002, warmup=100, least=5,
                                              clock=clock)
            errors[hidden] = step_errors(model, Path(tmp))
            print(f"H={hidden}: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                             results[hidden].items()), flush=True)
    head = "| step (us, batch 1, I=64, O=16) | " + " | ".join(f"H={h}" for h in hiddens) + " |"
    rule = "|---|" + "---:|" * len(hiddens)
    names = list(next(iter(results.values())))
    lines = [head, rule] + [f"| {n} | " + " | ".join(f"{results[h][n]:.1f}" for h in hiddens)
                            + " |" for n in names]
    ours = [*PEERS, LAYER, MODEL, INT8, INTEGER]
    fastest = {h: min(ours, key=lambda n: results[h][n]) for h in hiddens}

    def ratio_row(label, over, under):
        return f"| {label} | " + " | ".join(
            f"**{results[h][over(h)] / results[h][under]:.2f}x**" for h in hiddens) + " |"

    lines += [ratio_row("**fastest lstmkit / ONNX Runtime** (target <= 0.5x)",
                        lambda h: fastest[h], ORT),
              "| fastest lstmkit step | " + " | ".join(fastest[h] for h in hiddens) + " |",
              ratio_row("compiled fp32 Stepper / ONNX Runtime",
                        lambda h: "runtime Stepper (compiled, fp32)", ORT),
              ratio_row(f"**{LAYER} / {NUMPY}** (target <= 2x at H=128)", lambda h: LAYER,
                        NUMPY),
              ratio_row(f"**{MODEL} / {NUMPY}**", lambda h: MODEL, NUMPY)]
    error_lines = ["| max abs error vs float64, 200 steps | " + " | ".join(
        f"H={h}" for h in hiddens) + " |", rule]
    error_lines += [f"| {n} | " + " | ".join(f"{errors[h][n]:.1e}" for h in hiddens) + " |"
                    for n in [*PEERS, INT8, INTEGER]]
    return lines, error_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run; writes nothing")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                        help="the thread's CPU time (default: robust to other jobs) or "
                             "wall-clock time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    hiddens = (64, 128) if args.quick else (64, 128, 256, 512)
    lines, error_lines = table(hiddens, 20 if args.quick else 300, CLOCKS[args.clock])
    clock = ("CPU time of the one thread every peer runs on (other jobs preempting it do not "
             "count; their cache traffic does)" if args.clock == "cpu" else "wall-clock time")
    text = "\n".join([
        f"## Single-stream step, {_report.cpu_class()[1]} (benchmarks/step.py)", "",
        f"Machine: {_report.machine(f'numpy {np.__version__}')}; the compiled step's product: "
        f"{cpu_step.isa()}. One thread everywhere; each time is the best of 300 "
        f"short loops, the peers taking turns, in {clock}; "
        f"{_report.load_note('end of the run')}; the ratios come from one run.", "",
        *lines, "",
        "The error each step path adds, against the same model stepped in float64 (inputs "
        "standard normal, torch's default initialisation):", "",
        *error_lines])
    print(text)
    if not args.quick:
        _report.write_section(_report.keyed("step"), text)


if __name__ == "__main__":
    main()
