"""The layer module shared by LSTM, GRU and RNN: parameters, input handling, dispatch, streaming."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstmkit import _autocast as autocast
from lstmkit import kernels
from lstmkit._checks import check_batch_size, check_lengths, check_steps, check_tensor
from lstmkit.cells import family_of
from lstmkit.cells.base import check_state, config_repr, state_tensors, zero_state
from lstmkit.config import LayerConfig, changed_fields
from lstmkit.layers import fused_step, stack


def _torch_mode(family, cell) -> str:
    """torch.nn's ``mode`` string: "LSTM", "GRU", "RNN_TANH", "RNN_RELU"; a family torch.nn does
    not have gets its key in capitals."""
    return family.torch.mode(cell) if family.torch else family.key.upper()


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


class RecurrentLayer(nn.Module):
    """A stack of recurrent layers over time, configured by a :class:`LayerConfig`.

    Parameters are named as torch.nn's (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), the
    variants' tensors after them in the same pattern (``weight_peephole_l0``).
    """

    def __init__(self, config: LayerConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.family = family_of(config.cell)
        if self.family.step_output and config.recurrent_dropout:
            raise ValueError(f"recurrent_dropout: expected 0 for the {self.family.key!r} family "
                             f"(its output is no part of its state: there is no h_{{t-1}} to "
                             f"drop), got {config.recurrent_dropout}")
        for layer in range(config.num_layers):
            for direction in range(config.num_directions):
                for name, shape in self.family.parameters(config.layer_cell(layer)).items():
                    tensor = torch.empty(shape, device=device, dtype=dtype)
                    self.register_parameter(name + _suffix(layer, direction), nn.Parameter(tensor))
        self.reset_parameters()
        if config.backend != "auto":  # an unknown or unsuitable backend fails here, not at use
            self.backend()

    # torch.nn's attributes, read from the config.
    mode = property(lambda self: _torch_mode(self.family, self.config.cell))
    input_size = property(lambda self: self.config.cell.input_size)
    hidden_size = property(lambda self: self.config.cell.hidden_size)
    num_layers = property(lambda self: self.config.num_layers)
    bias = property(lambda self: self.config.cell.bias)
    batch_first = property(lambda self: self.config.batch_first)
    dropout = property(lambda self: self.config.dropout)
    bidirectional = property(lambda self: self.config.bidirectional)
    proj_size = property(lambda self: getattr(self.config.cell, "proj_size", 0))

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every submodule first: say why not, rather than fail
        # deep in TorchScript's compiler on the first property(lambda) above.
        raise NotImplementedError(
            "torch.jit.script: lstmkit layers are not scriptable (TorchScript cannot compile "
            "their family and backend dispatch in Python); use torch.export.export or "
            "torch.compile, which both take dynamic batch and time, or, for a configuration "
            "torch.nn computes, script layer.to_torch()")

    @property
    def _like(self) -> torch.Tensor:
        """A tensor of the dtype and device that inputs and states must have (a subclass whose
        weights are not of the activations' dtype, lstmkit.layers.quantized's, names another)."""
        return self.weight_ih_l0

    _weights = "_parameters"
    """The module dict that holds the cells' tensors (a quantised layer's are buffers)."""

    def _cell_parameters(self, layer: int, direction: int) -> dict[str, nn.Parameter]:
        # From the module's dict where the name is there: nn.Module's __getattr__ costs about
        # 1 us a name on every forward. A parametrised weight (torch.nn.utils.parametrize) is
        # not there, and getattr computes it.
        suffix, own, out = _suffix(layer, direction), getattr(self, self._weights), {}
        for name in self.family.parameters(self.config.layer_cell(layer)):
            key = name + suffix
            out[name] = own[key] if key in own else getattr(self, key)
        return out

    def reset_parameters(self) -> None:
        """torch.nn's initialisation (same draws, same order), then the gate-bias options."""
        for layer in range(self.num_layers):
            for direction in range(self.config.num_directions):
                params = self._cell_parameters(layer, direction)
                self.family.init(self.config.layer_cell(layer), params)

    def cell_weights(self) -> list[list[dict[str, nn.Parameter]]]:
        """``[layer][direction]`` -> that cell's tensors by name."""
        return [[self._cell_parameters(layer, direction)
                 for direction in range(self.config.num_directions)]
                for layer in range(self.num_layers)]

    def flatten_parameters(self) -> None:
        """Accepted for torch.nn compatibility; lstmkit keeps no flattened copy."""

    def init_state(self, batch_size: int | None = None):
        """Zeros: (L*D, B, size) per state tensor, or (L*D, size) with ``batch_size=None``."""
        check_batch_size(batch_size)
        leading = (self.num_layers * self.config.num_directions,)
        leading += () if batch_size is None else (batch_size,)
        return zero_state(self.family, self.config.cell, leading, self._like)

    def backend(self, device=None, dtype=None):
        """The backend that runs this layer on ``device`` / ``dtype`` in the current mode."""
        like = self._like
        device = torch.device(device or like.device)
        return kernels.get(kernels.resolve_name(self.config.backend, self.config, device,
                                                dtype or like.dtype, self.training))

    def forward(self, input, hx=None, lengths: torch.Tensor | None = None):
        """Run the whole sequence.

        Args:
            input: (T, B, I), (B, T, I) with ``batch_first``, unbatched (T, I), or a
                ``PackedSequence``.
            hx: the initial state, zeros if None: (L*D, B, P) for h and (L*D, B, H) for an
                LSTM's c; without the B dimension for unbatched input.
            lengths: optional 1-D integer tensor (B,) of each sequence's length in 1..T; padding
                then never reaches outputs or final states, and the reverse direction starts at
                each sequence's own last element.

        Returns:
            ``(output, state)``: output (T, B, D*P) (or as the input's layout; a PackedSequence
            for a packed input), zero past each length; state as ``hx``, the state after each
            sequence's last element. Under ``torch.autocast`` a float32 layer computes in the
            autocast dtype and returns it (:mod:`lstmkit._autocast`).
        """
        like = self._like
        low = autocast.dtype(like)
        if low is None:
            return self._forward(input, hx, lengths, like, self.cell_weights())
        weights = [[{name: None if t is None else t.to(low) for name, t in cell.items()}
                    for cell in layer] for layer in self.cell_weights()]
        with autocast.off(like):
            return self._forward(autocast.cast(input, low), autocast.cast(hx, low), lengths,
                                 like.new_empty(0, dtype=low), weights)

    def _forward(self, input, hx, lengths, like: torch.Tensor, weights):
        """:meth:`forward` with ``like`` (the dtype and device of the computation) and the cells'
        ``weights`` in that dtype."""
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths: expected None with a PackedSequence (it has its own), "
                                 "got a tensor")
            return self._forward_packed(input, hx, like, weights)
        check_tensor("input", input, like)
        if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(f"input: expected shape (T, B, {self.input_size}), "
                             f"(B, T, {self.input_size}) with batch_first, or "
                             f"(T, {self.input_size}) unbatched, got {tuple(input.shape)}")
        batched = input.dim() == 3
        x = input if not batched else (input.transpose(0, 1) if self.batch_first else input)
        x = x if batched else x.unsqueeze(1)  # (T, B, I)
        steps, batch = x.shape[:2]
        check_steps(steps)
        if lengths is not None:
            lengths = check_lengths(lengths, batch, steps, x.device)
            if batch == 0:  # no sequence to mask: every backend runs the empty batch as it is
                lengths = None
        state = self._initial_state(hx, batch, batched, like)
        backend = self.backend(dtype=like.dtype)
        if lengths is not None and not backend.declaration.declares("lengths"):
            raise ValueError(f"lengths: backend {backend.name!r} does not declare them")
        y, state = stack.run(backend, self.family, self.config, weights, x, state, lengths,
                             self.training)
        if not batched:
            final = self.family.make_state(*(s.squeeze(1) for s in state_tensors(state)))
            return y.squeeze(1), final
        return (y.transpose(0, 1) if self.batch_first else y), state

    def _initial_state(self, hx, batch: int, batched: bool, like: torch.Tensor):
        leading = (self.num_layers * self.config.num_directions, batch)
        if hx is None:
            return zero_state(self.family, self.config.cell, leading, like)
        if batched:
            return check_state(self.family, self.config.cell, hx, leading, like, "hx")
        state = check_state(self.family, self.config.cell, hx, leading[:1], like, "hx")
        return self.family.make_state(*(s.unsqueeze(1) for s in state_tensors(state)))

    def _forward_packed(self, packed: PackedSequence, hx, like: torch.Tensor, weights):
        padded, lengths = pad_packed_sequence(packed, batch_first=self.batch_first)
        y, state = self._forward(padded, hx, lengths, like, weights)
        if packed.sorted_indices is not None:
            y = y.index_select(0 if self.batch_first else 1, packed.sorted_indices)
            lengths = lengths[packed.sorted_indices]
        out = pack_padded_sequence(y, lengths, batch_first=self.batch_first)
        return PackedSequence(out.data, out.batch_sizes, packed.sorted_indices,
                              packed.unsorted_indices), state

    def step(self, x_t: torch.Tensor, state=None):
        """One time step with the state carried: ``forward`` on a sequence of length 1.

        Shape: x_t (B, I) or unbatched (I,) -> (y_t (B, P), state). A run step by step, or in
        chunks through ``forward``, equals one call on the whole sequence (in evaluation mode;
        training draws fresh dropout masks per call).

        In inference (no gradient wanted) a plain float32 LSTM on the CPU with backend "auto"
        or "cpu" and at most a few rows steps through the cpu backend's compiled single-stream
        step (:mod:`lstmkit.layers.fused_step`): one call for the stack on weights packed once,
        equal to ``forward`` to float32 rounding (not bit for bit: backend="native" keeps
        torch's own kernels for a step too). An int8 plain LSTM (``quantize_dynamic``) takes
        it too, on its int8 matrices; with int8 activations it steps through the int8 scan's
        own step code instead, equal to ``forward`` bit for bit.
        """
        return self.step_with_head(x_t, state)

    def step_with_head(self, x_t: torch.Tensor, state=None, head: nn.Module | None = None):
        """:meth:`step`, then ``head`` on its output: ``(head(y_t), state)``. The fused step
        applies a plain ``nn.Linear`` head in the same call (:meth:`SequenceModel.step`)."""
        fused = fused_step.step(self, x_t, state, head)
        if fused is not None:
            return fused
        if self.bidirectional:
            raise ValueError("step: expected a unidirectional layer, got bidirectional=True "
                             "(the reverse direction needs the whole sequence)")
        check_tensor("x_t", x_t, autocast.accepted(x_t, self._like))
        if x_t.dim() not in (1, 2) or x_t.shape[-1] != self.input_size:
            raise ValueError(f"x_t: expected shape (B, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(x_t.shape)}")
        x = x_t.unsqueeze(0 if x_t.dim() == 1 or not self.batch_first else 1)
        y, state = self.forward(x, state)
        y = y.squeeze(0 if x_t.dim() == 1 or not self.batch_first else 1)
        return (y if head is None else head(y)), state

    @classmethod
    def from_torch(cls, module: nn.RNNBase, **options):
        """An lstmkit layer with ``module``'s configuration and weights; ``options`` add
        lstmkit's own (``backend``, initialisation options, ...)."""
        expected = cls.family.torch.module
        if type(module) is not expected:
            raise TypeError(f"module: expected a torch.nn.{expected.__name__}, "
                            f"got {type(module).__name__}")
        p = module.weight_ih_l0
        layer = cls(**cls._torch_arguments(module), device=p.device, dtype=p.dtype, **options)
        # Tensors that only a variant has (peepholes, layer-norm gains) keep their initialisation.
        layer.load_state_dict(module.state_dict(), strict=False)
        return layer

    def to_torch(self) -> nn.RNNBase:
        """The equivalent torch.nn module with these weights (plain configurations only)."""
        if not self.config.is_torch_compatible:
            raise ValueError("to_torch: expected a configuration torch.nn computes, got one with "
                             "lstmkit-only options")
        p = self.weight_ih_l0
        module = self.family.torch.module(**self._torch_arguments(self), device=p.device,
                                          dtype=p.dtype)
        module.load_state_dict(self.state_dict())
        return module

    def extra_repr(self) -> str:
        layer = {k: v for k, v in changed_fields(self.config).items() if k != "cell"}
        return config_repr(self.config.cell, **layer)
