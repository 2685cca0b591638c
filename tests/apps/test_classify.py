import numpy as np
import pandas as pd
import pytest
import torch

import lstmkit
from lstmkit.apps import classify
from lstmkit.apps import classify_model as cm
from lstmkit.apps.classify import ClassifyConfig
from lstmkit.apps.model_options import ModelOptions
from lstmkit.tasks import examples

TINY = {"epochs": 2, "model": ModelOptions(hidden_size=8, bidirectional=True), "batch_size": 32,
        "progress": False}


def test_split_is_stratified_and_keeps_every_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    train, val = cm.split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    assert set(labels[train]) == {0, 1, 2}


def test_tiny_run_on_digits(tmp_path):
    config = ClassifyConfig(dataset="digits", pooling="last", out=str(tmp_path),
                            **{**TINY, "batch_size": 64})
    report = classify.train(config)
    assert set(report["metrics"]) == {"lstm", "1-NN (summary features)",
                                      "logistic regression (summary features)"}
    assert np.array(report["confusion"]).sum() == report["test"] == 540
    assert sum(row["support"] for row in report["per_class"].values()) == 540
    assert (tmp_path / "confusion.png").stat().st_size > 0
    model = lstmkit.load(tmp_path / "model.safetensors")
    assert model.config.layer.bidirectional and model.meta["classes"][3] == "3"
    again = classify.evaluate(model, config)
    assert again["metrics"]["lstm"] == pytest.approx(report["metrics"]["lstm"])
    table = classify.predict_table(model, config)
    assert len(table) == 540
    assert (table["true"] == table["predicted"]).mean() == pytest.approx(
        report["metrics"]["lstm"]["accuracy"])
    probs = table[[f"p_{c}" for c in model.meta["classes"]]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_padding_never_changes_a_prediction(pooling):
    torch.manual_seed(0)
    model = classify.build_model(3, 4, ClassifyConfig(
        pooling=pooling, model=ModelOptions(hidden_size=6, bidirectional=True))).eval()
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 3)) for n in (3, 9, 5)]
    batch = cm.pad(seqs, np.zeros(3, dtype=int), np.zeros(3), np.ones(3))
    with torch.no_grad():
        together = cm.logits(model, batch.x, batch.lengths)
        for i, seq in enumerate(seqs):
            alone = model(torch.tensor(seq, dtype=torch.float32)[None])[0]
            torch.testing.assert_close(together[i], alone[0], rtol=1e-5, atol=1e-6)


def test_a_folder_of_csv_files_trains_evaluates_and_predicts(tmp_path):
    folder = examples.write_waves(tmp_path / "waves", count=60)
    config = ClassifyConfig(data=str(folder), out=str(tmp_path / "run"), **TINY)
    report = classify.train(config)
    assert report["dataset"] == "waves" and report["train"] + report["test"] == 60
    assert set(report["per_class"]) == {"slowing_down", "speeding_up", "steady"}
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    assert model.meta["config"]["data"] == str(folder.resolve())  # absolute: loads anywhere
    new = examples.write_waves(tmp_path / "new", count=7, seed=5, labelled=False)
    table = classify.predict_table(model, classify.ClassifyConfig(data=str(new)))
    assert list(table.columns[:2]) == ["id", "predicted"] and len(table) == 7
    assert table["id"].tolist() == [f"seq{i:03d}" for i in range(7)]
    scored = classify.evaluate(model, ClassifyConfig(data=str(folder)))
    assert scored["metrics"]["lstm"] == pytest.approx(report["metrics"]["lstm"])


def test_balanced_class_weights():
    w = cm.class_weights("balanced", np.array([0] * 6 + [1] * 3 + [2] * 1), 3)
    torch.testing.assert_close(w, torch.tensor([10 / 18, 10 / 9, 10 / 3]))
    assert cm.class_weights("none", np.array([0]), 1) is None
    with pytest.raises(ValueError, match="expected 3 weights"):
        cm.class_weights("1,2", np.array([0]), 3)


def test_weighted_loss_is_the_weighted_mean():
    model = classify.build_model(2, 3, ClassifyConfig(model=ModelOptions(hidden_size=4)))
    batch = cm.pad([np.ones((3, 2)), np.zeros((2, 2))], np.array([0, 2]), 0, 1)
    weight = torch.tensor([1.0, 1.0, 3.0])
    with torch.no_grad():
        out = cm.logits(model, batch.x, batch.lengths)
        each = torch.nn.functional.cross_entropy(out, batch.y, reduction="none")
        torch.testing.assert_close(cm.loss(model, batch, weight), (each[0] + 3 * each[1]) / 4)


def test_sequence_labelling_per_step(tmp_path):
    table = examples.write_activity(tmp_path / "activity.csv", count=30)
    config = ClassifyConfig(data=str(table), labelling="step", out=str(tmp_path / "run"),
                            **TINY)
    report = classify.train(config)
    assert report["labelling"] == "step"
    assert np.array(report["confusion"]).sum() == report["test_steps"]
    assert set(report["metrics"]) == {"lstm", "majority class",
                                      "logistic regression (each step alone)"}
    model = lstmkit.load(tmp_path / "run" / "model.safetensors")
    assert model.config.pooling == "none"
    table = classify.predict_table(model, ClassifyConfig(data=str(table), labelling="step"))
    assert list(table.columns[:4]) == ["id", "step", "true", "predicted"]
    with pytest.raises(ValueError, match="expected a label column .label. for labels per step"):
        classify.train(ClassifyConfig(data=str(examples.write_waves(tmp_path / "w", count=9)),
                                      labelling="step", out=str(tmp_path / "bad"), **TINY))


def test_step_padding_is_ignored_by_the_loss():
    model = classify.build_model(2, 3, ClassifyConfig(labelling="step", data="x",
                                                      model=ModelOptions(hidden_size=4)))
    seqs = [np.ones((4, 2)), np.zeros((2, 2))]
    batch = cm.pad(seqs, [np.array([0, 1, 2, 1]), np.array([2, 2])], 0, 1)
    assert batch.y[1].tolist() == [2, 2, cm.IGNORE, cm.IGNORE]
    with torch.no_grad():
        both = cm.loss(model, batch, None)
        a = cm.loss(model, cm.pad(seqs[:1], [np.array([0, 1, 2, 1])], 0, 1), None)
        b = cm.loss(model, cm.pad(seqs[1:], [np.array([2, 2])], 0, 1), None)
    torch.testing.assert_close(both, (4 * a + 2 * b) / 6)


def test_fit_and_predict_from_python(tmp_path):
    seqs, labels = examples.waves(40)
    model = classify.fit(seqs, labels, out=str(tmp_path / "a"), **TINY)
    assert sorted(model.meta["classes"]) == ["slowing_down", "speeding_up", "steady"]
    assert classify.predict(model, seqs[:5]).shape == (5,)
    padded = np.zeros((5, 40, 2))
    for i, s in enumerate(seqs[:5]):
        padded[i, :len(s)] = s
    lengths = [len(s) for s in seqs[:5]]
    np.testing.assert_allclose(classify.predict_proba(model, padded, lengths=lengths),
                               classify.predict_proba(model, seqs[:5]), rtol=1e-5, atol=1e-6)
    frame = pd.DataFrame([{"id": i, "time": t, "a": x, "b": y, "label": labels[i]}
                          for i, s in enumerate(seqs) for t, (x, y) in enumerate(s)])
    again = classify.fit(frame, out=str(tmp_path / "b"), **TINY)
    assert classify.predict_proba(again, frame).shape == (40, 3)
