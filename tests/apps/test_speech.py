import json

import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.apps import speech
from lstmkit.apps.model_options import ModelOptions
from lstmkit.apps.speech import SpeechConfig
from lstmkit.cli import main

pytest.importorskip("espeakng_loader")
pytest.importorskip("jiwer")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A tiny corpus, synthesised once for the module."""
    folder = tmp_path_factory.mktemp("speech-cache")
    speech.corpora.synthetic(_config(folder, folder).part(speech.corpora.CorpusConfig))
    return folder


def _config(cache, out, **kw):
    return SpeechConfig(**{"train_utterances": 12, "val_utterances": 4, "test_utterances": 4,
                           "val_voices": 2, "test_voices": 2, "max_digits": 3,
                           "cache_dir": str(cache), "out": str(out), "epochs": 2,
                           "model": ModelOptions(hidden_size=16, num_layers=1), "batch_size": 4,
                           "baseline_epochs": 1, "stream_utterances": 2, "beam": 4,
                           "progress": False, "threads": 1, **kw})


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("speech-run")
    return out, speech.train(_config(cache, out))


def test_train_reports_unseen_voices_against_the_baseline(run):
    out, report = run
    assert set(report["results"]) == {"offline greedy", "offline beam", "stream greedy",
                                      "stream beam", "baseline greedy"}
    voices = set(report["test_voices"])
    assert len(voices) == 2
    for result in report["results"].values():
        assert set(result["per_voice"]) == voices
        assert result["wer"] >= 0 and result["cer"] >= 0
    assert json.loads((out / "metrics.json").read_text())["test_voices"] == report["test_voices"]
    assert (out / "transcribe.png").stat().st_size > 1000
    offline = lstmkit.load(out / "offline" / "model.safetensors")
    stream = lstmkit.load(out / "stream" / "model.safetensors")
    assert offline.config.layer.bidirectional and not stream.config.layer.bidirectional
    assert offline.meta["kind"] == "offline" and stream.meta["app"] == "transcribe"
    assert report["streaming"]["equal_to_offline"] == report["streaming"]["utterances"] == 2


def test_training_lowers_the_ctc_loss(cache, tmp_path):
    data = speech.load_corpus(_config(cache, tmp_path))
    config = _config(cache, tmp_path)
    frames = speech.log_mels(data["train"], config.part(speech.audio.FeatureConfig))
    meta = speech.make_meta(config, data, frames)
    train = speech.encode(data["train"], meta, frames)
    task = speech._Task(train, train, 4)
    torch.manual_seed(0)
    model = speech.build_model(_config(cache, tmp_path), bidirectional=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = task.validate(model)
    for epoch in range(6):
        for batch in task.batches(epoch, torch.Generator().manual_seed(epoch)):
            loss, _ = task.loss(model, batch, None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert task.validate(model) < 0.8 * before


def test_stream_equals_offline_in_any_chunks(run, cache, tmp_path):
    from lstmkit.apps.transcriber import Transcriber, chunks, transcribe_offline

    out, _ = run
    model = lstmkit.load(out / "stream" / "model.safetensors")
    samples = speech.load_corpus(_config(cache, tmp_path))["test"].float_audio(0)
    x = speech.audio.features(samples, speech.audio.FeatureConfig(**model.meta["features"]),
                              np.array(model.meta["mean"]), np.array(model.meta["var"]))
    with torch.no_grad():
        whole = model(torch.from_numpy(x)[None])[0][0].log_softmax(-1).numpy()
    transcriber = Transcriber(model, decoder="greedy")
    for chunk_ms in (10, 35, 250):
        sid = transcriber.open()
        partial = "".join(transcriber.push(sid, c) for c in chunks(samples, chunk_ms))
        final = transcriber.close(sid)
        assert final == transcribe_offline(model, samples, decoder="greedy")
        assert final == speech.ctc.greedy(whole, model.meta["alphabet"])
        assert final.startswith(partial.strip())


def test_resume_continues_exactly(cache, tmp_path):
    kw = {"models": "offline", "baseline_epochs": 0}
    speech.train(_config(cache, tmp_path / "a", epochs=2, **kw))
    speech.train(_config(cache, tmp_path / "b", epochs=1, **kw))
    speech.train(_config(cache, tmp_path / "b", epochs=2, resume=True, **kw))
    a = lstmkit.load(tmp_path / "a" / "offline" / "model.safetensors").state_dict()
    b = lstmkit.load(tmp_path / "b" / "offline" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="norm: expected 'running' for a streaming model"):
        SpeechConfig(norm="utterance")
    SpeechConfig(norm="utterance", models="offline")
    with pytest.raises(ValueError, match="models: expected one of"):
        SpeechConfig(models="all")


def _silent_wav(path):
    speech.corpora.write_wav(path, np.zeros(8000))
    return path


def test_cli_stream_and_offline(run, cache, tmp_path, capsys):
    out, _ = run
    samples = speech.load_corpus(_config(cache, tmp_path))["test"].float_audio(1)
    wav = tmp_path / "u.wav"
    speech.corpora.write_wav(wav, samples)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # --stream runs with --threads (default 1), as --train does, not torch's default
        assert main(["transcribe", "--stream", str(out), str(wav), "--chunk-ms", "50"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "final: " in printed and "(equal)" in printed and "real-time factor" in printed
    assert main(["transcribe", "--checkpoint", str(out), str(wav)]) == 0
    offline_text = capsys.readouterr().out.strip()
    model = lstmkit.load(out / "offline" / "model.safetensors")
    from lstmkit.apps.transcriber import transcribe_offline
    assert offline_text == transcribe_offline(model, speech.corpora.read_wav(wav))
    assert main(["transcribe", "--stream", str(out / "offline"), str(wav)]) == 2
    assert "got the offline (bidirectional) one: use the run's stream/" in capsys.readouterr().err


def test_cli_errors_are_one_line(run, tmp_path, capsys):
    out, _ = run
    cases = [(["transcribe"], "expected exactly one of --train"),
             (["transcribe", "--stream", str(out)], "expected a WAV file"),
             (["transcribe", "--stream", str(out), str(_silent_wav(tmp_path / "s.wav"))],
              "got silence"),
             (["transcribe", "--stream", str(out / "offline"), str(tmp_path / "none.wav")],
              "no such file")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_spec_augment_masks_whole_bands_and_steps():
    torch.manual_seed(3)
    x = torch.ones(64, 30, 3 * 40)
    y = speech.spec_augment(x, masks=2, n_mels=40).view(64, 30, 3, 40)
    zero = y == 0
    bands = zero.all(1).all(1)  # (B, M) bands masked at every step and stacked frame
    steps = zero.all(2).all(2)  # (B, S) steps masked entirely
    assert torch.equal(zero, (bands[:, None, None, :] | steps[:, :, None, None]).expand_as(zero))
    assert bands.sum(1).max() <= 16 and steps.sum(1).max() <= 8 and zero.any()
    assert torch.equal(speech.spec_augment(x, masks=0, n_mels=40), x)


def test_trains_on_a_folder_of_wavs(cache, tmp_path):
    corpus = speech.load_corpus(_config(cache, tmp_path))["train"]
    folder = tmp_path / "wavs"
    lines = []
    for i in range(len(corpus)):
        speech.corpora.write_wav(folder / f"u{i}.wav", corpus.float_audio(i))
        lines.append(f"u{i}.wav\t{corpus.speakers[i]}\t{corpus.texts[i].upper()}")
    (folder / "transcripts.txt").write_text("\n".join(lines) + "\n")
    report = speech.train(_config(cache, tmp_path / "run", data=str(folder), models="offline",
                                  epochs=1, baseline_epochs=0))
    assert report["corpus"]["source"] == str(folder)
    splits = {s: report["corpus"][s]["utterances"] for s in ("train", "val", "test")}
    assert sum(splits.values()) == len(corpus) and min(splits.values()) >= 1
    assert set(report["test_voices"]) <= set(corpus.speakers)


def test_the_documented_commands_parse():
    """Every ``lstmkit transcribe`` and ``lstmkit serve`` line of README.md and docs/speech.md
    is a command the CLI accepts (README once said --backend, which is --model.backend)."""
    import re
    import shlex
    from pathlib import Path

    from lstmkit.cli import build_parser

    root = Path(__file__).resolve().parents[2]
    lines = [line.split("#")[0] for name in ("README.md", "docs/speech.md")
             for line in (root / name).read_text().splitlines()
             if re.match(r"\s*lstmkit (transcribe|serve) ", line)]
    assert len(lines) >= 6
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])  # argparse exits (SystemExit) if not
        assert args.command in ("transcribe", "serve"), line
