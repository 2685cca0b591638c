import pytest
import torch

from lstmkit import LayerConfig, ModelConfig, SequenceModel, cell_config


def _model(pooling="none", bidirectional=False, vocab_size=0, mode="lstm"):
    layer = LayerConfig(cell_config(mode, 3, 8), batch_first=True, bidirectional=bidirectional)
    return SequenceModel(ModelConfig(layer, 2, vocab_size=vocab_size, pooling=pooling)).eval()


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_pooling_over_valid_steps_equals_each_sequence_alone(pooling, bidirectional):
    torch.manual_seed(0)
    model = _model(pooling, bidirectional)
    x, lengths = torch.randn(4, 6, 3), torch.tensor([6, 2, 3, 1])
    batched, _ = model(x, lengths=lengths)
    alone = torch.cat([model(x[i:i + 1, :n])[0] for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(batched, alone)


def test_step_by_step_equals_sequence_outputs():
    torch.manual_seed(0)
    model = _model(vocab_size=5)
    tokens = torch.randint(0, 5, (2, 7))
    full, _ = model(tokens)
    state, steps = None, []
    for t in range(tokens.shape[1]):
        out, state = model.step(tokens[:, t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), full)


def test_bad_configs_and_inputs_are_named():
    layer = LayerConfig(cell_config("gru", 3, 8))
    with pytest.raises(ValueError, match="batch_first: expected True"):
        ModelConfig(layer, 2)
    with pytest.raises(ValueError, match="pooling: expected one of"):
        ModelConfig(LayerConfig(cell_config("gru", 3, 8), batch_first=True), 2, pooling="sum")
    with pytest.raises(ValueError, match="output_size: expected an int >= 1, got 0"):
        ModelConfig(LayerConfig(cell_config("gru", 3, 8), batch_first=True), 0)
    with pytest.raises(TypeError, match="expected integer token ids"):
        _model(vocab_size=5)(torch.randn(2, 3))
    with pytest.raises(ValueError, match="step: expected pooling"):
        _model("mean").step(torch.randn(2, 3))


def test_config_round_trips_through_dict():
    config = _model("max", True, mode="gru").config
    assert ModelConfig.from_dict(config.to_dict()) == config
