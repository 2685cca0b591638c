"""``lstmkit transcribe``: train a CTC speech recogniser, or transcribe a WAV file with one.

    lstmkit transcribe --train [options]           build the corpus, train, report WER/CER
    lstmkit transcribe --stream RUN file.wav       chunk by chunk: partial and final transcripts
    lstmkit transcribe --checkpoint RUN file.wav   the whole file at once
"""

from __future__ import annotations

import time
from pathlib import Path

from lstmkit.cli._apps import add_config_parser, config_from, print_report


def add_parser(subparsers) -> None:
    from lstmkit.apps.speech import SpeechConfig

    parser = add_config_parser(
        subparsers, "transcribe", SpeechConfig,
        "speech recognition with CTC: --train builds an eSpeak NG corpus (or reads --data), "
        "trains offline and streaming models and reports error rates on unseen voices; "
        "--stream or --checkpoint transcribes a WAV file", run)
    group = parser.add_argument_group("what to do")
    group.add_argument("--train", action="store_true", help="train and evaluate")
    group.add_argument("--stream", metavar="RUN",
                       help="a streaming checkpoint (file, or run folder with stream/): feed "
                            "WAV in chunks, print partial and final transcripts")
    group.add_argument("--checkpoint", metavar="RUN",
                       help="a checkpoint (file, or run folder with offline/): transcribe WAV "
                            "whole")
    group.add_argument("--chunk-ms", type=int, default=100, help="chunk size for --stream")
    group.add_argument("wav", nargs="?", help="the WAV file to transcribe")


def run(args) -> int:
    chosen = [args.train, args.stream is not None, args.checkpoint is not None]
    if sum(chosen) != 1:
        raise ValueError("expected exactly one of --train, --stream RUN or --checkpoint RUN")
    if args.train:
        from lstmkit.apps import speech

        if args.wav:
            raise ValueError(f"--train: expected no WAV file, got {args.wav!r} (use --data DIR)")
        print_report(speech, speech.train(config_from(args)))
        return 0
    if not args.wav:
        raise ValueError("wav: expected a WAV file to transcribe, got none")
    if args.chunk_ms < 1:
        raise ValueError(f"--chunk-ms: expected an int >= 1, got {args.chunk_ms}")
    import torch

    from lstmkit.tasks.speech import SAMPLE_RATE, read_wav

    threads = 1 if args.threads is None else args.threads  # SpeechConfig's default, as --train
    if threads:  # torch's own default, a thread per core, is 10x slower for one stream's tiny
        torch.set_num_threads(threads)  # steps on a busy machine (docs/speech.md)
    samples = read_wav(args.wav)
    if args.stream is not None:
        return _stream(_load(args.stream, "stream"), samples, args.chunk_ms, SAMPLE_RATE)
    from lstmkit.apps.transcriber import transcribe_offline

    print(transcribe_offline(_load(args.checkpoint, "offline"), samples))
    return 0


def _load(path: str, kind: str):
    import lstmkit

    path = Path(path)
    for candidate in (path / kind / "model.safetensors", path / "model.safetensors"):
        if path.is_dir() and candidate.is_file():
            path = candidate
            break
    return lstmkit.load(path)


def _stream(model, samples, chunk_ms: int, rate: int) -> int:
    import numpy as np

    from lstmkit.apps.transcriber import Transcriber, chunks, least_samples, transcribe_offline

    transcriber = Transcriber(model)
    warm = transcriber.open()  # the first push pays one-time costs: keep them out of the timing
    transcriber.push(warm, np.zeros(least_samples(transcriber.meta)))
    transcriber.close(warm)  # (and builds the decoder's bigram, cached)
    sid, text = transcriber.open(), ""
    tick, tock = time.perf_counter(), time.process_time()
    pieces = chunks(samples, chunk_ms)
    for chunk in pieces:
        new = transcriber.push(sid, chunk)
        if new:
            text += new
            print(f"partial: {text.strip()}", flush=True)
    final = transcriber.close(sid)
    busy, cpu = time.perf_counter() - tick, time.process_time() - tock
    offline = transcribe_offline(model, samples)
    print(f"final: {final}")
    print(f"offline decode: {offline} ({'equal' if final == offline else 'DIFFERENT'})")
    print(f"{len(pieces)} chunks of {chunk_ms} ms, {1000 * busy / len(pieces):.2f} ms per chunk, "
          f"real-time factor {busy / (len(samples) / rate):.3f} "
          f"({cpu / (len(samples) / rate):.3f} in CPU time)")
    return 0 if final == offline else 1
