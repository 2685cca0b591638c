import pytest
import torch

import lstmkit
from lstmkit import LayerConfig, ModelConfig, SequenceModel, cell_config
from lstmkit.checkpoint import save, save_tensors


def _model():
    cell = cell_config("lstm", 3, 6, peephole=True, layer_norm=True)
    return SequenceModel(ModelConfig(LayerConfig(cell, 2, batch_first=True), 2))


def test_save_load_gives_the_same_model_and_metadata(tmp_path):
    model = _model()
    save(tmp_path / "m.safetensors", model, stats={"mean": [1.5, 2.0]})
    loaded = lstmkit.load(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    assert loaded.meta == {"stats": {"mean": [1.5, 2.0]}}
    assert not loaded.training
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(loaded(x)[0], model.eval()(x)[0], rtol=0, atol=0)


def test_write_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "m.safetensors"
    save(path, _model())
    first = path.read_bytes()
    save(path, _model())
    assert path.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left


def test_missing_corrupt_and_foreign_files_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        lstmkit.load(tmp_path / "absent.safetensors")
    (tmp_path / "junk").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="expected a safetensors file"):
        lstmkit.load(tmp_path / "junk")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign"))
    with pytest.raises(ValueError, match="expected format"):
        lstmkit.load(tmp_path / "foreign")
    save_tensors(tmp_path / "mismatch", {"w": torch.zeros(2)}, {"model": _model().config.to_dict()})
    with pytest.raises(ValueError, match="do not match its config"):
        lstmkit.load(tmp_path / "mismatch")


# A format-1 cell config: "mode" named the family, and every family's fields were saved at
# their defaults (what lstmkit.checkpoint/1 wrote; spelled out here, not derived from the code).
_FORMAT_1_CELL = {
    "bias": True, "proj_size": 0, "nonlinearity": "tanh", "peephole": False, "coupled": False,
    "input_gate": True, "forget_gate": True, "output_gate": True, "cell_clip": None,
    "gate_activation": "sigmoid", "cell_activation": "tanh", "output_activation": "tanh",
    "layer_norm": False, "reset_after": True, "forget_bias": None, "input_bias": None,
    "chrono": None,
}


@pytest.mark.parametrize("family, options", [
    ("lstm", {"peephole": True, "forget_bias": 1.0}), ("gru", {"reset_after": False}),
    ("rnn", {"nonlinearity": "relu"})])
def test_format_1_checkpoints_still_load(tmp_path, family, options):
    import json

    from safetensors.torch import save_file

    model = SequenceModel(ModelConfig(LayerConfig(cell_config(family, 3, 4, **options),
                                                  batch_first=True), 2))
    cell = {"mode": family, "input_size": 3, "hidden_size": 4, **_FORMAT_1_CELL, **options}
    layer = {"cell": cell, "num_layers": 1, "batch_first": True, "dropout": 0.0,
             "bidirectional": False, "recurrent_dropout": 0.0, "zoneout": 0.0,
             "backend": "auto"}
    meta = {"model": {"layer": layer, "output_size": 2, "vocab_size": 0, "pooling": "none"},
            "epoch": 3}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "old.safetensors"),
              metadata={"format": "lstmkit.checkpoint/1", "meta": json.dumps(meta)})
    loaded = lstmkit.load(tmp_path / "old.safetensors")
    assert loaded.config == model.config and loaded.meta == {"epoch": 3}
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(loaded(x)[0], model.eval()(x)[0], rtol=0, atol=0)
    save(tmp_path / "new.safetensors", loaded)  # and saves as format 2, with the family's key
    from lstmkit.checkpoint import load_tensors

    _, saved = load_tensors(tmp_path / "new.safetensors")
    assert saved["model"]["layer"]["cell"]["family"] == family
    assert "mode" not in saved["model"]["layer"]["cell"]
