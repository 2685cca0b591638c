"""Stacking and direction: a layer stack built from a backend's one-layer, one-direction scan.

Layers own time: this module reverses sequences for the backward direction (each at its own
length), draws the dropout masks, applies dropout between layers and gathers the final states.
:func:`run` calls a backend's ``scan`` through all of it, or hands the whole stack to a backend
that declares one (:mod:`lstmkit.kernels.contract`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lstmkit import kernels
from lstmkit._transforms import differentiates_a_backward, static
from lstmkit.cells.base import Family, state_tensors
from lstmkit.config import CellConfig, LayerConfig
from lstmkit.kernels.contract import Backend, StepMasks


def step_masks(family: Family, config: LayerConfig, cell: CellConfig, steps: int,
               like: torch.Tensor, training: bool) -> StepMasks:
    """Draw the masks of one layer and direction, from torch's global generator."""
    batch, rate, p = like.shape[1], static(config, "recurrent_dropout"), static(config, "zoneout")
    hidden = None
    if training and rate:
        keep = 1.0 - rate
        hidden = _bernoulli(like, (batch, cell.output_size), keep) / keep
    zoneout = None
    if p:
        if training:
            zoneout = tuple(_bernoulli(like, (steps, batch, *shape), p)
                            for shape in family.state_shapes(cell))
        else:
            zoneout = tuple(like.new_full((1,) * (2 + len(shape)), p)
                            .expand(steps, batch, *shape) for shape in family.state_shapes(cell))
    return StepMasks(hidden, zoneout)


def _bernoulli(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """0/1 draws with probability ``p`` of 1. Comparing uniforms is about twice as fast on the
    CPU as ``bernoulli_``, which showed in training with zoneout (docs/benchmarks.md); in
    place, as no boolean tensor is made and converted (a quarter less time again)."""
    return torch.rand(shape, dtype=like.dtype, device=like.device).lt_(p)


def reverse_index(lengths: torch.Tensor | None, steps: int, device) -> torch.Tensor | None:
    """Index (T, B) that reverses each sequence within its own length and leaves padding in
    place; None when all sequences are full length (a plain flip does)."""
    if lengths is None:
        return None
    t = torch.arange(steps)[:, None]
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    return index.to(device)


def reverse(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """x (T, B, F) with each sequence reversed (its own inverse)."""
    if index is None:
        return x.flip(0)
    return x.gather(0, index[..., None].expand_as(x))


def _zero_padding(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (T, B, I) with zeros past each length. Padding may hold anything, NaN included; masking
    only the outputs would still let it into the products, and 0 * NaN into the gradients."""
    valid = (torch.arange(x.shape[0])[:, None] < lengths[None, :]).to(x.device)  # (T, B)
    return torch.where(valid[..., None], x, 0.0)


def run(backend: Backend, family: Family, config: LayerConfig, weights, x, state, lengths,
        training: bool):
    """The stack over x (T, B, I) from state tensors (L*D, B, ...): ``backend.stack`` if it
    declares one, else its scan layer by layer and direction by direction; the reference's
    under torch.func's higher-order transforms (:func:`differentiates_a_backward`)."""
    if differentiates_a_backward():
        backend = kernels.get("reference")
    if backend.stack is not None:
        return backend.stack(family, config, weights, x, state, lengths, training)
    initial = state_tensors(state)  # each (L*D, B, ...)
    finals: list[list[torch.Tensor]] = [[] for _ in initial]
    index = reverse_index(lengths, x.shape[0], x.device) if config.bidirectional else None
    layer_input = x if lengths is None else _zero_padding(x, lengths)
    for layer in range(config.num_layers):
        cell = config.layer_cell(layer)
        outputs = []
        for direction in range(config.num_directions):
            k = layer * config.num_directions + direction
            s0 = family.make_state(*(t[k] for t in initial))
            xs = layer_input if direction == 0 else reverse(layer_input, index)
            masks = step_masks(family, config, cell, x.shape[0], x, training)
            y, s = backend.scan(family, cell, weights[layer][direction], xs, s0, lengths, masks)
            outputs.append(y if direction == 0 else reverse(y, index))
            for acc, t in zip(finals, state_tensors(s)):
                acc.append(t)
        layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
        if training and (rate := static(config, "dropout")) and layer < config.num_layers - 1:
            layer_input = F.dropout(layer_input, rate, training=True)
    return layer_input, family.make_state(*(torch.stack(acc) for acc in finals))
