"""Tiny models like the applications' (random weights) for the streaming, export and runtime
tests: a forecaster, a character model, and variants that exercise the general paths."""

import torch

from lstmkit import CellConfig, LayerConfig, ModelConfig, SequenceModel, cell_config


def make_model(cell: CellConfig, output_size: int = 2, seed: int = 0, dtype=torch.float32,
               **options) -> SequenceModel:
    layer_options = {k: options.pop(k) for k in ("num_layers", "zoneout", "bidirectional")
                     if k in options}
    torch.manual_seed(seed)
    config = ModelConfig(LayerConfig(cell, batch_first=True, **layer_options), output_size,
                         **options)
    return SequenceModel(config, dtype=dtype).eval()


def forecaster(dtype=torch.float32) -> SequenceModel:
    return make_model(cell_config("lstm", 3, 16), 1, num_layers=2, dtype=dtype)


def charlm() -> SequenceModel:
    return make_model(cell_config("lstm", 8, 16), 11, vocab_size=11)


def variant() -> SequenceModel:
    cell = cell_config("lstm", 4, 12, proj_size=6, peephole=True, layer_norm=True, cell_clip=2.0)
    return make_model(cell, 3, num_layers=2, zoneout=0.2, pooling="last")



def _lstm(**options) -> CellConfig:
    return cell_config("lstm", 3, 8, **options)


ZOO = {
    "plain": lambda: make_model(_lstm(), 2, num_layers=2),
    "charlm": charlm,
    "variant": variant,
    "peephole_clip_coupled_bidir": lambda: make_model(
        _lstm(peephole=True, cell_clip=0.7, coupled=True), 2, bidirectional=True,
        pooling="mean"),
    "activations": lambda: make_model(
        _lstm(gate_activation="hard_sigmoid", cell_activation="softsign",
              output_activation="elu"), 2, num_layers=2, pooling="max"),
    "activations2": lambda: make_model(
        _lstm(cell_activation="leaky_relu", output_activation="softplus", bias=False), 2),
    "ablation": lambda: make_model(_lstm(forget_gate=False, output_gate=False), 2),
    "layernorm_proj_bidir": lambda: make_model(
        _lstm(layer_norm=True, proj_size=5), 2, num_layers=2, bidirectional=True,
        pooling="last"),
    "gru_bidir": lambda: make_model(cell_config("gru", 3, 8), 2, bidirectional=True,
                                    num_layers=2, pooling="max"),
    "gru_paper": lambda: make_model(cell_config("gru", 3, 8, reset_after=False), 2),
    "gru_zoneout": lambda: make_model(cell_config("gru", 3, 8), 2, zoneout=0.3),
    "rnn_relu_bidir": lambda: make_model(cell_config("rnn", 3, 8, nonlinearity="relu"), 2,
                                         bidirectional=True),
}
"""Name -> a model factory covering the families, variants, directions and poolings."""


def xlstm_stack(dtype=torch.float32, seed: int = 0, **options) -> SequenceModel:
    """A SequenceModel with an xLSTM block stack (an mLSTM block, then an sLSTM block), every
    weight moved off its initialisation (which zeroes the recurrent and gate weights)."""
    from lstmkit.layers.xlstm_blocks import xLSTMConfig

    stack = xLSTMConfig.from_pattern(8, "mLSTM:sLSTM 1:1", 2, input_size=3, round_to=4,
                                     mlstm_heads=2, slstm_heads=2, qkv_blocksize=2)
    torch.manual_seed(seed)
    model = SequenceModel(ModelConfig(stack, options.pop("output_size", 2), **options),
                          dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def xlstm_charlm() -> SequenceModel:
    """A character model with an xLSTM backbone, as ``lstmkit charlm`` would save one."""
    return xlstm_stack(output_size=11, vocab_size=11)
