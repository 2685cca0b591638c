"""Streaming speech recognition: time per audio chunk and real-time factor.

Streams test utterances of the checkpoint's own corpus through ``Transcriber`` (features,
StreamEngine, decoding at the end) in chunks of several sizes, with 1 and 2 torch threads side
by side in one run, and prints a Markdown table for docs/speech.md: the wall-clock latency of a
chunk (median, 95th percentile, worst) and of the final decode, the mean time per chunk and the
real-time factor in wall-clock and CPU time, and how many final transcripts equal the offline
decode. The load average before and after is printed too (on a shared machine the wall-clock
figures depend on it).

    PYTHONPATH=src python benchmarks/speech_streaming.py runs/transcribe
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import lstmkit
from lstmkit.apps import speech
from lstmkit.apps.transcriber import measure_streaming

try:
    from _report import machine
except ImportError:  # run from elsewhere
    from benchmarks._report import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder with stream/, or a streaming checkpoint")
    parser.add_argument("--utterances", type=int, default=50)
    parser.add_argument("--chunks", default="20,50,100,200", help="chunk sizes in ms")
    parser.add_argument("--threads", default="1,2", help="torch thread counts")
    args = parser.parse_args()
    path = Path(args.run)
    path = path / "stream" / "model.safetensors" if (path / "stream").is_dir() else path
    model = lstmkit.load(path)
    config = speech.SpeechConfig.from_dict(model.meta["config"])
    test = speech.load_corpus(config)["test"]
    print(f"Machine: {machine()}; model {path}; {args.utterances} test utterances")
    print("Load average (1, 5, 15 min) before: {:.1f} {:.1f} {:.1f}\n".format(*os.getloadavg()))
    print("| threads | chunk | chunk latency ms, wall (p50 / p95 / max) | ms per chunk (wall / "
          "CPU) | final decode ms | real-time factor (wall / CPU) | final = offline |")
    print("|---|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for chunk_ms in (int(c) for c in args.chunks.split(",")):
            r = measure_streaming(model, test, args.utterances, chunk_ms)
            print(f"| {threads} | {chunk_ms} ms | {r['chunk_ms_p50']:.2f} / {r['chunk_ms_p95']:.2f}"
                  f" / {r['chunk_ms_max']:.1f} | {r['ms_per_chunk']:.2f} / "
                  f"{r['cpu_ms_per_chunk']:.2f} | {r['final_ms_mean']:.1f} | "
                  f"{r['real_time_factor']:.3f} / {r['cpu_real_time_factor']:.3f} | "
                  f"{r['equal_to_offline']}/{r['utterances']} |", flush=True)
    print("\nLoad average after: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))

if __name__ == "__main__":
    main()
