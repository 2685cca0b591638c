import pytest
import torch

import lstmkit
from lstmkit import CellConfig, LayerConfig, ModelConfig, SequenceModel
from lstmkit.checkpoint import save, save_tensors


def _model():
    cell = CellConfig("lstm", 3, 6, peephole=True, layer_norm=True)
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
