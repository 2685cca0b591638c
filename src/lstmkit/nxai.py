"""Converters between NX-AI's ``xlstm.xLSTMBlockStack`` (xlstm 2.0.6) and :class:`lstmkit.xLSTM`.

The two stacks are built block for block alike, so the conversion renames tensors and changes
three layouts:

* NX-AI's layer norms store ``weight - 1`` (``residual_weight``); lstmkit stores the weight.
* NX-AI's sLSTM cell keeps its recurrent matrix and bias in its backend's internal layout:
  vanilla (NH, 4 DH, DH) and gate-major bias, cuda (NH, DH, 4 DH) and head-major bias. The
  recurrent matrix's shape tells the two apart.
  lstmkit keeps (NH, DH, 4, DH) and a gate-major bias.
* NX-AI's sLSTM layer feeds the output of its module named ``fgate`` to the input gate and
  ``igate`` to the forget gate (``i, f = self.fgate(x), self.igate(x)``); lstmkit names each
  after the gate it feeds, so those two swap names here.

The state dicts convert without xlstm installed; :func:`to_nxai` builds NX-AI's module and needs
it. NX-AI's mLSTM forward starts its stabiliser from nothing (m_0 = -inf), lstmkit's zero state
from m_0 = 0: outputs agree to about 1e-6 relative (how much eps weighs), or to rounding when
the lstmkit stack starts from :func:`nxai_initial_state`.
"""

from __future__ import annotations

import math

import torch

from lstmkit._optional import require
from lstmkit.cells.mlstm import mLSTMState
from lstmkit.layers.xlstm_blocks import BlockState, xLSTM, xLSTMConfig

_SHARED = {  # lstmkit name -> NX-AI name, within a block
    "conv.conv.weight": "xlstm.conv1d.conv.weight",
    "conv.conv.bias": "xlstm.conv1d.conv.bias",
}
_MLSTM = {
    "proj_up.weight": "xlstm.proj_up.weight",
    "proj_up.bias": "xlstm.proj_up.bias",
    "q_proj.weight": "xlstm.q_proj.weight",
    "q_proj.bias": "xlstm.q_proj.bias",
    "k_proj.weight": "xlstm.k_proj.weight",
    "k_proj.bias": "xlstm.k_proj.bias",
    "v_proj.weight": "xlstm.v_proj.weight",
    "v_proj.bias": "xlstm.v_proj.bias",
    "igate.weight": "xlstm.mlstm_cell.igate.weight",
    "igate.bias": "xlstm.mlstm_cell.igate.bias",
    "fgate.weight": "xlstm.mlstm_cell.fgate.weight",
    "fgate.bias": "xlstm.mlstm_cell.fgate.bias",
    "skip": "xlstm.learnable_skip",
    "proj_down.weight": "xlstm.proj_down.weight",
    "proj_down.bias": "xlstm.proj_down.bias",
}
_SLSTM = {
    "igate.weight": "xlstm.fgate.weight",  # NX-AI's "fgate" module feeds the input gate
    "fgate.weight": "xlstm.igate.weight",
    "zgate.weight": "xlstm.zgate.weight",
    "ogate.weight": "xlstm.ogate.weight",
    "ffn_up.weight": "ffn.proj_up.weight",
    "ffn_up.bias": "ffn.proj_up.bias",
    "ffn_down.weight": "ffn.proj_down.weight",
    "ffn_down.bias": "ffn.proj_down.bias",
}
_NORMS_MLSTM = {"norm.weight": "xlstm_norm.weight",
                "out_norm.weight": "xlstm.mlstm_cell.outnorm.weight"}
_NORMS_SLSTM = {"norm.weight": "xlstm_norm.weight", "out_norm.weight": "xlstm.group_norm.weight",
                "ffn_norm.weight": "ffn_norm.weight"}
_RECURRENT = "xlstm.slstm_cell._recurrent_kernel_"
_BIAS = "xlstm.slstm_cell._bias_"


def config_from_nxai(config) -> xLSTMConfig:
    """lstmkit's :class:`xLSTMConfig` for an ``xlstm.xLSTMBlockStackConfig``; refuses the
    options lstmkit does not compute, with the reason."""
    m, s = config.mlstm_block, config.slstm_block
    kernels, rounds = set(), set()
    options = {}
    if not config.add_post_blocks_norm:
        raise ValueError("add_post_blocks_norm: expected True (lstmkit's xLSTM ends with a "
                         "LayerNorm), got False")
    if m is not None and len(config.slstm_at) < config.num_blocks:
        layer = m.mlstm
        if not layer.round_proj_up_dim_up:
            raise ValueError("mlstm.round_proj_up_dim_up: expected True, got False")
        kernels.add(layer.conv1d_kernel_size)
        rounds.add(layer.round_proj_up_to_multiple_of)
        options.update(mlstm_heads=layer.num_heads, mlstm_proj_factor=layer.proj_factor,
                       qkv_blocksize=layer.qkv_proj_blocksize)
    if s is not None and config.slstm_at:
        layer, ffn = s.slstm, s.feedforward
        if layer.function != "slstm" or not layer.group_norm_weight:
            raise ValueError(f"slstm: expected function 'slstm' with group_norm_weight, got "
                             f"{layer.function!r}, group_norm_weight={layer.group_norm_weight}")
        if ffn is None or ffn.act_fn != "gelu" or not ffn.round_proj_up_dim_up:
            raise ValueError("slstm_block.feedforward: expected a gated MLP with act_fn 'gelu' "
                             "rounded up, got " + repr(ffn and ffn.act_fn))
        kernels.add(layer.conv1d_kernel_size)
        rounds.add(ffn.round_proj_up_to_multiple_of)
        options.update(slstm_heads=layer.num_heads, ffn_proj_factor=ffn.proj_factor)
    if len(kernels) != 1 or len(rounds) != 1 or 0 in kernels:
        raise ValueError(f"conv1d_kernel_size, round_proj_up_to_multiple_of: expected one "
                         f"positive kernel size and one multiple for all blocks, got "
                         f"{sorted(kernels)}, {sorted(rounds)}")
    return xLSTMConfig(config.embedding_dim, config.num_blocks, tuple(config.slstm_at),
                       conv_kernel=kernels.pop(), round_to=rounds.pop(), bias=config.bias,
                       dropout=config.dropout, **options)


def _block_names(config: xLSTMConfig, b: int) -> tuple[dict, dict]:
    """(lstmkit -> NX-AI names of plain tensors, of norm weights) for block ``b``."""
    if b in config.slstm_at:
        return {**_SHARED, **_SLSTM}, _NORMS_SLSTM
    return {**_SHARED, **_MLSTM}, _NORMS_MLSTM


def from_nxai_state_dict(state_dict: dict, config: xLSTMConfig,
                         slstm_backend: str | None = None) -> dict:
    """An NX-AI xLSTMBlockStack state dict -> lstmkit xLSTM's (for ``config``)."""
    out = {"post_norm.weight": state_dict["post_blocks_norm.weight"] + 1}
    for b in range(config.num_blocks):
        names, norms = _block_names(config, b)
        theirs = f"blocks.{b}."
        for ours, their in names.items():
            if theirs + their in state_dict:
                out[f"blocks.{b}.{ours}"] = state_dict[theirs + their]
        for ours, their in norms.items():
            out[f"blocks.{b}.{ours}"] = state_dict[theirs + their] + 1
        if b in config.slstm_at:
            R, bias = state_dict[theirs + _RECURRENT], state_dict[theirs + _BIAS]
            out[f"blocks.{b}.weight_hh"], out[f"blocks.{b}.bias"] = _slstm_from(
                R, bias, config.slstm_heads, slstm_backend)
    return out


def _slstm_from(R, bias, NH, backend):
    backend = backend or ("vanilla" if R.shape[1] == 4 * R.shape[2] else "cuda")
    D = R.shape[2] if backend == "vanilla" else R.shape[1]
    if backend == "vanilla":  # (NH, 4 DH_out, DH_in), gate-major bias
        return R.reshape(NH, 4, D, D).permute(0, 3, 1, 2).contiguous(), bias.clone()
    if backend == "cuda":  # (NH, DH_in, 4 DH_out), head-major bias
        return (R.reshape(NH, D, 4, D).clone(),
                bias.reshape(NH, 4, D).transpose(0, 1).reshape(-1).contiguous())
    raise ValueError(f"slstm_backend: expected 'vanilla' or 'cuda', got {backend!r}")


def to_nxai_state_dict(state_dict: dict, config: xLSTMConfig,
                       slstm_backend: str = "vanilla") -> dict:
    """lstmkit xLSTM's state dict -> NX-AI xLSTMBlockStack's, with the sLSTM cells in the
    internal layout of ``slstm_backend`` ("vanilla" or "cuda")."""
    if config.bidirectional:
        raise ValueError("bidirectional: expected False (NX-AI's stack reads forwards only), "
                         "got True")
    if config.input_size != config.embedding_dim:
        raise ValueError(f"input_size: expected embedding_dim (NX-AI's stack has no input "
                         f"projection), got {config.input_size}")
    out = {"post_blocks_norm.weight": state_dict["post_norm.weight"] - 1}
    for b in range(config.num_blocks):
        names, norms = _block_names(config, b)
        for ours, their in names.items():
            if f"blocks.{b}.{ours}" in state_dict:
                out[f"blocks.{b}.{their}"] = state_dict[f"blocks.{b}.{ours}"]
        for ours, their in norms.items():
            out[f"blocks.{b}.{their}"] = state_dict[f"blocks.{b}.{ours}"] - 1
        if b in config.slstm_at:
            R, bias = state_dict[f"blocks.{b}.weight_hh"], state_dict[f"blocks.{b}.bias"]
            NH, D = R.shape[:2]
            if slstm_backend == "vanilla":
                R_int = R.permute(0, 2, 3, 1).reshape(NH, 4 * D, D)
                bias_int = bias
            elif slstm_backend == "cuda":
                R_int = R.reshape(NH, D, 4 * D)
                bias_int = bias.reshape(4, NH, D).transpose(0, 1).reshape(-1)
            else:
                raise ValueError(f"slstm_backend: expected 'vanilla' or 'cuda', "
                                 f"got {slstm_backend!r}")
            out[f"blocks.{b}.{_RECURRENT}"] = R_int.contiguous()
            out[f"blocks.{b}.{_BIAS}"] = bias_int.contiguous()
    return out


def from_nxai(stack, slstm_backend: str | None = None) -> xLSTM:
    """An lstmkit :class:`xLSTM` with the configuration and weights of an NX-AI
    ``xLSTMBlockStack``."""
    config = config_from_nxai(stack.config)
    p = stack.post_blocks_norm.weight
    model = xLSTM(config, device=p.device, dtype=p.dtype)
    model.load_state_dict(from_nxai_state_dict(stack.state_dict(), config, slstm_backend))
    return model


def nxai_config(config: xLSTMConfig, context_length: int, slstm_backend: str = "vanilla"):
    """NX-AI's ``xLSTMBlockStackConfig`` for lstmkit's ``config`` (needs xlstm)."""
    xlstm = require("xlstm", "xlstm", "Building NX-AI's xLSTM")
    mlstm = xlstm.mLSTMBlockConfig(mlstm=xlstm.mLSTMLayerConfig(
        conv1d_kernel_size=config.conv_kernel, qkv_proj_blocksize=config.qkv_blocksize,
        num_heads=config.mlstm_heads, proj_factor=config.mlstm_proj_factor,
        round_proj_up_to_multiple_of=config.round_to))
    slstm = xlstm.sLSTMBlockConfig(
        slstm=xlstm.sLSTMLayerConfig(backend=slstm_backend, num_heads=config.slstm_heads,
                                     conv1d_kernel_size=config.conv_kernel, dtype="float32",
                                     enable_automatic_mixed_precision=False),
        feedforward=xlstm.FeedForwardConfig(proj_factor=config.ffn_proj_factor, act_fn="gelu",
                                            round_proj_up_to_multiple_of=config.round_to))
    return xlstm.xLSTMBlockStackConfig(
        mlstm_block=mlstm, slstm_block=slstm, context_length=context_length,
        num_blocks=config.num_blocks, embedding_dim=config.embedding_dim, bias=config.bias,
        dropout=config.dropout, slstm_at=list(config.slstm_at))


def to_nxai(model: xLSTM, context_length: int, slstm_backend: str = "vanilla"):
    """NX-AI's ``xLSTMBlockStack`` with ``model``'s weights (needs xlstm); ``context_length``
    is the longest sequence its parallel mLSTM forward will take."""
    xlstm = require("xlstm", "xlstm", "Building NX-AI's xLSTM")
    stack = xlstm.xLSTMBlockStack(nxai_config(model.config, context_length, slstm_backend))
    p = model.post_norm.weight
    stack = stack.to(device=p.device, dtype=p.dtype)
    stack.load_state_dict(to_nxai_state_dict(model.state_dict(), model.config, slstm_backend))
    return stack


def nxai_initial_state(model: xLSTM, batch_size: int) -> tuple[BlockState, ...]:
    """The zero state with the mLSTM stabilisers at m_0 = -inf: NX-AI's parallel forward's
    starting point, so that lstmkit's outputs equal NX-AI's to rounding."""
    state = model.init_state(batch_size)
    return tuple(s if not isinstance(s.cell, mLSTMState) else
                 BlockState(s.conv, s.cell._replace(m=torch.full_like(s.cell.m, -math.inf)))
                 for s in state)
