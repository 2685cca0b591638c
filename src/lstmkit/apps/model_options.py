"""The model options every application shares: the recurrent stack a run trains.

An application config nests one :class:`ModelOptions` as its ``model`` field, so every option of
the library (the cell family, its variants, zoneout, the backend) is on every application's
command line as ``--model.NAME``. :func:`model_config` is the one place that turns the options
into the library's :class:`~lstmkit.ModelConfig`.

``cell="xlstm"`` is no cell family but the xLSTM paper's residual block stack
(:class:`~lstmkit.xLSTMConfig`): ``hidden_size`` is its width E, ``num_layers`` its number of
blocks, ``blocks`` which of them are sLSTM blocks, ``num_heads`` the heads of both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from lstmkit.config import LayerConfig, cell_config
from lstmkit.layers.xlstm_blocks import xLSTMConfig
from lstmkit.models import ModelConfig

XLSTM = "xlstm"
"""The ``cell`` that selects the xLSTM block stack."""


@dataclass(frozen=True)
class ModelOptions:
    """The recurrent stack: cell family, size, regularisation, variants and backend."""

    cell: str = "lstm"
    """Cell family: lstm, gru, rnn, slstm or mlstm (any registered family), or xlstm, the
    xLSTM paper's stack of mLSTM and sLSTM residual blocks."""
    hidden_size: int = 64
    """Units per layer and direction."""
    num_layers: int = 1
    """Stacked recurrent layers."""
    bidirectional: bool = False
    """Each layer also reads the sequence backwards (not for models that read step by step)."""
    dropout: float = 0.0
    """Dropout between layers."""
    recurrent_dropout: float = 0.0
    """Variational dropout of the previous hidden state, one mask per sequence."""
    zoneout: float = 0.0
    """Probability that a unit keeps its previous value at a step (training)."""
    backend: str = "auto"
    """Kernel that runs the recurrence: auto, cpu, native, triton, xlstm or reference."""
    bias: bool = True
    """Whether the cells have biases."""
    proj_size: int = 0
    """lstm: project h to this many units (0: no projection)."""
    nonlinearity: str = "tanh"
    """rnn: tanh or relu."""
    peephole: bool = False
    """lstm: gates see the cell state (Gers & Schmidhuber 2000)."""
    coupled: bool = False
    """lstm: forget gate tied to the input gate, f = 1 - i (CIFG)."""
    input_gate: bool = True
    """lstm: false fixes the input gate at 1."""
    forget_gate: bool = True
    """lstm: false fixes the forget gate at 1 (the 1997 LSTM)."""
    output_gate: bool = True
    """lstm: false fixes the output gate at 1."""
    cell_clip: float | None = None
    """lstm: clip the gate pre-activations to [-clip, clip] (None: no clipping)."""
    gate_activation: str = "sigmoid"
    """lstm: activation of the gates i, f, o."""
    cell_activation: str = "tanh"
    """lstm: activation of the candidate g."""
    output_activation: str = "tanh"
    """lstm: activation applied to c_t before the output gate."""
    layer_norm: bool = False
    """lstm: layer normalisation of the gate pre-activations and of c_t (Ba et al. 2016)."""
    reset_after: bool = True
    """gru: the reset gate multiplies after the recurrent product (torch.nn's form)."""
    forget_bias: float | None = None
    """lstm: initial forget-gate bias (None: torch's initialisation)."""
    input_bias: float | None = None
    """lstm: initial input-gate bias (None: torch's initialisation)."""
    chrono: int | None = None
    """lstm: chrono initialisation for dependencies up to this many steps (None: none)."""
    num_heads: int = 4
    """slstm, mlstm: heads, each of hidden_size / num_heads units."""
    forget: str = "sigmoid"
    """slstm, mlstm: forget-gate activation, sigmoid or exp."""
    stabilizer: str = "nxai"
    """slstm: nxai (NX-AI's first step and clamp) or paper (the max at every step)."""
    eps: float = 1e-6
    """mlstm: added to the stabilised normaliser (0: the paper's form)."""
    blocks: str = "1:1"
    """xlstm: the ratio mLSTM:sLSTM of the num_layers blocks (7:1: every eighth is an sLSTM
    block, 1:0 mLSTM blocks only), or the blocks in order as m and s (m,m,s,m: num_layers is
    then their count)."""

    def __post_init__(self):
        from lstmkit.cells import FAMILIES

        if self.cell not in (*FAMILIES, XLSTM):
            raise ValueError(f"model.cell: expected one of {(*FAMILIES, XLSTM)}, "
                             f"got {self.cell!r}")
        try:  # every cross-field rule of the library, checked now rather than after loading data
            backbone_config(self, input_size=1)
        except (TypeError, ValueError) as error:
            raise ValueError(f"model.{error}") from None
        from lstmkit import kernels

        if self.backend not in ("auto", *kernels.names()):
            raise ValueError(f"model.backend: expected one of {('auto', *kernels.names())}, "
                             f"got {self.backend!r}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_LAYER_FIELDS = ("num_layers", "bidirectional", "dropout", "recurrent_dropout", "zoneout",
                 "backend")
_XLSTM_FIELDS = ("hidden_size", "num_layers", "bidirectional", "dropout", "num_heads", "blocks",
                 "backend")
_XLSTM_BACKENDS = ("auto", "xlstm")
"""The block stack calls lstmkit.functional's scans, the xlstm backend's."""


def _refuse_foreign(options: ModelOptions, own: set[str]) -> None:
    """Options set away from their defaults that the chosen cell does not have are errors,
    never silently ignored."""
    defaults = ModelOptions.__dataclass_fields__
    foreign = [f.name for f in fields(options) if f.name not in own and f.name != "cell"
               and getattr(options, f.name) != defaults[f.name].default]
    if foreign:
        raise ValueError(f"{', '.join(foreign)}: expected only with a cell family that has "
                         f"{'it' if len(foreign) == 1 else 'them'}, got cell {options.cell!r}")


def backbone_config(options: ModelOptions, input_size: int) -> LayerConfig | xLSTMConfig:
    """The batch-first recurrent stack ``options`` describe over ``input_size`` features: the
    layers of a cell family, or an xLSTM block stack."""
    if options.cell == XLSTM:
        return xlstm_config(options, input_size)
    return layer_config(options, input_size)


def xlstm_config(options: ModelOptions, input_size: int) -> xLSTMConfig:
    """The xLSTM block stack ``options`` describe (``cell="xlstm"``).

    Examples:
        >>> xlstm_config(ModelOptions(cell="xlstm", blocks="m,s,m"), 3).slstm_at
        (1,)
        >>> xlstm_config(ModelOptions(cell="xlstm", num_layers=8, blocks="7:1"), 3).slstm_at
        (7,)
    """
    _refuse_foreign(options, set(_XLSTM_FIELDS))
    if options.backend not in _XLSTM_BACKENDS:
        raise ValueError(f"backend: expected one of {_XLSTM_BACKENDS} for cell 'xlstm' (the "
                         f"block stack runs the xlstm backend's scans), got {options.backend!r}")
    count, slstm_at = _parse_blocks(options.blocks, options.num_layers)
    return xLSTMConfig(options.hidden_size, count, slstm_at, input_size=input_size,
                       mlstm_heads=options.num_heads, slstm_heads=options.num_heads,
                       dropout=options.dropout, bidirectional=options.bidirectional)


def _parse_blocks(text: str, num_layers: int) -> tuple[int, tuple[int, ...]]:
    """(number of blocks, positions of the sLSTM blocks) of ``blocks`` (see ModelOptions)."""
    text = text.replace(" ", "").lower()
    ratio = text.split(":")
    if len(ratio) == 2 and all(part.isdigit() for part in ratio):
        a, b = int(ratio[0]), int(ratio[1])
        if a + b == 0:
            raise ValueError(f"blocks: expected a ratio with a positive sum, got {text!r}")
        return num_layers, tuple(p for p in range(num_layers) if p % (a + b) >= a)
    kinds = text.split(",")
    if not text or any(kind not in ("m", "s") for kind in kinds):
        raise ValueError(f"blocks: expected a ratio such as 7:1 or blocks such as m,m,s,m, "
                         f"got {text!r}")
    if num_layers not in (1, len(kinds)):
        raise ValueError(f"num_layers: expected 1 or {len(kinds)} (the blocks listed), "
                         f"got {num_layers}")
    return len(kinds), tuple(p for p, kind in enumerate(kinds) if kind == "s")


def layer_config(options: ModelOptions, input_size: int) -> LayerConfig:
    """The batch-first recurrent layers of a cell family ``options`` describe over
    ``input_size`` features."""
    from lstmkit.cells import family_of

    own = {f.name for f in fields(family_of(options.cell).config)} - {"input_size"}
    _refuse_foreign(options, own | set(_LAYER_FIELDS))
    cell = cell_config(options.cell, input_size,
                       **{n: getattr(options, n) for n in sorted(own) if hasattr(options, n)})
    return LayerConfig(cell, batch_first=True,
                       **{n: getattr(options, n) for n in _LAYER_FIELDS})


def model_config(options: ModelOptions, input_size: int, output_size: int, vocab_size: int = 0,
                 pooling: str = "none") -> ModelConfig:
    """The :class:`~lstmkit.ModelConfig` of an application's model: the stack, then a linear
    head of ``output_size`` (per step, or per sequence with ``pooling``)."""
    return ModelConfig(backbone_config(options, input_size), output_size,
                       vocab_size=vocab_size, pooling=pooling)
