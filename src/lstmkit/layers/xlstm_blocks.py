"""The xLSTM paper's residual blocks and the :class:`xLSTM` stack (Beck et al. 2024, section 2.4
and figures 9-10), laid out as NX-AI's xlstm 2.0.6 builds them so its weights load one to one
(:mod:`lstmkit.nxai`).

Shapes: B batch, T time, E the stack's width, U the mLSTM block's inner width, NH heads.

* **sLSTM block, post-up-projection**: ``x + GroupNorm(sLSTM(conv(LN(x))))``, then a gated MLP
  ``x + W_down(gelu(W_g LN(x)) * W_u LN(x))``. The input and forget gates read the causal
  convolution's (SiLU) output, z and o read LN(x); all four are headwise (block-diagonal)
  projections, and the recurrent matrix is block-diagonal by head.
* **mLSTM block, pre-up-projection**: ``LN(x)`` is projected up to (x_m, z) of width U each;
  q and k read SiLU(conv(x_m)), v reads x_m (headwise projections), i and f read [q, k, v];
  the mLSTM's output is normalised per head, gets a learnable skip ``+ s * SiLU(conv(x_m))``, is
  gated by SiLU(z) and projected back down to E: ``x + W_down(...)``.

Pre-LayerNorm residual throughout, and a final LayerNorm after the stack. Every block carries a
state (the convolution's last K - 1 inputs and the cell's state), so ``forward`` in chunks and
``step`` equal one call.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lstmkit import _autocast as autocast
from lstmkit._autocast import SIXTEEN_BIT
from lstmkit._checks import check_lengths, check_steps, check_tensor
from lstmkit._transforms import static
from lstmkit.cells import mlstm as mlstm_cell
from lstmkit.cells import serializable
from lstmkit.cells import slstm as slstm_cell
from lstmkit.cells._heads import require_positive_ints
from lstmkit.functional import mlstm, slstm
from lstmkit.functional._precision import state_like
from lstmkit.functional.mlstm import FORMS
from lstmkit.layers.stack import reverse, reverse_index


def round_up(value: float, multiple: int) -> int:
    """NX-AI's inner widths: ``value`` rounded up to a multiple of ``multiple``."""
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class xLSTMConfig:
    """An xLSTM stack: which block sits where, and the blocks' sizes (NX-AI's defaults)."""

    embedding_dim: int
    """E, the width of the residual stream."""
    num_blocks: int = 1
    """Blocks stacked."""
    slstm_at: tuple[int, ...] = ()
    """Positions (0-based) of sLSTM blocks; the others are mLSTM blocks."""
    input_size: int = 0
    """Features of the input if not E (0: E); a linear map takes them to E. After
    construction it is never 0: it reads E then."""
    mlstm_heads: int = 4
    """Heads of each mLSTM block."""
    mlstm_proj_factor: float = 2.0
    """U = mlstm_proj_factor * E, rounded up to a multiple of ``round_to``."""
    qkv_blocksize: int = 4
    """Width of each block of the mLSTM's headwise q, k, v projections."""
    slstm_heads: int = 4
    """Heads of each sLSTM block."""
    ffn_proj_factor: float = 1.3
    """The sLSTM block's gated MLP width, rounded up like U."""
    conv_kernel: int = 4
    """Kernel size K of the causal depthwise convolutions."""
    round_to: int = 64
    """Multiple the inner widths are rounded up to."""
    bias: bool = False
    """Biases in the linear projections."""
    dropout: float = 0.0
    """Dropout on each block's branch output, in training."""
    form: str = "chunkwise"
    """The mLSTM form (all compute the same function)."""
    chunk_size: int = 64
    """Steps per chunk of the chunkwise form."""
    bidirectional: bool = False
    """A second stack of the same blocks reads each sequence backwards (within its length);
    outputs are [forward | reverse], 2 E wide. Whole sequences only: no ``step``."""

    def __post_init__(self):
        require_positive_ints(self, ("embedding_dim", "num_blocks", "mlstm_heads",
                                     "qkv_blocksize", "slstm_heads", "conv_kernel", "round_to",
                                     "chunk_size"))
        object.__setattr__(self, "slstm_at", tuple(self.slstm_at))
        bad = [p for p in self.slstm_at if not isinstance(p, int) or not 0 <= p < self.num_blocks]
        if bad:
            raise ValueError(f"slstm_at: expected positions in 0..{self.num_blocks - 1}, "
                             f"got {bad}")
        if not isinstance(self.input_size, int) or self.input_size < 0:
            raise ValueError(f"input_size: expected an int >= 0, got {self.input_size!r}")
        object.__setattr__(self, "input_size", self.input_size or self.embedding_dim)
        if self.form not in FORMS:
            raise ValueError(f"form: expected one of {FORMS}, got {self.form!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {self.dropout!r}")
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"bidirectional: expected a bool, got {self.bidirectional!r}")
        if self.slstm_at and self.embedding_dim % self.slstm_heads:
            raise ValueError(f"embedding_dim: expected a multiple of slstm_heads="
                             f"{self.slstm_heads}, got {self.embedding_dim}")
        if len(self.slstm_at) < self.num_blocks:
            U = self.mlstm_inner
            if U % self.mlstm_heads or U % self.qkv_blocksize:
                raise ValueError(f"mlstm_heads, qkv_blocksize: expected divisors of the mLSTM "
                                 f"width {U}, got {self.mlstm_heads}, {self.qkv_blocksize}")

    @classmethod
    def from_pattern(cls, embedding_dim: int, pattern: str, num_blocks: int, **options):
        """A stack from a ratio such as ``"mLSTM:sLSTM 7:1"``: in every group of 8 blocks the
        last is an sLSTM block. ``"mLSTM"`` or ``"sLSTM"`` alone gives one kind only.

        Examples:
            >>> xLSTMConfig.from_pattern(64, "mLSTM:sLSTM 3:1", 8).slstm_at
            (3, 7)
        """
        match = re.fullmatch(r"\s*mLSTM:sLSTM\s+(\d+):(\d+)\s*|\s*(mLSTM|sLSTM)\s*", pattern)
        if not match:
            raise ValueError(f"pattern: expected 'mLSTM:sLSTM a:b', 'mLSTM' or 'sLSTM', "
                             f"got {pattern!r}")
        if match.group(3):
            at = tuple(range(num_blocks)) if match.group(3) == "sLSTM" else ()
        else:
            a, b = int(match.group(1)), int(match.group(2))
            if a + b == 0:
                raise ValueError(f"pattern: expected a ratio with a positive sum, got {pattern!r}")
            at = tuple(p for p in range(num_blocks) if p % (a + b) >= a)
        return cls(embedding_dim, num_blocks, at, **options)

    @property
    def mlstm_inner(self) -> int:
        """U, the mLSTM block's inner width."""
        return round_up(self.mlstm_proj_factor * self.embedding_dim, self.round_to)

    @property
    def ffn_inner(self) -> int:
        return round_up(self.ffn_proj_factor * self.embedding_dim, self.round_to)

    @property
    def output_size(self) -> int:
        return self.embedding_dim

    # What SequenceModel asks of a backbone: the stack is batch-first.
    batch_first = True

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> xLSTMConfig:
        return cls(**data)


class LayerNorm(nn.LayerNorm):
    """torch's LayerNorm (same parameters and numbers) whose eps is a constant of a traced graph
    (``_transforms.static``): dynamo reads the float attribute as a symbol, and its first test
    restarts the analysis, tracing the whole stack twice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, static(self, "eps"))


class HeadwiseLinear(nn.Module):
    """A block-diagonal linear map: (..., NH * D) -> (..., NH * D), one (D, D) block per head."""

    def __init__(self, features: int, num_heads: int, bias: bool, device=None, dtype=None):
        super().__init__()
        D = features // num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, D, D, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(features, device=device, dtype=dtype)) if bias \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        NH = self.weight.shape[0]
        y = torch.einsum("...hd,hod->...ho", x.unflatten(-1, (NH, -1)), self.weight).flatten(-2)
        return y if self.bias is None else y + self.bias


class HeadNorm(nn.Module):
    """Layer normalisation within each head (a group norm over the features), weight only."""

    def __init__(self, features: int, num_heads: int, device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        self.weight = nn.Parameter(torch.ones(features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., NH * D)
        flat = x.reshape(-1, x.shape[-1])
        return F.group_norm(flat, self.num_heads, self.weight, None, 1e-5).view(x.shape)


class CausalConv(nn.Module):
    """Depthwise causal convolution over time; its state is the last K - 1 inputs."""

    def __init__(self, features: int, kernel: int, device=None, dtype=None):
        super().__init__()
        self.conv = nn.Conv1d(features, features, kernel, groups=features, device=device,
                              dtype=dtype)

    def forward(self, x, state, lengths):
        """x (B, T, F), state (B, K - 1, F) -> (y (B, T, F), state)."""
        K = self.conv.kernel_size[0]
        xx = torch.cat([state, x], 1)  # (B, K - 1 + T, F)
        if torch.compiler.is_compiling():  # inductor's conv backward would pin T (a recompile)
            y = _shifted_sum(xx, self.conv.weight[:, 0], self.conv.bias, x.shape[1])
        else:
            y = self.conv(xx.transpose(1, 2)).transpose(1, 2)
        if lengths is None:
            return y, xx[:, xx.shape[1] - (K - 1):]
        index = lengths.to(x.device)[:, None] + torch.arange(K - 1, device=x.device)  # (B, K-1)
        return y, xx.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _shifted_sum(xx: torch.Tensor, weight: torch.Tensor, bias, steps: int) -> torch.Tensor:
    """The depthwise causal convolution as K shifted products: xx (B, K - 1 + T, F), weight
    (F, K) -> (B, T, F). Equal to the Conv1d up to the order of its K terms; traced, it is
    elementwise work inductor fuses, where its lowering of the Conv1d's backward specialises
    the sequence length (a recompile at every new T)."""
    y = xx[:, :steps] * weight[:, 0]
    for k in range(1, weight.shape[1]):
        y = y + xx[:, k:k + steps] * weight[:, k]
    return y if bias is None else y + bias


class BlockState(NamedTuple):
    """A block's state: the convolution's last inputs and the cell's state."""

    conv: torch.Tensor
    """(B, K - 1, F)"""
    cell: tuple
    """An sLSTMState or an mLSTMState over (B, ...)."""


serializable(BlockState)


def _small_init(weight: torch.Tensor, dim: int) -> None:
    nn.init.normal_(weight, 0.0, math.sqrt(2 / (5 * dim)))


def _wang_init(weight: torch.Tensor, dim: int, num_blocks: int) -> None:
    nn.init.normal_(weight, 0.0, 2 / num_blocks / math.sqrt(dim))


class mLSTMBlock(nn.Module):
    """The pre-up-projection block around an mLSTM (see the module docstring)."""

    def __init__(self, config: xLSTMConfig, index: int, device=None, dtype=None):
        super().__init__()
        self.config = config
        E, U, NH = config.embedding_dim, config.mlstm_inner, config.mlstm_heads
        kw = {"device": device, "dtype": dtype}
        self.norm = LayerNorm(E, bias=False, **kw)
        self.proj_up = nn.Linear(E, 2 * U, bias=config.bias, **kw)
        self.conv = CausalConv(U, config.conv_kernel, **kw)
        blocks = U // config.qkv_blocksize
        self.q_proj, self.k_proj, self.v_proj = (HeadwiseLinear(U, blocks, config.bias, **kw)
                                                 for _ in range(3))
        self.igate = nn.Linear(3 * U, NH, **kw)
        self.fgate = nn.Linear(3 * U, NH, **kw)
        self.out_norm = HeadNorm(U, NH, **kw)
        self.skip = nn.Parameter(torch.ones(U, **kw))
        self.proj_down = nn.Linear(U, E, bias=config.bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """NX-AI's initialisation (small init in, Wang init out, forget bias 3..6)."""
        E = self.config.embedding_dim
        with torch.no_grad():
            _small_init(self.proj_up.weight, E)
            _wang_init(self.proj_down.weight, E, self.config.num_blocks)
            for proj in (self.q_proj, self.k_proj, self.v_proj):
                _small_init(proj.weight, E)
            for module in (self.proj_up, self.proj_down, self.q_proj, self.k_proj, self.v_proj):
                if module.bias is not None:
                    module.bias.zero_()
            self.igate.weight.zero_()
            self.igate.bias.normal_(0.0, 0.1)
            self.fgate.weight.zero_()
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.config.mlstm_heads))
            self.skip.fill_(1.0)
            self.norm.reset_parameters()
            self.out_norm.weight.fill_(1.0)
            self.conv.conv.reset_parameters()

    def init_state(self, batch: int, like: torch.Tensor) -> BlockState:
        U, NH = static(self.config, "mlstm_inner"), self.config.mlstm_heads
        conv = like.new_zeros(batch, self.config.conv_kernel - 1, U)
        cfg = mlstm_cell.mLSTMConfig(U, U, num_heads=NH)
        return BlockState(conv, mlstm_cell.zero_state(cfg, (batch,), state_like(like)))

    def forward(self, x, state: BlockState, lengths=None):
        NH, U = self.config.mlstm_heads, static(self.config, "mlstm_inner")
        x_m, z = self.proj_up(self.norm(x)).split(U, dim=-1)  # (B, T, U) each
        conv, conv_state = self.conv(x_m, state.conv, lengths)
        conv = F.silu(conv)
        q, k, v = self.q_proj(conv), self.k_proj(conv), self.v_proj(x_m)
        qkv = torch.cat([q, k, v], -1)
        i, f = self.igate(qkv).transpose(1, 2), self.fgate(qkv).transpose(1, 2)  # (B, NH, T)
        heads = [t.unflatten(-1, (NH, -1)).transpose(1, 2) for t in (q, k, v)]  # (B, NH, T, D)
        h, cell = mlstm(*heads, i, f, form=self.config.form, chunk_size=self.config.chunk_size,
                        state=_widened(state.cell, q), lengths=lengths, return_state=True)
        h = self.out_norm(h.transpose(1, 2).flatten(2)) + self.skip * conv  # (B, T, U)
        out = self.proj_down(h * F.silu(z))
        out = F.dropout(out, static(self.config, "dropout"), self.training)
        return x + out, BlockState(conv_state, cell)


def _widened(state, like: torch.Tensor):
    """A block's recurrent state in the dtype the scans keep it in for inputs like ``like``
    (float32 for 16-bit ones): a state that went through a 16-bit cast (a model run in 16 bits
    by apps/precision.py, whose state comes back to it) is widened, exactly."""
    dtype = state_like(like).dtype
    if dtype != torch.float32 or not any(t.dtype in SIXTEEN_BIT for t in state):
        return state  # any other mismatch is the scans' to refuse, with its reason
    return type(state)(*(t.to(dtype) if t.dtype in SIXTEEN_BIT else t for t in state))


class sLSTMBlock(nn.Module):
    """The post-up-projection block around an sLSTM (see the module docstring)."""

    def __init__(self, config: xLSTMConfig, index: int, device=None, dtype=None):
        super().__init__()
        self.config, self.index = config, index
        E, NH, P = config.embedding_dim, config.slstm_heads, config.ffn_inner
        kw = {"device": device, "dtype": dtype}
        self.norm = LayerNorm(E, bias=False, **kw)
        self.conv = CausalConv(E, config.conv_kernel, **kw)
        self.igate, self.fgate, self.zgate, self.ogate = (HeadwiseLinear(E, NH, False, **kw)
                                                          for _ in slstm_cell.GATES)
        D = E // NH
        self.weight_hh = nn.Parameter(torch.empty(NH, D, 4, D, **kw))
        self.bias = nn.Parameter(torch.empty(4 * E, **kw))
        self.out_norm = HeadNorm(E, NH, **kw)
        self.ffn_norm = LayerNorm(E, bias=False, **kw)
        self.ffn_up = nn.Linear(E, 2 * P, bias=config.bias, **kw)
        self.ffn_down = nn.Linear(P, E, bias=config.bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """NX-AI's initialisation (power-law forget bias by depth, zero recurrent matrix)."""
        E, NH = self.config.embedding_dim, self.config.slstm_heads
        with torch.no_grad():
            for gate in (self.igate, self.fgate, self.zgate, self.ogate):
                _small_init(gate.weight, E)
            self.weight_hh.zero_()
            bias = self.bias.view(4, NH, E // NH)
            bias.zero_()
            bias[1] = slstm_cell.forget_bias_init(E // NH, self.index, self.config.num_blocks)
            _small_init(self.ffn_up.weight, E)
            _wang_init(self.ffn_down.weight, E, self.config.num_blocks)
            for module in (self.ffn_up, self.ffn_down):
                if module.bias is not None:
                    module.bias.zero_()
            self.norm.reset_parameters()
            self.ffn_norm.reset_parameters()
            self.out_norm.weight.fill_(1.0)
            self.conv.conv.reset_parameters()

    def init_state(self, batch: int, like: torch.Tensor) -> BlockState:
        E = self.config.embedding_dim
        conv = like.new_zeros(batch, self.config.conv_kernel - 1, E)
        return BlockState(conv, slstm_cell.sLSTMState(*state_like(like).new_zeros(4, batch, E)))

    def forward(self, x, state: BlockState, lengths=None):
        h = self.norm(x)
        conv, conv_state = self.conv(h, state.conv, lengths)
        conv = F.silu(conv)
        term = torch.cat([self.igate(conv), self.fgate(conv), self.zgate(h), self.ogate(h)], -1)
        y, cell = slstm(term + self.bias, self.weight_hh, state=_widened(state.cell, term),
                        lengths=lengths, return_state=True)
        y = F.dropout(y, static(self.config, "dropout"), self.training)
        x = x + self.out_norm(y)
        gate, up = self.ffn_up(self.ffn_norm(x)).chunk(2, -1)
        out = self.ffn_down(F.gelu(gate) * up)
        out = F.dropout(out, static(self.config, "dropout"), self.training)
        return x + out, BlockState(conv_state, cell)


class xLSTM(nn.Module):
    """A stack of mLSTM and sLSTM blocks with a final LayerNorm; batch-first.

    ``forward(x (B, T, I), state=None, lengths=None) -> (y (B, T, D * E), state)``; the state is
    a tuple with one :class:`BlockState` per block (and, if bidirectional, then one per block of
    the reverse stack; D = 2).

    Examples:
        >>> model = xLSTM(xLSTMConfig.from_pattern(32, "mLSTM:sLSTM 1:1", 2, input_size=3))
        >>> y, state = model(torch.randn(2, 7, 3))
        >>> y.shape, len(state)
        (torch.Size([2, 7, 32]), 2)
    """

    def __init__(self, config: xLSTMConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        kw = {"device": device, "dtype": dtype}
        self.proj_in = None
        if config.input_size != config.embedding_dim:
            self.proj_in = nn.Linear(config.input_size, config.embedding_dim, **kw)
        self.blocks = nn.ModuleList(
            (sLSTMBlock if b in config.slstm_at else mLSTMBlock)(config, b, **kw)
            for b in range(config.num_blocks))
        self.post_norm = LayerNorm(config.embedding_dim, bias=False, **kw)
        self.reverse = None
        if config.bidirectional:
            from dataclasses import replace
            self.reverse = xLSTM(replace(config, bidirectional=False), **kw)

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def init_state(self, batch_size: int) -> tuple[BlockState, ...]:
        """Zeros: one :class:`BlockState` per block, each tensor (B, ...)."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
            raise ValueError(f"batch_size: expected an int >= 0 (the stack takes batches only), "
                             f"got {batch_size!r}")
        return self._zeros(batch_size)

    def _zeros(self, batch) -> tuple[BlockState, ...]:
        """init_state's zeros for a batch size that may be symbolic (torch.export's)."""
        like = self.post_norm.weight
        own = tuple(block.init_state(batch, like) for block in self.blocks)
        return own if self.reverse is None else own + self.reverse._zeros(batch)

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        check_tensor("input", x, autocast.accepted(x, self.post_norm.weight))
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"input: expected shape (B, T, {self.input_size}), "
                             f"got {tuple(x.shape)}")
        B, T = x.shape[:2]
        check_steps(T)
        if lengths is not None:
            lengths = check_lengths(lengths, B, T, x.device)
            valid = (torch.arange(T)[None, :] < lengths[:, None]).to(x.device)
            x = torch.where(valid[..., None], x, 0.0)
        if state is None:
            state = self._zeros(B)
        blocks = len(self.blocks) * self.config.num_directions
        if not isinstance(state, (tuple, list)) or len(state) != blocks:
            raise TypeError(f"state: expected a tuple of {blocks} block states, "
                            f"got {type(state).__name__}")
        if self.reverse is None:
            y, finals = self._run(x, state, lengths)
        else:  # the reverse stack reads each sequence backwards within its own length
            n = len(self.blocks)
            index = reverse_index(None if lengths is None else lengths.cpu(), T, x.device)
            y, finals = self._run(x, state[:n], lengths)
            flip = reverse(x.transpose(0, 1), index).transpose(0, 1)  # (B, T, I)
            y_r, theirs = self.reverse._run(flip, state[n:], lengths)
            y = torch.cat([y, reverse(y_r.transpose(0, 1), index).transpose(0, 1)], -1)
            finals += theirs
        if lengths is not None:
            y = torch.where(valid[..., None], y, 0.0)
        return y, finals

    def _run(self, x, state, lengths):
        """One direction: x (B, T, I) -> (y (B, T, E), the blocks' final states)."""
        if self.proj_in is not None:
            x = self.proj_in(x)
        finals = []
        for block, s in zip(self.blocks, state):
            x, s = block(x, s, lengths)
            finals.append(s)
        return self.post_norm(x), tuple(finals)

    def step(self, x_t: torch.Tensor, state=None):
        """One step: x_t (B, I) -> (y_t (B, E), state)."""
        if self.reverse is not None:
            raise ValueError("step: expected a unidirectional stack, got bidirectional=True "
                             "(the reverse direction needs the whole sequence)")
        y, state = self.forward(x_t.unsqueeze(1), state)
        return y.squeeze(1), state
