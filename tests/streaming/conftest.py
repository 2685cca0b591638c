"""Tiny models like the applications' (random weights): a forecaster, a character model, and
variants that exercise the general path."""

import pytest
import torch

from lstmkit import CellConfig, LayerConfig, ModelConfig, SequenceModel


def make_model(cell: CellConfig, output_size: int = 2, seed: int = 0, dtype=torch.float32,
               **options) -> SequenceModel:
    layer_options = {k: options.pop(k) for k in ("num_layers", "zoneout", "bidirectional")
                     if k in options}
    torch.manual_seed(seed)
    config = ModelConfig(LayerConfig(cell, batch_first=True, **layer_options), output_size,
                         **options)
    return SequenceModel(config, dtype=dtype).eval()


def forecaster(dtype=torch.float32) -> SequenceModel:
    return make_model(CellConfig("lstm", 3, 16), 1, num_layers=2, dtype=dtype)


def charlm() -> SequenceModel:
    return make_model(CellConfig("lstm", 8, 16), 11, vocab_size=11)


def variant() -> SequenceModel:
    cell = CellConfig("lstm", 4, 12, proj_size=6, peephole=True, layer_norm=True, cell_clip=2.0)
    return make_model(cell, 3, num_layers=2, zoneout=0.2, pooling="last")


@pytest.fixture
def model():
    return forecaster()
