"""Streaming speech recognition: time per audio chunk and real-time factor.

Streams test utterances of the checkpoint's own corpus through ``Transcriber`` (features,
StreamEngine, decoding at the end) in chunks of several sizes, one torch thread, and prints a
Markdown table for docs/speech.md: wall-clock and CPU time per chunk and per audio second, and
how many final transcripts equal the offline decode.

    PYTHONPATH=src python benchmarks/speech_streaming.py runs/transcribe-stream
"""

from __future__ import annotations

import argparse
import dataclasses
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = Path(args.run)
    path = path / "stream" / "model.safetensors" if (path / "stream").is_dir() else path
    model = lstmkit.load(path)
    names = {f.name for f in dataclasses.fields(speech.SpeechConfig)}
    config = speech.SpeechConfig(**{k: v for k, v in model.meta["config"].items() if k in names})
    test = speech.load_corpus(config)["test"]
    print(f"Machine: {machine('1 torch thread')}; model {path}\n")
    print("| chunk | ms per chunk (wall / CPU) | real-time factor (wall / CPU) | final = offline |")
    print("|---|---|---|---|")
    for chunk_ms in (int(c) for c in args.chunks.split(",")):
        r = measure_streaming(model, test, args.utterances, chunk_ms)
        print(f"| {chunk_ms} ms | {r['ms_per_chunk']:.2f} / {r['cpu_ms_per_chunk']:.2f} | "
              f"{r['real_time_factor']:.3f} / {r['cpu_real_time_factor']:.3f} | "
              f"{r['equal_to_offline']}/{r['utterances']} |", flush=True)


if __name__ == "__main__":
    main()
