"""sLSTM and mLSTM layers in torch.nn.LSTM's style: stacked, batch-first or not, with lengths,
streaming and a typed state.

Each layer k computes the family's input term from its input (``weight_ih_l{k}``, bias) for all
steps at once and then its recurrence (:func:`lstmkit.functional.slstm`,
:func:`lstmkit.functional.mlstm`, through the xlstm backend's scans); dropout sits between layers
in training, as in torch.nn. The same families also run in a generic
:class:`~lstmkit.layers.RecurrentLayer` (``layer_from_config``), with every layer feature.
An mLSTM layer's output is ``h_t = o_t * h~_t`` with its output gate o_t = sigmoid(W_o x_t + b_o)
(the paper's cell); the residual blocks with projections, convolution and norms are in
:mod:`lstmkit.layers.xlstm_blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit import _autocast as autocast
from lstmkit._checks import check_lengths, check_steps, check_tensor
from lstmkit._transforms import static
from lstmkit.cells import mlstm as mlstm_cell
from lstmkit.cells import slstm as slstm_cell
from lstmkit.cells._heads import require_positive_ints
from lstmkit.functional._precision import state_like
from lstmkit.functional.mlstm import FORMS
from lstmkit.kernels.xlstm import mlstm_scan, slstm_scan


@dataclass(frozen=True)
class xLSTMLayerConfig:
    """A stack of sLSTM or mLSTM layers over time."""

    cell: slstm_cell.sLSTMConfig | mlstm_cell.mLSTMConfig
    """The cell of the first layer; deeper layers read the previous layer's output."""
    num_layers: int = 1
    """Layers stacked."""
    batch_first: bool = False
    """Inputs and outputs are (B, T, F) instead of (T, B, F); states are unaffected."""
    dropout: float = 0.0
    """Dropout on the output of every layer but the last, in training (as torch.nn)."""
    form: str = "chunkwise"
    """mLSTM only: the form that computes the recurrence (all give the same function)."""
    chunk_size: int = 64
    """mLSTM only: steps per chunk of the chunkwise form."""

    def __post_init__(self):
        if not isinstance(self.cell, (slstm_cell.sLSTMConfig, mlstm_cell.mLSTMConfig)):
            raise TypeError(f"cell: expected an sLSTMConfig or mLSTMConfig, "
                            f"got {type(self.cell).__name__}")
        require_positive_ints(self, ("num_layers", "chunk_size"))
        if not isinstance(self.batch_first, bool):
            raise TypeError(f"batch_first: expected a bool, got {type(self.batch_first).__name__}")
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1], got {self.dropout!r}")
        if self.form not in FORMS:
            raise ValueError(f"form: expected one of {FORMS}, got {self.form!r}")

    def layer_cell(self, layer: int):
        """The cell of layer ``layer``: deeper layers read H features."""
        if layer == 0:
            return self.cell
        values = {f.name: getattr(self.cell, f.name) for f in fields(self.cell)}
        return type(self.cell)(**{**values, "input_size": self.cell.hidden_size})


class _xLSTMLayer(nn.Module):
    """What the two layers share; subclasses set ``family`` (the cell module) and ``_scan``."""

    family = None

    def __init__(self, config: xLSTMLayerConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        for layer in range(config.num_layers):
            for name, shape in self.family.parameter_spec(config.layer_cell(layer)).items():
                tensor = torch.empty(shape, device=device, dtype=dtype)
                self.register_parameter(f"{name}_l{layer}", nn.Parameter(tensor))
        self.reset_parameters()

    input_size = property(lambda self: self.config.cell.input_size)
    hidden_size = property(lambda self: self.config.cell.hidden_size)
    num_heads = property(lambda self: self.config.cell.num_heads)
    num_layers = property(lambda self: self.config.num_layers)
    batch_first = property(lambda self: self.config.batch_first)

    def layer_weights(self, layer: int) -> dict[str, torch.Tensor]:
        names = self.family.parameter_spec(self.config.layer_cell(layer))
        return {name: getattr(self, f"{name}_l{layer}") for name in names}

    def reset_parameters(self) -> None:
        for layer in range(self.num_layers):
            self.family.init_parameters(self.config.layer_cell(layer), self.layer_weights(layer))

    def init_state(self, batch_size: int | None = None):
        """Zeros: (L, B, *shape) per state tensor, or (L, *shape) with ``batch_size=None``."""
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 0):
            raise ValueError(f"batch_size: expected None or an int >= 0, got {batch_size!r}")
        leading = (self.num_layers,) + (() if batch_size is None else (batch_size,))
        return self.family.zero_state(self.config.cell, leading, state_like(self.weight_ih_l0))

    def forward(self, input: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        """Run the whole sequence.

        Args:
            input: (T, B, I), or (B, T, I) with ``batch_first``.
            state: the initial state, zeros if None: each tensor (L, B, *shape).
            lengths: optional (B,) integer lengths in 1..T; padding then never reaches outputs
                or final states.

        Returns:
            ``(output, state)``: output (T, B, H) (or batch-first), zero past each length, and
            the state after each sequence's last element. Under ``torch.autocast`` a float32
            layer computes in the autocast dtype and returns it (:mod:`lstmkit._autocast`).
        """
        like = self.weight_ih_l0
        low = autocast.dtype(like)
        if low is None:
            return self._forward(input, state, lengths, like, self.layer_weights)

        def weights(layer):
            return {name: t.to(low) for name, t in self.layer_weights(layer).items()}

        with autocast.off(like):  # the state is float32 in 16 bits too (state_like)
            return self._forward(autocast.cast(input, low), state, lengths,
                                 like.new_empty(0, dtype=low), weights)

    def _forward(self, input, state, lengths, like: torch.Tensor, layer_weights):
        """:meth:`forward` computing in ``like``'s dtype on ``layer_weights(layer)``."""
        check_tensor("input", input, like)
        if input.dim() != 3 or input.shape[-1] != self.input_size:
            raise ValueError(f"input: expected shape (T, B, {self.input_size}) or "
                             f"(B, T, {self.input_size}) with batch_first, "
                             f"got {tuple(input.shape)}")
        x = input if self.batch_first else input.transpose(0, 1)  # (B, T, I)
        B, T = x.shape[:2]
        check_steps(T)
        if lengths is not None:
            lengths = check_lengths(lengths, B, T, x.device)
            valid = (torch.arange(T)[None, :] < lengths[:, None]).to(x.device)
            x = torch.where(valid[..., None], x, 0.0)  # NaN in padding reaches nothing
        state = self._initial_state(state, B, like)
        finals = []
        for layer in range(self.num_layers):
            s0 = type(state)(*(t[layer] for t in state))
            x, s = self._scan(self.config.layer_cell(layer), layer_weights(layer), x, s0,
                              lengths)
            finals.append(s)
            rate = static(self.config, "dropout")
            if self.training and rate and layer < self.num_layers - 1:
                x = F.dropout(x, rate, training=True)
        final = type(state)(*(torch.stack(parts) for parts in zip(*finals)))
        return (x if self.batch_first else x.transpose(0, 1)), final

    def _initial_state(self, state, batch: int, like: torch.Tensor):
        like = state_like(like)
        zeros = self.family.zero_state(self.config.cell, (self.num_layers, batch), like)
        if state is None:
            return zeros
        if not isinstance(state, (tuple, list)) or len(state) != len(zeros):
            raise TypeError(f"state: expected a tuple ({', '.join(zeros._fields)}), "
                            f"got {type(state).__name__}")
        for name, t, z in zip(zeros._fields, state, zeros):
            check_tensor(f"state.{name}", t, like)
            if t.shape != z.shape:
                raise ValueError(f"state.{name}: expected shape {tuple(z.shape)}, "
                                 f"got {tuple(t.shape)}")
        return type(zeros)(*state)

    def step(self, x_t: torch.Tensor, state=None):
        """One step, ``forward`` on a sequence of length 1: x_t (B, I) -> (y_t (B, H), state).
        Steps, or chunks through ``forward``, equal one call on the whole sequence."""
        if not isinstance(x_t, torch.Tensor) or x_t.dim() != 2:
            got = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise ValueError(f"x_t: expected shape (B, {self.input_size}), got {got}")
        y, state = self.forward(x_t.unsqueeze(1 if self.batch_first else 0), state)
        return y.squeeze(1 if self.batch_first else 0), state

    def extra_repr(self) -> str:
        c = self.config
        return (f"{c.cell.input_size}, {c.cell.hidden_size}, num_heads={c.cell.num_heads}, "
                f"num_layers={c.num_layers}, batch_first={c.batch_first}")


class sLSTM(_xLSTMLayer):
    """Stacked sLSTM layers (equations in :mod:`lstmkit.cells.slstm`).

    Parameters per layer k: ``weight_ih_l{k}`` (4H, I), ``weight_hh_l{k}`` (NH, DH, 4, DH) (one
    block per head), ``bias_l{k}`` (4H); gates in the order i, f, z, o. State
    :class:`~lstmkit.cells.slstm.sLSTMState` (h, c, n, m), each (L, B, H).

    Examples:
        >>> layer = sLSTM(3, 8, num_heads=2, num_layers=2, batch_first=True)
        >>> y, state = layer(torch.randn(4, 5, 3))
        >>> y.shape, state.c.shape
        (torch.Size([4, 5, 8]), torch.Size([2, 4, 8]))
    """

    family = slstm_cell

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 4,
                 num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, forget: str = "sigmoid", stabilizer: str = "nxai",
                 device=None, dtype=None):
        cell = slstm_cell.sLSTMConfig(input_size, hidden_size, bias, num_heads, forget=forget,
                                      stabilizer=stabilizer)
        super().__init__(xLSTMLayerConfig(cell, num_layers, batch_first, dropout), device, dtype)

    _scan = staticmethod(slstm_scan)


class mLSTM(_xLSTMLayer):
    """Stacked mLSTM layers (equations in :mod:`lstmkit.cells.mlstm`).

    Parameters per layer k: ``weight_ih_l{k}`` and ``bias_ih_l{k}``, the blocks q, k, v (H rows
    each), i, f (NH rows each) and o (H rows). State :class:`~lstmkit.cells.mlstm.mLSTMState`:
    C (L, B, NH, D, D), n (L, B, NH, D), m (L, B, NH), with D = H / NH.

    Examples:
        >>> layer = mLSTM(3, 8, num_heads=2, batch_first=True)
        >>> y, state = layer(torch.randn(4, 5, 3))
        >>> y.shape, state.C.shape
        (torch.Size([4, 5, 8]), torch.Size([1, 4, 2, 4, 4]))
    """

    family = mlstm_cell

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 4,
                 num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, forget: str = "sigmoid", eps: float = 1e-6,
                 form: str = "chunkwise", chunk_size: int = 64, device=None, dtype=None):
        cell = mlstm_cell.mLSTMConfig(input_size, hidden_size, bias, num_heads, forget=forget,
                                      eps=eps)
        config = xLSTMLayerConfig(cell, num_layers, batch_first, dropout, form, chunk_size)
        super().__init__(config, device, dtype)

    def _scan(self, cfg, weights, x, state, lengths):
        return mlstm_scan(cfg, weights, x, state, lengths, self.config.form,
                          self.config.chunk_size)
