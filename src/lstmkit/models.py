"""A whole sequence model: optional embedding, a recurrent stack, optional pooling, a linear head.

Every application trains one; checkpoints store its :class:`ModelConfig`; the streaming engine and
the exporters take one. Inputs are batch-first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lstmkit.config import LayerConfig
from lstmkit.layers import layer_from_config
from lstmkit.layers.base import RecurrentLayer
from lstmkit.layers.xlstm_blocks import xLSTM, xLSTMConfig

POOLINGS = ("none", "last", "mean", "max")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`SequenceModel` without its weights."""

    layer: LayerConfig | xLSTMConfig
    """The recurrent stack (an xLSTM block stack, or layers that must be batch-first)."""
    output_size: int
    """Outputs of the head: per step, or per sequence when pooled."""
    vocab_size: int = 0
    """If > 0, inputs are token ids in [0, vocab_size) embedded into the stack's input size."""
    pooling: str = "none"
    """"none": an output per step; "last", "mean" or "max": one per sequence, over its valid
    steps."""

    def __post_init__(self):
        if not isinstance(self.layer, (LayerConfig, xLSTMConfig)):
            raise TypeError(f"layer: expected a LayerConfig or xLSTMConfig, "
                            f"got {type(self.layer).__name__}")
        if not self.layer.batch_first:
            raise ValueError("layer.batch_first: expected True (models are batch-first), got False")
        for name in ("output_size", "vocab_size"):
            value = getattr(self, name)
            least = int(name == "output_size")
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name}: expected an int >= {least}, got {value!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {POOLINGS}, got {self.pooling!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "layer": self.layer.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        layer = data.pop("layer")
        backbone = xLSTMConfig if "embedding_dim" in layer else LayerConfig
        return cls(layer=backbone.from_dict(layer), **data)


class SequenceModel(nn.Module):
    """Embedding (if ``vocab_size``) -> recurrent stack -> pooling (if any) -> linear head.

    Shape: x (B, T, I) floats, or (B, T) token ids; output (B, T, O), or (B, O) when pooled.
    """

    meta: dict
    """What the checkpoint holds besides the weights and config: the application that trained
    the model (``meta["app"]``), its config (``meta["config"]``) and data statistics; empty for
    a model built in code. JSON-ready, saved by :func:`lstmkit.checkpoint.save`."""

    def __init__(self, config: ModelConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.meta = {}
        xlstm = isinstance(config.layer, xLSTMConfig)
        cell = config.layer if xlstm else config.layer.cell
        self.embedding = None
        if config.vocab_size:
            self.embedding = nn.Embedding(config.vocab_size, cell.input_size, device=device,
                                          dtype=dtype)
        self.rnn = (xLSTM if xlstm else layer_from_config)(config.layer, device, dtype)
        width = cell.output_size * config.layer.num_directions
        self.head = nn.Linear(width, config.output_size, device=device, dtype=dtype)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            return x
        if x.dtype.is_floating_point:
            raise TypeError(f"input: expected integer token ids for a model with vocab_size="
                            f"{self.config.vocab_size}, got {x.dtype}")
        return self.embedding(x)

    def init_state(self, batch_size: int | None = None):
        return self.rnn.init_state(batch_size)

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        """Returns ``(output, state)``; see the class docstring for shapes."""
        y, state = self.rnn(self._features(x), state, lengths=lengths)  # (B, T, D*P)
        return self.head(self._pool(y, lengths)), state

    def _pool(self, y: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        pooling = self.config.pooling
        if pooling == "none":
            return y
        steps = y.shape[1]
        if lengths is None:
            lengths = torch.full((y.shape[0],), steps)
        lengths = lengths.to(y.device)
        if pooling == "last":
            forward = y.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, y.shape[-1]))[:, 0]
            if not self.config.layer.bidirectional:
                return forward
            # The reverse direction ends its pass at step 0.
            half = y.shape[-1] // 2
            return torch.cat([forward[:, :half], y[:, 0, half:]], dim=-1)
        valid = (torch.arange(steps, device=y.device)[None, :] < lengths[:, None])[..., None]
        if pooling == "mean":
            return (y * valid).sum(1) / lengths[:, None].to(y.dtype)
        return y.masked_fill(~valid, float("-inf")).amax(1)

    def step(self, x_t: torch.Tensor, state=None):
        """One step: ``(output_t (B, O), state)``. Not defined for mean or max pooling."""
        if self.config.pooling in ("mean", "max"):
            raise ValueError(f"step: expected pooling 'none' or 'last', got "
                             f"{self.config.pooling!r} (it needs the whole sequence)")
        x = x_t if self.embedding is None else self._features(x_t)
        modules = self._modules  # not nn.Module's __getattr__: a microsecond a name, each step
        rnn, head = modules["rnn"], modules["head"]
        if isinstance(rnn, RecurrentLayer):  # its fused step applies the head in one call
            return rnn.step_with_head(x, state, head)
        y, state = rnn.step(x, state)
        return head(y), state
