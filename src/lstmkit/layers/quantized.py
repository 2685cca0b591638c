"""Dynamic quantisation: recurrent layers with int8 weight matrices, for inference.

:func:`quantize_dynamic` returns a copy of a model whose recurrent layers hold their weight
matrices (``weight_ih``, ``weight_hh`` and the projection ``weight_hr``, where they are 2-D: sLSTM's
block-diagonal recurrent weight stays float32) as int8 with one float32 scale per output row
(per output channel), symmetric:

    s_n = max_k |W[n, k]| / 127,    q[n, k] = round(W[n, k] / s_n) in [-127, 127]

where W (N, K) is a weight, n an output row (a gate unit), so that |W - s q| <= s / 2 everywhere.

What a quantised layer computes depends on ``activations``:

* ``"float"`` (the default): the float32 layer with the dequantised weights ``s[:, None] * q``,
  nothing else. Inputs, states and the other operand of every product stay float32, so the
  error is the weights' rounding alone. The saving is memory (a quarter of the matrices' bytes)
  and, for a single step of a stream, the bytes it reads.
* ``"int8"``: dynamic quantisation as torch.ao and ONNX Runtime mean it. The left operand of
  every product with an int8 matrix (the input x, the state h, the GRU's r * h, the
  projection's input) is rounded at run time, per row, to 7-bit integers with a scale and a
  zero point (:func:`round_rows`; torch.ao's x86 scheme), and the product is summed in
  integers: the error adds the activations' rounding (at most 1/254 of each row's range) to
  the weights', and long sequences run faster where integer products beat float ones
  (docs/benchmarks.md has both). Each row is rounded on its own, so a stream
  stepped one call at a time computes what one call over the sequence does.

Either way biases, peepholes, layer-norm gains, and a model's embedding and head stay float32.

Backends: ``"cpu"`` runs ``kernels/cpu/quant.h`` (the LSTM with every variant, the GRU and the
RNN, float32); ``"reference"`` dequantises and runs the reference scan (any family, dtype and
device; with int8 activations it rounds each product's left operand as :func:`round_rows`
says, the specification the cpu kernel is tested against); ``"auto"`` takes the first that
computes the layer.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from lstmkit import _autocast as autocast
from lstmkit._transforms import constant_result
from lstmkit.cells.base import ANY
from lstmkit.config import LayerConfig
from lstmkit.kernels import reference
from lstmkit.kernels.contract import Backend, Declaration
from lstmkit.kernels.cpu import quant
from lstmkit.layers.base import RecurrentLayer, _suffix

MATRICES = ("weight_ih", "weight_hh", "weight_hr")
"""The tensors stored as int8; each has a ``<name>_scale`` (N,) beside it."""
BACKENDS = ("auto", "cpu", "reference")
ACTIVATIONS = ("float", "int8")
"""What a product's left operand is: float32, or rounded per row to 7-bit integers at run time
(:func:`round_rows`)."""


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row.

    Shape: weight (N, K) -> (q (N, K) int8, scale (N,) float32); an all-zero row gets scale 1.

    Examples:
        >>> q, s = quantize_weight(torch.tensor([[0.5, -1.0], [2.0, 0.0]]))
        >>> q.tolist(), s.mul(127).tolist()
        ([[64, -127], [127, 0]], [1.0, 2.0])
    """
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a matrix (N, K), got shape {tuple(weight.shape)}")
    w = weight.detach().float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``scale[:, None] * q`` in float32: the weight a quantised layer computes with."""
    return scale[:, None] * q.float()


def _dequantized_scan(family, cfg, w, x, state, lengths, masks):
    """The specification: the reference scan of the dequantised weights."""
    return reference.scan(family, cfg, dequantized(w, x.dtype), x, state, lengths, masks)


def dequantized(w: dict, dtype: torch.dtype = torch.float32) -> dict:
    """A cell's tensors with each int8 matrix replaced by its dequantised weight, in ``dtype``."""
    out = {name: t for name, t in w.items()
           if not (name.endswith("_scale") and name[:-len("_scale")] in MATRICES)}
    for name in MATRICES:
        if name + "_scale" in w:
            out[name] = dequantize_weight(w[name], w[name + "_scale"]).to(dtype)
    return {name: t.to(dtype) for name, t in out.items()}


def round_rows(a: torch.Tensor) -> torch.Tensor:
    """``a`` as int8 activations see it: each row (the last dimension) rounded to 128 levels
    spanning its range and zero.

    With ``lo = min(0, min a)``, ``hi = max(0, max a)`` per row: ``s = (hi - lo) / 127`` (1 for
    an all-zero row), ``z = round(-lo / s)``, ``q = clamp(round(a / s) + z, 0, 127)``, and the
    row becomes ``s * (q - z)``, rounding half to even, in ``a``'s dtype; a row holding a NaN or
    an infinity becomes NaN. kernels/cpu/int8_dot.h computes the same integers and scales in
    float32, bit for bit (7 bits: why is said there).

    Examples:
        >>> a = torch.tensor([[1.484375, -0.5, 0.3], [0.0, 0.0, 0.0]])  # s = 127/64 / 127
        >>> round_rows(a).mul(64).tolist()
        [[95.0, -32.0, 19.0], [0.0, 0.0, 0.0]]
    """
    lo = a.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = a.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = torch.where(hi > lo, (hi - lo) / 127, torch.ones_like(hi))
    zero = torch.round(-lo / scale)
    rounded = scale * ((torch.round(a / scale) + zero).clamp(0, 127) - zero)
    return torch.where(torch.isfinite(a).all(dim=-1, keepdim=True), rounded, torch.nan)


class _RoundedProducts(torch.overrides.TorchFunctionMode):
    """Inside it, a product whose right operand is one of ``weights`` (or a view of one: a
    slice, a transpose) gets its left operand through :func:`round_rows`: the reference cells'
    ``F.linear(x, W)`` and ``v @ W.t()`` become int8 activations' products, the cells unchanged."""

    PRODUCTS = (torch.nn.functional.linear, torch.matmul, torch.Tensor.matmul,
                torch.Tensor.__matmul__)

    def __init__(self, weights):
        super().__init__()
        self.storages = {w.untyped_storage().data_ptr() for w in weights}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if (func in self.PRODUCTS and len(args) > 1 and isinstance(args[1], torch.Tensor)
                and args[1].untyped_storage().data_ptr() in self.storages):
            args = (round_rows(args[0]), *args[1:])
        return func(*args, **(kwargs or {}))


def _rounded_scan(family, cfg, w, x, state, lengths, masks):
    """The specification of int8 activations: the reference scan of the dequantised weights,
    every product's left operand rounded per row."""
    rounded = tuple(name for name in MATRICES if name + "_scale" in w)
    return reference.scan(family, cfg, dequantized(w, x.dtype), x, state, lengths, masks,
                          rounding="int8", rounded=rounded)


reference.ROUNDINGS["int8"] = _RoundedProducts
REFERENCE = Backend(name="reference", declaration=Declaration(families=ANY),
                    scan=_dequantized_scan)
REFERENCE_INT8 = Backend(name="reference", declaration=Declaration(families=ANY),
                         scan=_rounded_scan)


def _backend(name: str, activations: str = "float") -> Backend:
    if name == "reference":
        return REFERENCE if activations == "float" else REFERENCE_INT8
    return quant.BACKEND if activations == "float" else quant.INT8_ACTIVATIONS


@functools.lru_cache(maxsize=256)
def resolve(name: str, config: LayerConfig, device: torch.device, dtype: torch.dtype,
            activations: str = "float") -> Backend:
    """The int8 backend called ``name``, or for "auto" the first of cpu and reference that
    computes ``config`` here (cached: a layer asks on every call)."""
    names = ("cpu", "reference") if name == "auto" else (name,)
    reasons = []
    for candidate in names:
        backend = _backend(candidate, activations)
        reason = backend.supports(config, device, dtype, training=False)
        if reason is None:
            return backend
        reasons.append(f"{candidate}: {reason}")
    raise ValueError(f"backend {name!r} cannot run this int8 layer: " + "; ".join(reasons))


@constant_result
def resolve_name(name: str, config: LayerConfig, device: torch.device, dtype: torch.dtype,
                 activations: str = "float") -> str:
    """``resolve(...).name``, which torch.compile runs once and keeps as a constant (as
    :func:`lstmkit.kernels.resolve_name`) instead of tracing the declarations."""
    return resolve(name, config, device, dtype, activations).name


class QuantizedLayer(RecurrentLayer):
    """A recurrent layer with int8 weight matrices (see the module docstring), for inference.

    It takes and returns what the float layer does (shapes, states, ``lengths``, ``step``) in
    float32, and holds buffers, not parameters: ``weight_ih_l0`` is int8, ``weight_ih_l0_scale``
    its row scales; the other tensors keep their names and float32. Calling it in training mode
    raises: there is no gradient to train with.

    Args:
        layer: the float layer to quantise (its weights are read, not kept).
        backend: "auto", "cpu" or "reference" (see the module docstring).
        activations: "float" (weights only) or "int8" (integer products; see the module
            docstring).
    """

    def __init__(self, layer: RecurrentLayer, backend: str = "auto", activations: str = "float"):
        if not isinstance(layer, RecurrentLayer) or isinstance(layer, QuantizedLayer):
            raise TypeError(f"layer: expected a float lstmkit RecurrentLayer, got "
                            f"{type(layer).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations: expected one of {ACTIVATIONS}, got {activations!r}")
        nn.Module.__init__(self)
        self.config, self.family, self.quant_backend = layer.config, layer.family, backend
        self.activations = activations
        for k, row in enumerate(layer.cell_weights()):
            for d, params in enumerate(row):
                for name, p in params.items():
                    full = name + _suffix(k, d)
                    if name in MATRICES and p.dim() == 2:
                        q, scale = quantize_weight(p)
                        self.register_buffer(full, q)
                        self.register_buffer(full + "_scale", scale.to(p.device))
                    else:
                        self.register_buffer(full, p.detach().float().clone())
        self.eval()
        if backend != "auto":
            self.backend()

    @property
    def _like(self) -> torch.Tensor:
        return self.weight_ih_l0_scale

    _weights = "_buffers"

    def _cell_parameters(self, layer: int, direction: int) -> dict[str, torch.Tensor]:
        """The layer's tensors, each int8 matrix followed by its row scales."""
        suffix, own, out = _suffix(layer, direction), self._buffers, {}
        for name, tensor in super()._cell_parameters(layer, direction).items():
            out[name] = tensor
            if (key := name + suffix + "_scale") in own:
                out[name + "_scale"] = own[key]
        return out

    def reset_parameters(self) -> None:
        raise NotImplementedError("reset_parameters: a quantised layer has fixed int8 weights; "
                                  "quantise a freshly initialised float layer instead")

    def backend(self, device=None, dtype=None) -> Backend:
        """The int8 backend that runs this layer (``backend`` as given, or the first of cpu and
        reference that computes it)."""
        device = torch.device(device or self._like.device)
        return _backend(resolve_name(self.quant_backend, self.config, device,
                                     dtype or self._like.dtype, self.activations),
                        self.activations)

    def forward(self, input, hx=None, lengths: torch.Tensor | None = None):
        """As :meth:`RecurrentLayer.forward`, with the int8 weights; evaluation mode only."""
        if self.training:
            raise RuntimeError("int8 layer: expected evaluation mode (quantised layers are for "
                               "inference; call .eval()), got training mode")
        if autocast.dtype(self._like) is not None:  # int8 computes in float32, autocast or not
            with torch.no_grad(), autocast.off(self._like):
                return super().forward(autocast.cast(input, torch.float32),
                                       autocast.cast(hx, torch.float32), lengths)
        with torch.no_grad():
            return super().forward(input, hx, lengths)

    def to_torch(self):
        raise NotImplementedError("to_torch: torch.nn has no int8 layer of lstmkit's form; "
                                  "torch.ao.quantization.quantize_dynamic quantises torch's own")

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", int8 weights (per output row), activations={self.activations!r}, "
                  f"backend={self.quant_backend!r}")


def quantize_dynamic(model: nn.Module, backend: str = "auto",
                     activations: str = "float") -> nn.Module:
    """A copy of ``model`` in evaluation mode with every lstmkit recurrent layer quantised.

    Args:
        model: an lstmkit layer, or a module holding them (a SequenceModel); it is not changed.
        backend: the int8 layers' backend: "auto", "cpu" or "reference".
        activations: "float" quantises the weights only; "int8" also rounds each product's
            left operand at run time and multiplies in integers (the module docstring says
            what each computes).

    Returns:
        The copy: each :class:`~lstmkit.layers.base.RecurrentLayer` in it replaced by a
        :class:`QuantizedLayer` (other modules, the embedding and the head among them, stay
        float).

    Examples:
        >>> import lstmkit
        >>> layer = lstmkit.LSTM(4, 8, peephole=True)
        >>> int8 = lstmkit.quantize_dynamic(layer, backend="reference")
        >>> int8.weight_hh_l0.dtype, int8.weight_hh_l0_scale.shape
        (torch.int8, torch.Size([32]))
        >>> y, (h, c) = int8(torch.randn(5, 2, 4))
        >>> tuple(y.shape)
        (5, 2, 8)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, RecurrentLayer) and not isinstance(model, QuantizedLayer):
        return QuantizedLayer(model, backend, activations)
    model = copy.deepcopy(model).eval()
    found = [name for name, m in model.named_modules()
             if isinstance(m, RecurrentLayer) and not isinstance(m, QuantizedLayer)]
    if not found:
        raise ValueError(f"model: expected an lstmkit recurrent layer inside, found none in "
                         f"{type(model).__name__}")
    for name in found:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, QuantizedLayer(getattr(owner, attr), backend, activations))
    return model
