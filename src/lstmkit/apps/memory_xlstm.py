"""The xLSTM cells of ``lstmkit memory``: a :class:`~lstmkit.models.SequenceModel` whose
backbone is an :class:`~lstmkit.xLSTM` block stack, as the xLSTM paper runs its formal-language
and associative-recall experiments (xLSTM[0:1], xLSTM[1:0], xLSTM[1:1]).

``--hidden`` is the stack's width E and ``--layers`` its number of blocks; the blocks keep
NX-AI's initialisation, so ``--init`` does not apply to them.
"""

from __future__ import annotations

from lstmkit.layers.xlstm_blocks import xLSTMConfig
from lstmkit.models import ModelConfig, SequenceModel

XLSTM_CELLS = {
    "slstm": "sLSTM",
    "mlstm": "mLSTM",
    "xlstm": "mLSTM:sLSTM 1:1",
}
"""``--cell`` name -> block pattern: sLSTM blocks only (the paper's xLSTM[0:1]), mLSTM blocks
only (xLSTM[1:0]), or alternating, mLSTM first (xLSTM[1:1]; needs two blocks or more)."""


def build_xlstm_model(config, task) -> tuple[SequenceModel, str]:
    """The network for ``task`` (a MemoryConfig with one of :data:`XLSTM_CELLS`) and a
    description of its initialisation."""
    if config.cell == "xlstm" and config.layers < 2:
        raise ValueError(f"layers: expected >= 2 for cell 'xlstm' (an mLSTM and an sLSTM "
                         f"block), got {config.layers}")
    input_size = task.input_size if not task.vocab_size else config.hidden
    backbone = xLSTMConfig.from_pattern(config.hidden, XLSTM_CELLS[config.cell], config.layers,
                                        input_size=input_size, chunk_size=16)
    model = SequenceModel(ModelConfig(backbone, task.output_size, task.vocab_size, task.pooling))
    return model, "NX-AI's xLSTM initialisation"
