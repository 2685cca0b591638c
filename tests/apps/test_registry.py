import pytest

import lstmkit
from lstmkit import LayerConfig, ModelConfig, SequenceModel, cell_config
from lstmkit.apps import registry
from lstmkit.apps.model_options import ModelOptions, model_config


@pytest.mark.parametrize("name", sorted(registry.APPS))
def test_input_paths_are_stored_absolute(name, tmp_path, monkeypatch):
    """Before: a checkpoint stored the data path as typed, and evaluate from another folder
    failed to find it."""
    monkeypatch.chdir(tmp_path)
    cls = registry.APPS[name].config
    assert cls.path_fields
    for field in cls.path_fields:
        given = {"data": "d"} if field in ("labels", "test_data") else {}
        config = cls(**{field: "some/file", **given})
        assert getattr(config, field) == str(tmp_path / "some" / "file")


def test_a_checkpoint_from_before_the_nested_model_options_still_loads(tmp_path):
    model = SequenceModel(ModelConfig(LayerConfig(cell_config("gru", 8, 5), batch_first=True),
                                      2, vocab_size=8))
    model.meta = {"app": "charlm", "config": {"mode": "gru", "hidden_size": 5, "epochs": 2,
                                              "text": "t.txt", "vocab": "ignored"}}
    config = registry.stored_config(model, epochs=3)
    assert (config.model.cell, config.model.hidden_size, config.epochs) == ("gru", 5, 3)


def test_unknown_application():
    model = SequenceModel(ModelConfig(LayerConfig(cell_config("lstm", 2, 3), batch_first=True),
                                      1))
    assert model.meta == {}  # declared on every model, empty when built in code
    with pytest.raises(ValueError, match="without a known application"):
        registry.app_of(model)


def test_model_options_reach_the_model_config():
    options = ModelOptions(cell="lstm", hidden_size=6, num_layers=2, peephole=True,
                           layer_norm=True, zoneout=0.1, recurrent_dropout=0.2,
                           backend="reference", proj_size=3, forget_bias=1.0)
    config = model_config(options, 4, 2, pooling="last")
    cell, layer = config.layer.cell, config.layer
    assert (cell.input_size, cell.hidden_size, cell.proj_size, cell.peephole, cell.layer_norm,
            cell.forget_bias) == (4, 6, 3, True, True, 1.0)
    assert (layer.num_layers, layer.zoneout, layer.recurrent_dropout, layer.backend,
            layer.batch_first) == (2, 0.1, 0.2, "reference", True)
    lstmkit.SequenceModel(config)(__import__("torch").zeros(1, 3, 4))


@pytest.mark.parametrize("options, message", [
    ({"cell": "gru", "layer_norm": True},
     "model.layer_norm: expected only with a cell family that has it, got cell 'gru'"),
    ({"hidden_size": 0}, "model.hidden_size: expected an int >= 1"),
    ({"backend": "fast"}, "model.backend: expected one of"),
    ({"zoneout": 1.5}, "model.zoneout: expected a float in [0, 1)"),
])
def test_model_options_are_checked_at_once(options, message):
    with pytest.raises(ValueError) as error:
        ModelOptions(**options)
    assert message in str(error.value)
