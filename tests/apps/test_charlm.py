import math

import pytest
import torch

import lstmkit
from lstmkit.apps import charlm
from lstmkit.apps.charlm import CharLMConfig
from lstmkit.apps.model_options import ModelOptions
from lstmkit.tasks.text import Vocabulary


def _config(tmp_path, text, **kw):
    return CharLMConfig(**{"text": str(text), "epochs": 3, "steps_per_epoch": 30, "seq_len": 20,
                           "batch_size": 8, "model": ModelOptions(hidden_size=32),
                           "embedding_size": 8, "lr": 1e-2, "progress": False, "threads": 1,
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
    # temperature 0 is argmax, whatever the seed, and the same as top-k 1
    assert {charlm.sample(model, "the ", 20, temperature=0, seed=s) for s in range(3)} == greedy
    with pytest.raises(ValueError, match="temperature"):
        charlm.sample(model, "x", 5, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        charlm.sample(model, "x", 5, top_p=0)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[1e-9, 0.5, 0.3, 0.15, 0.05]]))  # id 0: unknown
    g = torch.Generator().manual_seed(0)
    drawn = {int(charlm._draw(logits, 1.0, 0, 0.75, g)) for _ in range(300)}
    assert drawn == {1, 2}  # 0.5 + 0.3 reach 0.75; 0.15 and 0.05 are cut
    drawn = {int(charlm._draw(logits, 1.0, 0, 0.4, g)) for _ in range(100)}
    assert drawn == {1}  # the likeliest alone already holds 0.4
    assert {int(charlm._draw(logits, 1.0, 0, 1.0, g)) for _ in range(400)} == {1, 2, 3, 4}


def test_state_carries_across_epochs_and_resume_is_exact(tmp_path):
    """Before: the state was reset at every epoch start while the text read on."""
    seen = []
    original = charlm._Task.loss

    def spy(self, model, batch, carry):
        seen.append(carry)
        return original(self, model, batch, carry)

    config = _config(tmp_path, _text(tmp_path), epochs=2, steps_per_epoch=5)
    charlm._Task.loss = spy
    try:
        charlm.train(config)
    finally:
        charlm._Task.loss = original
    assert seen[0] is None and seen[5] is not None  # the first step of epoch 2 gets a state
    whole = lstmkit.load(tmp_path / "run" / "model.safetensors")
    charlm.train(_config(tmp_path, _text(tmp_path), epochs=1, steps_per_epoch=5,
                         out=str(tmp_path / "cut")))
    charlm.train(_config(tmp_path, _text(tmp_path), epochs=2, steps_per_epoch=5,
                         out=str(tmp_path / "cut"), resume=True))
    resumed = lstmkit.load(tmp_path / "cut" / "model.safetensors")
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_progress_bar_in_bits_per_character(tmp_path, capsys):
    charlm.train(_config(tmp_path, _text(tmp_path), epochs=1, steps_per_epoch=3,
                         progress=True))
    assert "bits/char" in capsys.readouterr().err


def test_init_from_fine_tunes_on_another_text(tmp_path):
    charlm.train(_config(tmp_path, _text(tmp_path), epochs=1))
    base = lstmkit.load(tmp_path / "run" / "model.safetensors")
    other = tmp_path / "other.txt"
    other.write_text("the mat sat on the cat! " * 200)  # "!" is not in the vocabulary
    report = charlm.train(_config(tmp_path, other, epochs=1, model=CharLMConfig().model,
                                  init_from=str(tmp_path / "run"), out=str(tmp_path / "tuned")))
    tuned = lstmkit.load(tmp_path / "tuned" / "model.safetensors")
    assert tuned.config == base.config and tuned.meta["vocab"] == base.meta["vocab"]
    assert report["unknown_characters"] == 200
    assert tuned.meta["config"]["model"]["hidden_size"] == 32  # the checkpoint's, stored
    with pytest.raises(ValueError, match="options of the --init-from checkpoint"):
        charlm.train(_config(tmp_path, other, model=ModelOptions(hidden_size=16),
                             init_from=str(tmp_path / "run"), out=str(tmp_path / "bad")))


def test_evaluate_scores_another_text_whole(tmp_path):
    charlm.train(_config(tmp_path, _text(tmp_path), epochs=1))
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    own = charlm.evaluate(model, _config(tmp_path, _text(tmp_path)))
    assert own["test_characters"] == len(_text(tmp_path).read_text()) - int(0.95 * 4800)
    other = tmp_path / "other.txt"
    other.write_text("the cat sat. " * 10)
    whole = charlm.evaluate(model, _config(tmp_path, other))
    assert whole["test_characters"] == 130 and whole["scored"] == "whole text"


def test_text_too_short_for_the_batch(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hello world, " * 10)
    with pytest.raises(ValueError, match="expected at least"):
        charlm.train(_config(tmp_path, path))
