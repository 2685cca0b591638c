import numpy as np
import pytest
import torch

import lstmkit
from lstmkit.apps import classify
from lstmkit.apps.classify import ClassifyConfig


def test_split_is_stratified_and_keeps_every_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    train, val = classify.split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    assert set(labels[train]) == {0, 1, 2}


def test_tiny_run_on_digits(tmp_path):
    config = ClassifyConfig(dataset="digits", epochs=2, hidden_size=8, batch_size=64,
                            pooling="last", progress=False, out=str(tmp_path))
    report = classify.train(config)
    assert set(report["metrics"]) == {"lstm", "1-NN (summary features)",
                                      "logistic regression (summary features)"}
    assert np.array(report["confusion"]).sum() == report["test"] == 540
    assert (tmp_path / "confusion.png").stat().st_size > 0
    model = lstmkit.load(tmp_path / "model.safetensors")
    assert model.config.layer.bidirectional and model.meta["classes"][3] == "3"
    again = classify.evaluate(model, config)
    assert again["metrics"]["lstm"] == pytest.approx(report["metrics"]["lstm"])
    table = classify.predict(model, config)
    assert len(table) == 540
    assert (table["true"] == table["predicted"]).mean() == pytest.approx(
        report["metrics"]["lstm"]["accuracy"])


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_padding_never_changes_a_prediction(pooling):
    torch.manual_seed(0)
    model = classify.build_model(3, 4, ClassifyConfig(pooling=pooling, hidden_size=6)).eval()
    model.meta = {"mean": [0.0] * 3, "std": [1.0] * 3}
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 3)) for n in (3, 9, 5)]
    batch = classify.pad(seqs, np.zeros(3), np.zeros(3), np.ones(3))
    with torch.no_grad():
        together = classify._logits(model, batch.x, batch.lengths)
        for i, seq in enumerate(seqs):
            alone = model(torch.tensor(seq, dtype=torch.float32)[None])[0]
            torch.testing.assert_close(together[i], alone[0], rtol=1e-5, atol=1e-6)
