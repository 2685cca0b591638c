// The LSTM's backward pass: the gradient of lstm.h's forward, step by step in reverse, then
// the weight gradients as products over all steps at once. Shapes and saved tensors as in
// lstm.h.
#pragma once

#include "lstm.h"

namespace lstmkit {

// The gradient of n consecutive fused rows at step t (each array from the first row's). In:
// a, c_prev, c_new and the layer-norm rows the forward pass saved; dhraw (H) the gradient of
// o ⊙ ψ(c); dcn (H) that of the new c from later steps. Out: da (4H) that of the
// pre-activations; dc (H) gains that of c_{t-1}; dgh (4H) that of the recurrent term before
// its layer norm; hraw (H) o ⊙ ψ(c) again, for the projection's gradient; chat, dchat (H) the
// normalised c and its gradient. Rows past their length need no care: their incoming
// gradients are zero, so are all they give. work: n * (4H + 4) values.
template <typename T>
template <bool Peephole, bool LayerNorm>
void LSTMScan<T>::fused_rows_backward(int64_t n, const T* a, const T* c_prev, const T* c_new,
                                      const T* sc, const T* xhh, const T* rhh,
                                      const T* dhraw, const T* dcn, T* dc, T* da, T* dgh,
                                      T* hraw, T* chat, T* dchat, T* work) const {
  const int64_t H = hidden, G = gates();
  const T* p = w.peephole;
  T *buf = work, *ma = work + n * G, *mb = ma + n;  // buf: per row tanh(LN(c)) and dĉ γ_c
  if constexpr (LayerNorm) {
    for (int64_t b = 0; b < n; ++b) {
      const T *ab = a + b * G, *cn = c_new + b * H, *dhr = dhraw + b * H;
      const T mean = sc[2 * b], rstd = sc[2 * b + 1];
      T *ch = chat + b * H, *dch = dchat + b * H, *tcs = buf + b * G, *dxh = tcs + H;
      LSTMKIT_ELEMENTWISE
      for (int64_t j = 0; j < H; ++j) {
        const T o = vsigmoid(ab[3 * H + j]);
        ch[j] = (cn[j] - mean) * rstd;
        tcs[j] = vtanh(w.ln_c[j] * ch[j] + w.bln_c[j]);
        dch[j] = dhr[j] * o * (T(1) - tcs[j] * tcs[j]);
        dxh[j] = dch[j] * w.ln_c[j];
      }
    }
    rows_backward_means(buf + H, chat, n, H, G, H, ma, mb);
  }
  for (int64_t b = 0; b < n; ++b) {
    const T *ab = a + b * G, *cp = c_prev + b * H, *cn = c_new + b * H, *dhr = dhraw + b * H;
    const T *dcnb = dcn + b * H, *tcs = buf + b * G, *dxh = tcs + H, *ch = chat + b * H;
    const T rstd_c = LayerNorm ? sc[2 * b + 1] : T(0), mab = ma[b], mbb = mb[b];
    T *dcb = dc + b * H, *dab = da + b * G, *hr = hraw + b * H;
    LSTMKIT_ELEMENTWISE
    for (int64_t j = 0; j < H; ++j) {
      const T i = vsigmoid(ab[j]), f = vsigmoid(ab[H + j]), g = vtanh(ab[2 * H + j]);
      const T o = vsigmoid(ab[3 * H + j]);
      const T tc = LayerNorm ? tcs[j] : vtanh(cn[j]);
      hr[j] = o * tc;
      const T da_o = dhr[j] * tc * o * (T(1) - o);
      T dct = dcnb[j] + (LayerNorm ? rstd_c * (dxh[j] - mab - ch[j] * mbb)
                                   : dhr[j] * o * (T(1) - tc * tc));
      if constexpr (Peephole) dct += da_o * p[2 * H + j];
      const T da_i = dct * g * i * (T(1) - i), da_f = dct * cp[j] * f * (T(1) - f);
      dcb[j] += dct * f;
      if constexpr (Peephole) dcb[j] += da_i * p[j] + da_f * p[H + j];
      dab[j] = da_i;
      dab[H + j] = da_f;
      dab[2 * H + j] = dct * i * (T(1) - g * g);
      dab[3 * H + j] = da_o;
    }
  }
  if constexpr (LayerNorm) {  // through the recurrent term's layer norm
    for (int64_t b = 0; b < n; ++b) {
      for (int64_t j = 0; j < G; ++j) buf[b * G + j] = da[b * G + j] * w.ln_hh[j];
    }
    rows_backward_means(buf, xhh, n, G, G, G, ma, mb);
    for (int64_t b = 0; b < n; ++b) {
      const T *s = buf + b * G, *x = xhh + b * G, r = rhh[b], mab = ma[b], mbb = mb[b];
      T* d = dgh + b * G;
      for (int64_t j = 0; j < G; ++j) d[j] = r * (s[j] - mab - x[j] * mbb);
    }
  }
}

// The gradient of one row of the general cell (any activations, clip, coupling, removed
// gates), with fused_row_backward's arguments. work: 3 * 4H values.
template <typename T>
void LSTMScan<T>::cell_row_backward(const T* a, const T* c_prev, const T* c_new, const T* sc,
                                    const T* xhh, T rhh, const T* dhraw, const T* dcn, T* dc,
                                    T* da, T* dgh, T* hraw, T* chat, T* dchat, T* work) const {
  const int64_t H = hidden, G = gates();
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
  if (w.ln_c) {
    for (int64_t j = 0; j < H; ++j) {
      chat[j] = (c_new[j] - sc[0]) * sc[1];
      co[j] = w.ln_c[j] * chat[j] + w.bln_c[j];
    }
    c_out = co;
  }
  activate(opt.out_act, c_out, psi, H);
  derivative(opt.out_act, c_out, psi, dpsi, H);
  for (int64_t j = 0; j < H; ++j) hraw[j] = o[j] * psi[j];
  T* dct = co;  // the gradient of c_t, once c_out is no longer needed
  for (int64_t j = 0; j < H; ++j) dpsi[j] *= dhraw[j] * o[j];  // now that of c_out
  if (w.ln_c) {
    std::copy(dpsi, dpsi + H, dchat);
    for (int64_t j = 0; j < H; ++j) dpsi[j] *= w.ln_c[j];
    normalize_row_backward(dpsi, chat, sc[1], dct, H);
  } else {
    std::copy(dpsi, dpsi + H, dct);
  }
  const T* p = w.peephole;
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
    for (int64_t j = 0; j < G; ++j) y[j] = da[j] * w.ln_hh[j];
    normalize_row_backward(y, xhh, rhh, dgh, G);
  }
}

// The backward pass, a chunk of steps at a time from the last: the chunk's gate gradients come
// step by step (each needs the next step's), then become its share of the weight, bias and
// input gradients in products over all its rows at once. Returns the gradients of x, h0, c0
// and the cell's tensors in LSTMWeights order (ops.cpp names them; undefined where absent).
template <typename T>
std::vector<Tensor> LSTMScan<T>::backward(const Tensor& x, const Tensor& dy, const Tensor& dhT,
                                          const Tensor& dcT, const std::vector<Tensor>& saved,
                                          bool need_dx) const {
  const int64_t B = batch, H = hidden, P = output, G = gates(), I = input;
  const bool ln = w.ln_ih != nullptr, proj = w.w_hr != nullptr, fast = fused();
  const int64_t chunk = std::min(steps, backward_chunk(B, B * G));
  const auto o = x.options();
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
  auto empty = [&](std::initializer_list<int64_t> shape, bool needed = true) {
    return needed ? at::empty(shape, o) : Tensor();
  };
  // Per chunk: dA (gradient of the pre-activations), dGH (of the recurrent term before its
  // layer norm; dA itself without), and with a projection dHn (of h_t before it) and o ⊙ ψ(c).
  Tensor dA = empty({chunk, B, G}), dGH = ln ? empty({chunk, B, G}) : dA;
  Tensor dHn = empty({chunk, B, P}, proj), Hraw = empty({chunk, B, H}, proj);
  Tensor masked = empty({chunk, B, P}, masks.hidden || masks.rounds());
  Tensor chat = empty({B, H}, ln), dchat = empty({B, H}, ln);  // layer norm of c, this step
  Tensor dh = dhT.clone(), dc = dcT.clone();  // (B, P), (B, H): gradients of the carried state
  Tensor dhraw = empty({B, H}), dcn = empty({B, H}), dhin = empty({B, P}, masks.hidden);
  Tensor dx = empty({steps, B, I}, need_dx);
  T *pdh = ptr(dh), *pdc = ptr(dc), *pdcn = ptr(dcn), *pdA = ptr(dA), *pdGH = ptr(dGH);
  T *pdHn = ptr(dHn), *praw = ptr(Hraw), *pchat = ptr(chat), *pdchat = ptr(dchat);
  T *pdhraw = ptr(dhraw), *pdhin = ptr(dhin);
  const T *pa = ptr(saved[0]), *pcs = ptr(saved[2]), *pcn = ptr(saved[3]), *pdy = ptr(dy);
  // Xih and Xhh follow A in saved[0] or come last (lstm.h)
  const bool joint = saved[0].size(0) == 3;
  const T* pxih = !ln ? nullptr : joint ? pa + steps * B * G : ptr(saved[7]);
  const T* pxhh = !ln ? nullptr : joint ? pa + 2 * steps * B * G : ptr(saved[8]);
  const T *prih = ln ? ptr(saved[4]) : nullptr, *prhh = ln ? ptr(saved[5]) : nullptr;
  const T* psc = ln ? ptr(saved[6]) : nullptr;
  const RightOperand<T> w_ih(w.w_ih, G, I, false, o), w_hh(w.w_hh, G, P, false, o);
  const RightOperand<T> w_hr(w.w_hr, P, H, false, o);
  // Sums over all steps: biases, peepholes and layer-norm gains in double, weights by chunks.
  std::vector<double> dbias(G), dpeep(w.peephole ? 3 * H : 0), dln_ih(ln ? G : 0);
  std::vector<double> dln_hh(ln ? G : 0), dln_c(ln ? H : 0), dbln_c(ln ? H : 0);
  WeightGradient<T> dw_ih(G, I, o), dw_hh(G, P, o), dw_hr(proj ? P : 0, H, o);

  auto add_chunk = [&](int64_t t0, int64_t n) {
    const int64_t rows = n * B;
    column_sums<T>(rows, G, pdA, G, nullptr, 0, dbias.data());
    if (w.peephole) {  // i and f see c_{t-1}, o sees c_t
      column_sums<T>(rows, H, pdA, G, pcs + t0 * B * H, H, dpeep.data());
      column_sums<T>(rows, H, pdA + H, G, pcs + t0 * B * H, H, dpeep.data() + H);
      column_sums<T>(rows, H, pdA + 3 * H, G, pcn + t0 * B * H, H, dpeep.data() + 2 * H);
    }
    if (ln) {  // the gains' sums need dA as it is; then it becomes that of x W_ih^T, in place
      column_sums<T>(rows, G, pdA, G, pxih + t0 * B * G, G, dln_ih.data());
      column_sums<T>(rows, G, pdA, G, pxhh + t0 * B * G, G, dln_hh.data());
      at::parallel_for(0, rows, row_grain(4 * G), [&](int64_t r0, int64_t r1) {
        std::vector<T> scaled(G);
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t j = 0; j < G; ++j) scaled[j] = pdA[r * G + j] * w.ln_ih[j];
          normalize_row_backward(scaled.data(), pxih + (t0 * B + r) * G, prih[t0 * B + r],
                                 pdA + r * G, G);
        }
      });
    }
    if (need_dx) w_ih.times(rows, pdA, G, 0, ptr(dx) + t0 * B * I, I);
    dw_ih.add(rows, pdA, G, ptr(x) + t0 * B * I, I);
    const T* h_in = operand(masks, masked_hidden(masks, ptr(saved[1]) + t0 * B * P,
                                                 ptr(masked), n, B * P), ptr(masked), rows * P);
    dw_hh.add(rows, pdGH, G, h_in, P);
    if (proj) dw_hr.add(rows, pdHn, P, operand(masks, praw, praw, rows * H), H);
  };

  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t t0 = t / chunk * chunk, k = t - t0;  // the chunk's first step; t's place in it
    T* dhn = proj ? pdHn + k * B * P : pdhraw;
    uncarry(masks, 0, t, B, P, pdh, pdy + t * B * P, dhn);
    uncarry(masks, 1, t, B, H, pdc, (const T*)nullptr, pdcn);
    if (proj) w_hr.times(B, dhn, P, 0, pdhraw, H);
    at::parallel_for(0, B, row_grain(20 * G), [&](int64_t b0, int64_t b1) {
      const int64_t n = b1 - b0, q0 = k * B + b0, r0 = t * B + b0;  // first row: chunk, sequence
      std::vector<T> work(fast ? n * (G + H + 4) : 3 * G + H);
      if (fast) {  // o ⊙ ψ(c) goes to the chunk's rows with a projection, else to scratch
        T* hr = proj ? praw + q0 * H : work.data() + n * (G + 4);
        fused_step_rows_backward(n, pa + r0 * G, pcs + r0 * H, pcn + r0 * H,
                                 ln ? psc + r0 * 2 : nullptr, ln ? pxhh + r0 * G : nullptr,
                                 ln ? prhh + r0 : nullptr, pdhraw + b0 * H, pdcn + b0 * H,
                                 pdc + b0 * H, pdA + q0 * G, ln ? pdGH + q0 * G : nullptr, hr,
                                 ln ? pchat + b0 * H : nullptr, ln ? pdchat + b0 * H : nullptr,
                                 work.data());
        return;
      }
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = t * B + b, q = k * B + b;  // the row in the sequence, in the chunk
        T *da = pdA + q * G, *dgh = ln ? pdGH + q * G : nullptr;
        T *ch = ln ? pchat + b * H : nullptr, *dch = ln ? pdchat + b * H : nullptr;
        T* hr = proj ? praw + q * H : work.data() + 3 * G;
        if (!masks.valid(t, b)) {  // past the length: no gradient through this step
          std::fill(da, da + G, T(0));
          if (ln) std::fill(dgh, dgh + G, T(0));
          if (ln) std::fill(dch, dch + H, T(0));
          if (proj) std::fill(hr, hr + H, T(0));
          continue;
        }
        cell_row_backward(pa + r * G, pcs + r * H, pcn + r * H, ln ? psc + r * 2 : nullptr,
                          ln ? pxhh + r * G : nullptr, ln ? prhh[r] : T(0), pdhraw + b * H,
                          pdcn + b * H, pdc + b * H, da, dgh, hr, ch, dch, work.data());
      }
    });
    if (ln) column_sums<T>(B, H, pdchat, H, pchat, H, dln_c.data());
    if (ln) column_sums<T>(B, H, pdchat, H, nullptr, 0, dbln_c.data());
    backprop_recurrent(masks, B, P, pdGH + k * B * G, G, w_hh, pdh, pdhin);
    if (t == t0) add_chunk(t0, std::min(chunk, steps - t0));
  }
  std::vector<Tensor> out{dx, dh, dc, dw_ih.result(), dw_hh.result(), as_tensor<T>(dbias, o),
                          as_tensor<T>(dbias, o), Tensor(), Tensor(), Tensor(), Tensor(),
                          Tensor(), Tensor()};
  if (proj) out[7] = dw_hr.result();
  if (w.peephole) out[8] = as_tensor<T>(dpeep, o);
  if (ln) {
    out[9] = as_tensor<T>(dln_ih, o);
    out[10] = as_tensor<T>(dln_hh, o);
    out[11] = as_tensor<T>(dln_c, o);
    out[12] = as_tensor<T>(dbln_c, o);
  }
  return out;
}

}  // namespace lstmkit
