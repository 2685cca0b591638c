"""Stacking and direction: a layer stack built from a one-layer, one-direction scan.

Layers own time: this module reverses sequences for the backward direction (each at its own
length), draws the dropout masks, applies dropout between layers and gathers the final states.
A kernel that only knows how to scan one layer forwards becomes a whole backend with
:func:`stack_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lstmkit.cells import FAMILIES
from lstmkit.cells.base import state_sizes, state_tensors
from lstmkit.config import CellConfig, LayerConfig


class StepMasks(NamedTuple):
    """What a scan multiplies in at each step; None where unused.

    ``hidden`` (B, P) scales h_{t-1} before the recurrent product (variational dropout, one mask
    for all steps). ``zoneout`` holds one (T, B, size) tensor per state tensor: the weight of the
    previous value, ``s_t = z * s_{t-1} + (1 - z) * s_new``; 0/1 draws in training, the
    probability itself in evaluation.
    """

    hidden: torch.Tensor | None = None
    zoneout: tuple[torch.Tensor, ...] | None = None


def step_masks(config: LayerConfig, cell: CellConfig, steps: int, like: torch.Tensor,
               training: bool) -> StepMasks:
    """Draw the masks of one layer and direction, from torch's global generator."""
    batch = like.shape[1]
    hidden = None
    if training and config.recurrent_dropout:
        keep = 1.0 - config.recurrent_dropout
        hidden = _bernoulli(like, (batch, cell.output_size), keep) / keep
    zoneout = None
    if config.zoneout:
        p = config.zoneout
        if training:
            zoneout = tuple(_bernoulli(like, (steps, batch, size), p)
                            for size in state_sizes(cell))
        else:
            zoneout = tuple(like.new_full((1, 1, 1), p).expand(steps, batch, size)
                            for size in state_sizes(cell))
    return StepMasks(hidden, zoneout)


def _bernoulli(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """0/1 draws with probability ``p`` of 1. Comparing uniforms is about twice as fast on the
    CPU as ``bernoulli_``, which showed in training with zoneout (docs/benchmarks.md)."""
    return (torch.rand(shape, dtype=like.dtype, device=like.device) < p).to(like.dtype)


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


def stack_of(scan: Callable) -> Callable:
    """A backend ``run`` from ``scan(cell, weights, x, state, lengths, masks) -> (y, state)``."""

    def run(config: LayerConfig, weights, x, state, lengths, training):
        family = FAMILIES[config.cell.mode]
        initial = state_tensors(state)  # each (L*D, B, size)
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
                masks = step_masks(config, cell, x.shape[0], x, training)
                y, s = scan(cell, weights[layer][direction], xs, s0, lengths, masks)
                outputs.append(y if direction == 0 else reverse(y, index))
                for acc, t in zip(finals, state_tensors(s)):
                    acc.append(t)
            layer_input = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
            if training and config.dropout and layer < config.num_layers - 1:
                layer_input = F.dropout(layer_input, config.dropout, training=True)
        return layer_input, family.make_state(*(torch.stack(acc) for acc in finals))

    return run
