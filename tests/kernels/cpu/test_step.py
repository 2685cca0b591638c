"""The compiled single-stream step (lstmkit/kernels/cpu/step.h, step.py) against float64 truth:
float32 weights within float32 rounding, float16 weights within the bound their rounding
implies, int8 weights as the float step of their dequantised values, on the AVX2 product and
on the portable loop alike."""

import dataclasses
import math

import pytest
import torch
from support import cpu_flags
from tolerances import conformance_bound

from lstmkit.kernels.cpu import step
from lstmkit.layers.quantized import dequantize_weight, quantize_weight

F64 = torch.float64
SIZES = [(3, 4, 2, 1), (64, 128, 1, 1), (5, 17, 3, 2), (64, 80, 1, 3)]  # (I, H, B, L)


def make_stack(inputs, hidden, layers, seed=0):
    """Each layer's (weight_ih, weight_hh, bias_ih, bias_hh) in float64, torch's init scale."""
    gen = torch.Generator().manual_seed(seed)
    bound = 1 / math.sqrt(hidden)

    def uniform(*shape):
        return (torch.rand(*shape, generator=gen, dtype=F64) * 2 - 1) * bound

    return [(uniform(4 * hidden, inputs if k == 0 else hidden), uniform(4 * hidden, hidden),
             uniform(4 * hidden), uniform(4 * hidden)) for k in range(layers)]


def truth(stack, x, h, c):
    """One step of the stack in float64: (h_new, c_new, per layer the gate parts and the
    magnitudes sum_k |w x| and sum_k |x| behind each pre-activation)."""
    hs, cs, parts = [], [], []
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(stack):
        xh = torch.cat([x, h[k]], -1)
        w = torch.cat([w_ih, w_hh], 1)
        z = xh @ w.T + b_ih + b_hh
        i, f, g, o = z.sigmoid().chunk(4, -1)
        g = z.chunk(4, -1)[2].tanh()
        c_new = f * c[k] + i * g
        hs.append(o * c_new.tanh())
        cs.append(c_new)
        parts.append((i, f, g, o, c[k], c_new, xh.abs() @ w.abs().T,
                      xh.abs().sum(-1, keepdim=True)))
        x = hs[-1]
    return torch.stack(hs), torch.stack(cs), parts


def inputs(inputs_, hidden, batch, layers, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, inputs_, generator=gen, dtype=F64),
            0.5 * torch.randn(layers, batch, hidden, generator=gen, dtype=F64),
            0.5 * torch.randn(layers, batch, hidden, generator=gen, dtype=F64))


def packed(stack, precision):
    return [step.pack(*(t.float() for t in layer), precision=precision) for layer in stack]


def floor(value: torch.Tensor, reduction: int) -> float:
    """The float32 rounding allowed over a sum of ``reduction`` products (as conformance)."""
    return conformance_bound(value, None, torch.float32, reduction)


@pytest.mark.parametrize("portable", [False, True], ids=["isa", "portable"])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_float32_weights_equal_float64_to_float32_rounding(size, portable):
    inputs_, hidden, batch, layers = size
    stack = make_stack(inputs_, hidden, layers)
    x, h, c = inputs(inputs_, hidden, batch, layers)
    want_h, want_c, _ = truth(stack, x, h, c)
    y, got_h, got_c = step.lstm_step(packed(stack, "float32"), x.float(), h.float(), c.float(),
                                     portable=portable)
    reduction = (inputs_ + hidden) * layers
    for got, want in ((got_h, want_h), (got_c, want_c), (y, want_h[-1])):
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert float((got.double() - want).abs().max()) <= floor(want, reduction)


@pytest.mark.parametrize("portable", [False, True], ids=["isa", "portable"])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_float16_weights_compute_the_rounded_weights_function(size, portable):
    """float16 changes the weights, nothing else: the step is float64's step of the rounded
    weights to float32 rounding."""
    inputs_, hidden, batch, layers = size
    stack = make_stack(inputs_, hidden, layers)
    rounded = [tuple(t.to(torch.float16).double() if n < 2 else t.float().double()
                     for n, t in enumerate(layer)) for layer in stack]
    x, h, c = inputs(inputs_, hidden, batch, layers)
    want_h, want_c, _ = truth(rounded, x.float().double(), h.float().double(),
                              c.float().double())
    _, got_h, got_c = step.lstm_step(packed(stack, "float16"), x.float(), h.float(), c.float(),
                                     portable=portable)
    reduction = (inputs_ + hidden) * layers
    assert float((got_h.double() - want_h).abs().max()) <= floor(want_h, reduction)
    assert float((got_c.double() - want_c).abs().max()) <= floor(want_c, reduction)


@pytest.mark.parametrize("size", [s for s in SIZES if s[3] == 1], ids=str)
def test_float16_error_is_within_the_documented_bound(size):
    """Against the float64 step of the original weights: each pre-activation moves by at most
    u * sum_k |w_k x_k| + 2^-25 sum_k |x_k| (u = 2^-11, the subnormal term for tiny weights),
    so the gates by 1/4 of that (sigmoid) or all of it (tanh), and c and h as the chain rule
    with those bounds says."""
    inputs_, hidden, batch, _ = size
    stack = make_stack(inputs_, hidden, 1)
    x, h, c = inputs(inputs_, hidden, batch, 1)
    want_h, want_c, [(i, f, g, o, c0, c_new, wx, xs)] = truth(stack, x, h, c)
    _, got_h, got_c = step.lstm_step(packed(stack, "float16"), x.float(), h.float(), c.float())
    delta = step.WEIGHT_ERROR["float16"] * wx + 2.0 ** -25 * xs  # (B, 4H)
    di, df, dg, do = delta.chunk(4, -1)
    di, df, do = di / 4, df / 4, do / 4
    dc = df * c0.abs() + di * g.abs() + (i.abs() + di) * dg
    dh = do * c_new.tanh().abs() + (o.abs() + do) * dc
    slack = floor(want_h, inputs_ + hidden)
    assert bool(((got_c[0].double() - want_c[0]).abs() <= dc + slack).all())
    assert bool(((got_h[0].double() - want_h[0]).abs() <= dh + slack).all())


def _int8(stack):
    """Each layer's matrices quantised as lstmkit.quantize_dynamic does, packed for the step."""
    return [step.pack_int8(*quantize_weight(w_ih.float()), *quantize_weight(w_hh.float()),
                           b_ih.float(), b_hh.float()) for w_ih, w_hh, b_ih, b_hh in stack]


@pytest.mark.parametrize("portable", [False, True], ids=["isa", "portable"])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_int8_weights_compute_the_dequantised_weights_function(size, portable):
    """int8 changes the weights to scale * q (one scale per row of W_ih and of W_hh), nothing
    else: the step is float64's step of the dequantised weights to float32 rounding."""
    inputs_, hidden, batch, layers = size
    stack = make_stack(inputs_, hidden, layers)
    dequantised = [tuple(dequantize_weight(*quantize_weight(t.float())).double() if n < 2
                         else t.float().double() for n, t in enumerate(layer))
                   for layer in stack]
    x, h, c = inputs(inputs_, hidden, batch, layers)
    want_h, want_c, _ = truth(dequantised, x.float().double(), h.float().double(),
                              c.float().double())
    weights = _int8(stack)
    assert all(w.precision == "int8" and w.packed.dtype == torch.int8 for w in weights)
    y, got_h, got_c = step.lstm_step(weights, x.float(), h.float(), c.float(),
                                     portable=portable)
    reduction = (inputs_ + hidden) * layers
    for got, want in ((got_h, want_h), (got_c, want_c), (y, want_h[-1])):
        assert float((got.double() - want).abs().max()) <= floor(want, reduction)


def test_head_and_unbatched_shapes():
    stack = make_stack(3, 5, 2)
    x, h, c = inputs(3, 5, 1, 2)
    want_h, want_c, _ = truth(stack, x, h, c)
    head_w = torch.randn(2, 5, dtype=F64)
    head_b = torch.randn(2, dtype=F64)
    y, got_h, got_c = step.lstm_step(packed(stack, "float32"), x[0].float(), h[:, 0].float(),
                                     c[:, 0].float(), head=(head_w.float(), head_b.float()))
    assert y.shape == (2,) and got_h.shape == got_c.shape == (2, 5)
    want_y = want_h[-1, 0] @ head_w.T + head_b
    assert float((y.double() - want_y).abs().max()) <= floor(want_y, 5 + 8)
    assert float((got_c.double() - want_c[:, 0]).abs().max()) <= floor(want_c, 16)


def test_in_place_step_equals_the_functional_one():
    stack = make_stack(4, 6, 2)
    x, h, c = (t.float() for t in inputs(4, 6, 3, 2))
    weights = packed(stack, "float32")
    _, want_h, want_c = step.lstm_step(weights, x, h, c)
    step.lstm_step_(weights, x, h, c, h, c)
    torch.testing.assert_close(h, want_h, rtol=0, atol=0)
    torch.testing.assert_close(c, want_c, rtol=0, atol=0)


def test_isa_is_avx2_exactly_where_the_cpu_has_avx2_fma_and_f16c():
    """The AVX2 product is compiled for all three (one target attribute) for every weight type,
    so each must be there for any of them (it was checked for F16C with float16 weights only)."""
    flags = cpu_flags()
    assert step.isa() == ("avx2" if {"avx2", "fma", "f16c"} <= flags else "portable")


def test_bad_inputs_are_refused():
    weights = packed(make_stack(3, 4, 1), "float32")
    x, h, c = (t.float() for t in inputs(3, 4, 2, 1))
    with pytest.raises(RuntimeError, match="expected x \\(B, I\\), h, c \\(L, B, H\\)"):
        step.lstm_step(weights, x, h[:, :1], c)
    with pytest.raises(RuntimeError, match="expected packed float32, float16 or int8 weights"):
        step.lstm_step(weights, torch.zeros(2, 5), h, c)
    with pytest.raises(RuntimeError, match="expected contiguous float32 CPU tensors"):
        step.lstm_step(weights, x.double(), h, c)
    int8 = _int8(make_stack(3, 4, 1))
    with pytest.raises(RuntimeError, match="expected float32 row scales \\(2, NP \\* 64\\)"):
        step.lstm_step([dataclasses.replace(int8[0], scale=torch.ones(2, 3))], x, h, c)
    with pytest.raises(RuntimeError, match="an empty tensor with float ones"):
        step.lstm_step([dataclasses.replace(weights[0], scale=int8[0].scale)], x, h, c)
    with pytest.raises(ValueError, match="expected int8"):
        step.pack_int8(torch.zeros(16, 3), torch.ones(16), torch.zeros(16, 4), torch.ones(16))
    with pytest.raises(ValueError, match="precision: expected one of"):
        step.pack(torch.zeros(16, 3), torch.zeros(16, 4), precision="bfloat16")
    with pytest.raises(ValueError, match="expected \\|w\\| <= 65504 for float16"):
        step.pack(torch.full((16, 3), 1e5), torch.zeros(16, 4), precision="float16")
