// The LSTM's backward pass: the gradient of lstm.h's forward, step by step in reverse, then
// the weight gradients as products over all steps at once. Shapes and saved tensors as in
// lstm.h.
#pragma once

#include "lstm.h"

namespace lstmkit {

// The gradient of one fused row at step t. In: a, c_prev, c_new and the layer-norm rows saved
// by the forward pass; dhraw (H) the gradient of o ⊙ ψ(c); dcn (H) that of the new c from
// later steps. Out: da (4H) that of the pre-activations; dc (H) gains that of c_{t-1}; dgh
// (4H) that of the recurrent term before its layer norm; hraw (H) o ⊙ ψ(c) again, for the
// projection's gradient; chat, dchat (H) the normalised c and its gradient. work: 4H values.
template <typename T>
template <bool Peephole, bool LayerNorm>
void LSTMScan<T>::fused_row_backward(const T* a, const T* c_prev, const T* c_new, const T* sc,
                                     const T* xhh, T rhh, const T* dhraw, const T* dcn, T* dc,
                                     T* da, T* dgh, T* hraw, T* chat, T* dchat, T* work) const {
  const int64_t H = hidden, G = gates();
  const T* p = w.peephole;
  T *dc_h = work, *tcs = work + H;  // layer norm: c_t's gradient from h, and tanh(LN(c_t))
  if constexpr (LayerNorm) {
    LSTMKIT_ELEMENTWISE
    for (int64_t j = 0; j < H; ++j) {
      const T o = vsigmoid(a[3 * H + j]);
      chat[j] = (c_new[j] - sc[0]) * sc[1];
      tcs[j] = vtanh(w.ln_c[j] * chat[j] + w.bln_c[j]);
      dchat[j] = dhraw[j] * o * (T(1) - tcs[j] * tcs[j]);
      dc_h[j] = dchat[j] * w.ln_c[j];
    }
    normalize_row_backward(dc_h, chat, sc[1], dc_h, H);
  }
  LSTMKIT_ELEMENTWISE
  for (int64_t j = 0; j < H; ++j) {
    const T i = vsigmoid(a[j]), f = vsigmoid(a[H + j]), g = vtanh(a[2 * H + j]);
    const T o = vsigmoid(a[3 * H + j]);
    const T tc = LayerNorm ? tcs[j] : vtanh(c_new[j]);
    hraw[j] = o * tc;
    const T da_o = dhraw[j] * tc * o * (T(1) - o);
    T dct = dcn[j] + (LayerNorm ? dc_h[j] : dhraw[j] * o * (T(1) - tc * tc));
    if constexpr (Peephole) dct += da_o * p[2 * H + j];
    const T da_i = dct * g * i * (T(1) - i), da_f = dct * c_prev[j] * f * (T(1) - f);
    dc[j] += dct * f;
    if constexpr (Peephole) dc[j] += da_i * p[j] + da_f * p[H + j];
    da[j] = da_i;
    da[H + j] = da_f;
    da[2 * H + j] = dct * i * (T(1) - g * g);
    da[3 * H + j] = da_o;
  }
  if constexpr (LayerNorm) {
    for (int64_t j = 0; j < G; ++j) work[j] = da[j] * w.ln_hh[j];
    normalize_row_backward(work, xhh, rhh, dgh, G);
  }
}

// The gradient through one row's gate math at step t. In: dhraw (H) the gradient of o ⊙ ψ(c),
// dcn (H) that of the new c from later steps; out: dA (4H) that of the pre-activations, dc (H)
// gains that of c_{t-1}, dGH (4H) that of the recurrent term before its layer norm. work: 11H.
template <typename T>
void LSTMScan<T>::cell_row_backward(int64_t t, int64_t b, const std::vector<Tensor>& saved,
                                    const T* dhraw, const T* dcn, T* dc, T* dA, T* dGH, T* Hraw,
                                    T* dChat, T* Chat, T* work) const {
  const int64_t H = hidden, G = gates(), r = t * batch + b;
  const T* a = saved[0].data_ptr<T>() + r * G;
  const T* c_prev = saved[2].data_ptr<T>() + r * H;
  const T* c_new = saved[3].data_ptr<T>() + r * H;
  T *y = work, *d = work + G, *psi = work + 2 * G, *dpsi = psi + H, *co = dpsi + H;
  T *i = y, *f = y + H, *g = y + 2 * H, *o = y + 3 * H;
  T *di_ = d, *df_ = d + H, *dg_ = d + 2 * H, *do_ = d + 3 * H;
  gate_grad<T>(opt.gate_act, opt.clip, a, i, di_, H, opt.input_gate);
  if (opt.coupled) {
    for (int64_t j = 0; j < H; ++j) f[j] = T(1) - i[j];
  } else {
    gate_grad<T>(opt.gate_act, opt.clip, a + H, f, df_, H, opt.forget_gate);
  }
  gate_grad<T>(opt.cell_act, opt.clip, a + 2 * H, g, dg_, H);
  gate_grad<T>(opt.gate_act, opt.clip, a + 3 * H, o, do_, H, opt.output_gate);
  const T* c_out = c_new;
  T* chat = Chat ? Chat + r * H : nullptr;
  if (w.ln_c) {
    const T* sc = saved[8].data_ptr<T>() + r * 2;
    for (int64_t j = 0; j < H; ++j) {
      chat[j] = (c_new[j] - sc[0]) * sc[1];
      co[j] = w.ln_c[j] * chat[j] + w.bln_c[j];
    }
    c_out = co;
  }
  activate(opt.out_act, c_out, psi, H);
  derivative(opt.out_act, c_out, psi, dpsi, H);
  if (Hraw) for (int64_t j = 0; j < H; ++j) Hraw[r * H + j] = o[j] * psi[j];
  T* dct = co;  // the gradient of c_t, once c_out is no longer needed
  for (int64_t j = 0; j < H; ++j) dpsi[j] *= dhraw[j] * o[j];  // now that of c_out
  if (w.ln_c) {
    T* dx = dChat + r * H;
    std::copy(dpsi, dpsi + H, dx);
    for (int64_t j = 0; j < H; ++j) dpsi[j] *= w.ln_c[j];
    normalize_row_backward(dpsi, chat, saved[8].data_ptr<T>()[r * 2 + 1], dct, H);
  } else {
    std::copy(dpsi, dpsi + H, dct);
  }
  const T* p = w.peephole;
  T* da = dA + r * G;
  T *da_i = da, *da_f = da + H, *da_g = da + 2 * H, *da_o = da + 3 * H;
  LSTMKIT_ELEMENTWISE
  for (int64_t j = 0; j < H; ++j) {
    da_o[j] = dhraw[j] * psi[j] * do_[j];
    dct[j] += dcn[j];
  }
  if (p) {
    LSTMKIT_ELEMENTWISE
    for (int64_t j = 0; j < H; ++j) dct[j] += da_o[j] * p[2 * H + j];
  }
  LSTMKIT_ELEMENTWISE
  for (int64_t j = 0; j < H; ++j) {  // through c_t = f c_{t-1} + i g
    dc[j] += dct[j] * f[j];
    da_g[j] = dct[j] * i[j] * dg_[j];
    da_i[j] = dct[j] * g[j];
    da_f[j] = dct[j] * c_prev[j];
  }
  if (opt.coupled) {  // f = 1 - i: f's share goes to i
    LSTMKIT_ELEMENTWISE
    for (int64_t j = 0; j < H; ++j) {
      da_i[j] = (da_i[j] - da_f[j]) * di_[j];
      da_f[j] = T(0);
    }
  } else {
    LSTMKIT_ELEMENTWISE
    for (int64_t j = 0; j < H; ++j) {
      da_i[j] *= di_[j];
      da_f[j] *= df_[j];
    }
  }
  if (p) {
    LSTMKIT_ELEMENTWISE
    for (int64_t j = 0; j < H; ++j) dc[j] += da_i[j] * p[j] + da_f[j] * p[H + j];
  }
  if (w.ln_hh) {
    const T* xhh = saved[6].data_ptr<T>() + r * G;
    for (int64_t j = 0; j < G; ++j) y[j] = da[j] * w.ln_hh[j];
    normalize_row_backward(y, xhh, saved[7].data_ptr<T>()[r], dGH + r * G, G);
  }
}

template <typename T>
std::vector<Tensor> LSTMScan<T>::backward(const Tensor& x, const Tensor& dy, const Tensor& dhT,
                                          const Tensor& dcT, const std::vector<Tensor>& saved,
                                          bool need_dx) const {
  const int64_t B = batch, H = hidden, P = output, G = gates(), rows = steps * B;
  const bool ln = w.ln_ih != nullptr, proj = w.w_hr != nullptr;
  const auto o = x.options();
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
  Tensor dA = at::empty({steps, B, G}, o), dGH = ln ? at::empty({steps, B, G}, o) : dA;
  Tensor dHn = proj ? at::empty({steps, B, P}, o) : Tensor();
  Tensor Hraw = proj ? at::empty({steps, B, H}, o) : Tensor();
  Tensor dChat = ln ? at::empty({steps, B, H}, o) : Tensor();
  Tensor Chat = ln ? at::empty({steps, B, H}, o) : Tensor();
  Tensor dh = dhT.clone(), dc = dcT.clone();  // (B, P), (B, H): gradients of the carried state
  Tensor dhraw = at::empty({B, H}, o), dcn = at::empty({B, H}, o);
  Tensor dhin = masks.hidden ? at::empty({B, P}, o) : Tensor();
  T *pdh = ptr(dh), *pdc = ptr(dc), *pdcn = ptr(dcn);
  const RightOperand<T> w_hh(w.w_hh, G, P, false, o), w_hr(w.w_hr, P, H, false, o);
  const bool fast = fused();
  const T* pdy = dy.data_ptr<T>();

  for (int64_t t = steps - 1; t >= 0; --t) {
    T* dhn = proj ? ptr(dHn) + t * B * P : ptr(dhraw);
    uncarry(masks, 0, t, B, P, pdh, pdy + t * B * P, dhn);
    uncarry(masks, 1, t, B, H, pdc, (const T*)nullptr, pdcn);
    if (proj) w_hr.times(B, dhn, P, 0, ptr(dhraw), H);
    at::parallel_for(0, B, row_grain(20 * G), [&](int64_t b0, int64_t b1) {
      std::vector<T> work(3 * G);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = t * B + b;
        if (!masks.valid(t, b)) {
          std::fill(ptr(dA) + r * G, ptr(dA) + (r + 1) * G, T(0));
          if (ln) std::fill(ptr(dGH) + r * G, ptr(dGH) + (r + 1) * G, T(0));
          if (ln) std::fill(ptr(dChat) + r * H, ptr(dChat) + (r + 1) * H, T(0));
          if (ln) std::fill(ptr(Chat) + r * H, ptr(Chat) + (r + 1) * H, T(0));
          if (proj) std::fill(ptr(Hraw) + r * H, ptr(Hraw) + (r + 1) * H, T(0));
          continue;
        }
        T *dhr = ptr(dhraw) + b * H, *hr = proj ? ptr(Hraw) + r * H : work.data() + 2 * G;
        if (fast) {
          const T *a = ptr(saved[0]) + r * G, *cp = ptr(saved[2]) + r * H;
          const T *cn = ptr(saved[3]) + r * H, *sc = ln ? ptr(saved[8]) + r * 2 : nullptr;
          const T* xhh = ln ? ptr(saved[6]) + r * G : nullptr;
          const T rhh = ln ? ptr(saved[7])[r] : T(0);
          fused_step_row_backward(a, cp, cn, sc, xhh, rhh, dhr, pdcn + b * H, pdc + b * H,
                                  ptr(dA) + r * G, ln ? ptr(dGH) + r * G : nullptr, hr,
                                  ln ? ptr(Chat) + r * H : nullptr,
                                  ln ? ptr(dChat) + r * H : nullptr, work.data());
        } else {
          cell_row_backward(t, b, saved, dhr, pdcn + b * H, pdc + b * H, ptr(dA), ptr(dGH),
                            ptr(Hraw), ptr(dChat), ptr(Chat), work.data());
        }
      }
    });
    backprop_recurrent(masks, B, P, ptr(dGH) + t * B * G, G, w_hh, pdh, ptr(dhin));
  }
  return weight_grads(x, saved, dA, dGH, dHn, Hraw, dChat, Chat, dh, dc, need_dx);
}

// Everything after the time loop is a product or a sum over all steps at once. Returns the
// gradients of x, h0, c0 and the cell's tensors in CellWeights order (undefined where absent).
template <typename T>
std::vector<Tensor> LSTMScan<T>::weight_grads(const Tensor& x, const std::vector<Tensor>& saved,
                                              const Tensor& dA, const Tensor& dGH,
                                              const Tensor& dHn, const Tensor& Hraw,
                                              const Tensor& dChat, const Tensor& Chat,
                                              const Tensor& dh, const Tensor& dc,
                                              bool need_dx) const {
  const int64_t B = batch, H = hidden, P = output, G = gates(), rows = steps * B;
  const auto o = x.options();
  const T* pdA = dA.data_ptr<T>();
  Tensor dGX = dA;
  if (w.ln_ih) {  // the input term's layer norm, row by row over all steps
    dGX = at::empty({steps, B, G}, o);
    const T *Xih = saved[4].data_ptr<T>(), *Rih = saved[5].data_ptr<T>();
    T* pdGX = dGX.data_ptr<T>();
    at::parallel_for(0, rows, row_grain(4 * G), [&](int64_t r0, int64_t r1) {
      std::vector<T> scaled(G);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t j = 0; j < G; ++j) scaled[j] = pdA[r * G + j] * w.ln_ih[j];
        normalize_row_backward(scaled.data(), Xih + r * G, Rih[r], pdGX + r * G, G);
      }
    });
  }
  const T* pdGX = dGX.data_ptr<T>();
  std::vector<Tensor> out(13);
  if (need_dx) {
    out[0] = at::empty({steps, B, input}, o);
    RightOperand<T>(w.w_ih, G, input, false, o).times(rows, pdGX, G, 0, out[0].data_ptr<T>(), input);
  }
  out[1] = dh;
  out[2] = dc;
  out[3] = weight_gradient<T>(rows, G, input, pdGX, G, x.data_ptr<T>(), input, o);
  Tensor masked = masks.hidden ? at::empty({steps, B, P}, o) : Tensor();
  const T* h_in = masked_hidden(masks, saved[1].data_ptr<T>(),  // h_0 .. h_{T-1}
                                masks.hidden ? masked.data_ptr<T>() : nullptr, steps, B * P);
  out[4] = weight_gradient<T>(rows, G, P, dGH.data_ptr<T>(), G, h_in, P, o);
  out[5] = at::empty({G}, o);
  column_sums<T>(rows, G, pdA, G, nullptr, 0, out[5].data_ptr<T>());
  out[6] = out[5].clone();
  if (w.w_hr) {
    out[7] = weight_gradient<T>(rows, P, H, dHn.data_ptr<T>(), P, Hraw.data_ptr<T>(), H, o);
  }
  if (w.peephole) {  // i and f see c_{t-1}, o sees c_t
    out[8] = at::empty({3 * H}, o);
    T* dp = out[8].data_ptr<T>();
    const T *c_prev = saved[2].data_ptr<T>(), *c_new = saved[3].data_ptr<T>();
    column_sums<T>(rows, H, pdA, G, c_prev, H, dp);
    column_sums<T>(rows, H, pdA + H, G, c_prev, H, dp + H);
    column_sums<T>(rows, H, pdA + 3 * H, G, c_new, H, dp + 2 * H);
  }
  if (w.ln_ih) {
    for (int k = 0; k < 4; ++k) out[9 + k] = at::empty({k < 2 ? G : H}, o);
    column_sums<T>(rows, G, pdA, G, saved[4].data_ptr<T>(), G, out[9].data_ptr<T>());
    column_sums<T>(rows, G, pdA, G, saved[6].data_ptr<T>(), G, out[10].data_ptr<T>());
    column_sums<T>(rows, H, dChat.data_ptr<T>(), H, Chat.data_ptr<T>(), H, out[11].data_ptr<T>());
    column_sums<T>(rows, H, dChat.data_ptr<T>(), H, nullptr, 0, out[12].data_ptr<T>());
  }
  return out;
}

}  // namespace lstmkit
