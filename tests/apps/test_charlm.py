import math

import pytest
import torch

import lstmkit
from lstmkit.apps import charlm
from lstmkit.apps.charlm import CharLMConfig
from lstmkit.tasks.text import Vocabulary


def _config(tmp_path, text, **kw):
    return CharLMConfig(**{"text": str(text), "epochs": 3, "steps_per_epoch": 30, "seq_len": 20,
                           "batch_size": 8, "hidden_size": 32, "embedding_size": 8,
                           "lr": 1e-2, "progress": False, "threads": 1,
                           "out": str(tmp_path / "run"), **kw})


def _text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("the cat sat on the mat. " * 200)
    return path


def test_learns_a_regular_text(tmp_path):
    report = charlm.train(_config(tmp_path, _text(tmp_path)))
    assert report["vocabulary"] == 12  # 11 characters + the unknown id
    assert report["test_bits_per_char"] < 0.5 < math.log2(12)
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    assert model.meta["app"] == "charlm"
    again = charlm.evaluate(model, _config(tmp_path, _text(tmp_path)))
    assert again["test_bits_per_char"] == pytest.approx(report["test_bits_per_char"])


def test_batches_continue_each_stream(tmp_path):
    config = _config(tmp_path, _text(tmp_path))
    ids = Vocabulary("abc").encode("abc" * 400)
    task = charlm._Task(ids, ids[:50], config)
    first, second = task.batches(0, None)[:2]
    assert first[0].shape == (8, 21)
    assert torch.equal(first[0][:, -1], second[0][:, 0])  # the next step starts where it ended
    later = task.batches(1, None)[0]  # the text goes on across epochs
    start = 30 % task.chunks * 20
    assert torch.equal(later[0], task.streams[:, start:start + 21])


def test_sampling_is_seeded_and_top_k_one_is_greedy(tmp_path):
    charlm.train(_config(tmp_path, _text(tmp_path), epochs=1))
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    a = charlm.sample(model, "the ", 40, temperature=1.0, seed=3)
    assert a == charlm.sample(model, "the ", 40, temperature=1.0, seed=3)
    assert a.startswith("the ") and len(a) == 44
    greedy = {charlm.sample(model, "the ", 20, top_k=1, seed=s) for s in range(3)}
    assert len(greedy) == 1
    with pytest.raises(ValueError, match="temperature"):
        charlm.sample(model, "x", 5, temperature=0)


def test_text_too_short_for_the_batch(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hello world, " * 10)
    with pytest.raises(ValueError, match="expected at least"):
        charlm.train(_config(tmp_path, path))
