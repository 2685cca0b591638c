// The fused GRU: one layer, one direction, forward and backward over the whole sequence, for
// both forms of lstmkit/cells/gru.py (equations there): torch's reset-after and the paper's.
//
// Shapes (legend in common.h; P = H): x (T, B, I); h (B, H); weight_ih (3H, I), weight_hh
// (3H, H), biases (3H), gate order r, z, n. Saved for the backward pass (training only):
//   Gt (T, B, 3H) the gates r, z, n after their activations; Hs (T+1, B, H) the carried
//   states; Rn (T, B, H) W_hn h_{t-1} + b_hn (reset-after) or r ⊙ h_{t-1} (reset-before).
#pragma once

#include "common.h"

namespace lstmkit {

// The four tensors a GRU or an RNN cell has (torch.nn's); the biases are zeros
// when the cell has none (ops.cpp), which keeps the loops free of branches.
template <typename T>
struct PlainWeights {
  const T *w_ih, *w_hh, *b_ih, *b_hh;
};

// A = x W_ih^T + b_ih for `rows` rows (a chunk of steps) in one product, plus b_hh on the first
// `folded` columns of each row (the terms that the recurrence only adds).
template <typename T>
void plain_input_term(const PlainWeights<T>& w, const RightOperand<T>& w_ih, int64_t rows,
                      int64_t I, int64_t G, int64_t folded, const T* x, T* A) {
  at::parallel_for(0, rows, row_grain(G), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t j = 0; j < folded; ++j) A[r * G + j] = w.b_ih[j] + w.b_hh[j];
      for (int64_t j = folded; j < G; ++j) A[r * G + j] = w.b_ih[j];
    }
  });
  w_ih.times(rows, x, I, 1, A, G);
}

template <typename T>
struct GRUScan {
  int64_t steps, batch, input, hidden;
  PlainWeights<T> w;
  bool reset_after;
  Masks<T> masks;
  bool save;

  std::vector<Tensor> forward(const Tensor& x, const Tensor& h0) const;
  std::vector<Tensor> backward(const Tensor& x, const Tensor& dy, const Tensor& dhT,
                               const std::vector<Tensor>& saved, bool need_dx) const;
};

template <typename T>
std::vector<Tensor> GRUScan<T>::forward(const Tensor& x, const Tensor& h0) const {
  const int64_t B = batch, H = hidden, G = 3 * H;
  const auto o = x.options();
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
  const int64_t chunk = std::min(steps, chunk_steps(B * G));
  Tensor y = at::empty({steps, B, H}, o), A = at::empty({chunk, B, G}, o);
  Tensor Gt = at::empty({save ? steps : 1, B, G}, o), Rn = at::empty({save ? steps : 1, B, H}, o);
  Tensor Hs = at::empty({save ? steps + 1 : 2, B, H}, o);
  Tensor gh = at::empty({B, G}, o), hnew = at::empty({B, H}, o);
  Tensor hin = masks.hidden ? at::empty({B, H}, o) : Tensor();
  Tensor hop = masks.rounds() ? at::empty({B, H}, o) : Tensor();  // h_in rounded, for w_hh
  T *pA = ptr(A), *pH = ptr(Hs), *pgh = ptr(gh), *pnew = ptr(hnew);
  std::copy(h0.data_ptr<T>(), h0.data_ptr<T>() + B * H, pH);
  const RightOperand<T> w_ih(w.w_ih, input, G, true, o, masks.operand);
  const T* b_hn = w.b_hh + 2 * H;
  // reset-after: all three recurrent terms in one product; reset-before: r and z, then n.
  const RightOperand<T> w_hh(w.w_hh, H, reset_after ? G : 2 * H, true, o, masks.operand);
  const RightOperand<T> w_hn(reset_after ? nullptr : w.w_hh + 2 * H * H, H, H, true, o,
                             masks.operand);
  const int64_t grain = row_grain(8 * G);

  for (int64_t t = 0; t < steps; ++t) {
    const int64_t s = save ? t : t % 2, s1 = save ? t + 1 : (t + 1) % 2, k = save ? t : 0;
    if (t % chunk == 0) {
      plain_input_term(w, w_ih, std::min(chunk, steps - t) * B, input, G, 2 * H,
                       ptr(x) + t * B * input, pA);
    }
    const T* h_prev = pH + s * B * H;
    const T* h_in = masked_hidden(masks, h_prev, ptr(hin), 1, B * H);
    T *a = pA + t % chunk * B * G, *gates = ptr(Gt) + k * B * G, *rn = ptr(Rn) + k * B * H;
    w_hh.times(B, operand(masks, h_in, ptr(hop), B * H), H, 0, pgh, G);
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T *ab = a + b * G, *ghb = pgh + b * G, *hb = h_in + b * H;
        T *r = gates + b * G, *rnb = rn + b * H;
        for (int64_t j = 0; j < 2 * H; ++j) r[j] = vsigmoid(ab[j] + ghb[j]);  // r and z
        if (reset_after) {
          for (int64_t j = 0; j < H; ++j) rnb[j] = ghb[2 * H + j] + b_hn[j];
        } else {
          for (int64_t j = 0; j < H; ++j) rnb[j] = r[j] * hb[j];
        }
      }
    });
    if (!reset_after) w_hn.times(B, operand(masks, rn, rn, B * H), H, 0, pgh + 2 * H, G);
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T *ab = a + b * G + 2 * H, *hb = h_in + b * H, *rnb = rn + b * H;
        const T* ghn = pgh + b * G + 2 * H;
        T *r = gates + b * G, *z = r + H, *n = r + 2 * H, *hn = pnew + b * H;
        if (reset_after) {
          for (int64_t j = 0; j < H; ++j) n[j] = vtanh(ab[j] + r[j] * rnb[j]);
        } else {
          for (int64_t j = 0; j < H; ++j) n[j] = vtanh(ab[j] + ghn[j] + b_hn[j]);
        }
        LSTMKIT_ELEMENTWISE
        for (int64_t j = 0; j < H; ++j) hn[j] = (T(1) - z[j]) * n[j] + z[j] * hb[j];
      }
    });
    carry(masks, 0, t, B, H, h_prev, pnew, pH + s1 * B * H, ptr(y) + t * B * H);
  }
  std::vector<Tensor> out{y, Hs[save ? steps : steps % 2].clone()};
  if (save) out.insert(out.end(), {Gt, Hs, Rn});
  return out;
}

template <typename T>
std::vector<Tensor> GRUScan<T>::backward(const Tensor& x, const Tensor& dy, const Tensor& dhT,
                                         const std::vector<Tensor>& saved, bool need_dx) const {
  const int64_t B = batch, H = hidden, G = 3 * H, rows = steps * B;
  const auto o = x.options();
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
  const T *Gt = ptr(saved[0]), *Hs = ptr(saved[1]), *Rn = ptr(saved[2]);
  Tensor dGX = at::empty({steps, B, G}, o), dGH = at::empty({steps, B, G}, o);
  Tensor dh = dhT.clone(), dhn = at::empty({B, H}, o), drh = at::empty({B, H}, o);
  Tensor hin_buf = masks.hidden ? at::empty({B, H}, o) : Tensor();
  Tensor buf = masks.hidden ? at::empty({B, H}, o) : Tensor();
  T *pdh = ptr(dh), *pdhn = ptr(dhn), *pdrh = ptr(drh), *pdGX = ptr(dGX), *pdGH = ptr(dGH);
  const int64_t grain = row_grain(8 * G);
  // reset-after: one product through all of w_hh; reset-before: r and z rows, then n rows.
  const RightOperand<T> w_hh(w.w_hh, reset_after ? G : 2 * H, H, false, o);
  const RightOperand<T> w_hn(reset_after ? nullptr : w.w_hh + 2 * H * H, H, H, false, o);

  for (int64_t t = steps - 1; t >= 0; --t) {
    uncarry(masks, 0, t, B, H, pdh, ptr(dy) + t * B * H, pdhn);
    const T* h_in = masked_hidden(masks, Hs + t * B * H, ptr(hin_buf), 1, B * H);
    const T *gates = Gt + t * B * G, *rn = Rn + t * B * H;
    T *dgx = pdGX + t * B * G, *dgh = pdGH + t * B * G;
    // Through h = (1 - z) n + z h_in and n = tanh(...); r's share waits for d(r h_in) when
    // the reset comes before the product. dhn becomes the direct share of h_in.
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T *r = gates + b * G, *z = r + H, *n = r + 2 * H, *hb = h_in + b * H;
        T *dx = dgx + b * G, *dg = dgh + b * G, *d = pdhn + b * H;
        LSTMKIT_ELEMENTWISE
        for (int64_t j = 0; j < H; ++j) {
          const T dn = d[j] * (T(1) - z[j]) * (T(1) - n[j] * n[j]);
          const T dz = d[j] * (hb[j] - n[j]) * z[j] * (T(1) - z[j]);
          d[j] *= z[j];
          dx[H + j] = dg[H + j] = dz;
          dx[2 * H + j] = dg[2 * H + j] = dn;
        }
        if (!reset_after) continue;
        LSTMKIT_ELEMENTWISE
        for (int64_t j = 0; j < H; ++j) {
          const T dn = dx[2 * H + j];
          dg[2 * H + j] = dn * r[j];
          dx[j] = dg[j] = dn * rn[b * H + j] * r[j] * (T(1) - r[j]);
        }
      }
    });
    if (!reset_after) {
      w_hn.times(B, dgh + 2 * H, G, 0, pdrh, H);
      for (int64_t b = 0; b < B; ++b) {
        const T *r = gates + b * G, *hb = h_in + b * H, *d_rh = pdrh + b * H;
        T *dx = dgx + b * G, *dg = dgh + b * G, *d = pdhn + b * H;
        LSTMKIT_ELEMENTWISE
        for (int64_t j = 0; j < H; ++j) {
          dx[j] = dg[j] = d_rh[j] * hb[j] * r[j] * (T(1) - r[j]);
          d[j] += d_rh[j] * r[j];
        }
      }
    }
    add_masked(masks, pdhn, pdh, B * H);
    backprop_recurrent(masks, B, H, dgh, G, w_hh, pdh, ptr(buf));
  }

  std::vector<Tensor> out(6);  // x, h0, weight_ih, weight_hh, bias_ih, bias_hh
  if (need_dx) {
    out[0] = at::empty({steps, B, input}, o);
    RightOperand<T>(w.w_ih, G, input, false, o).times(rows, pdGX, G, 0, ptr(out[0]), input);
  }
  out[1] = dh;
  out[2] = weight_gradient<T>(rows, G, input, pdGX, G, ptr(x), input, o);
  Tensor masked = masks.hidden || masks.rounds() ? at::empty({steps, B, H}, o) : Tensor();
  const T* h_in = operand(masks, masked_hidden(masks, Hs, ptr(masked), steps, B * H),
                          ptr(masked), rows * H);
  if (reset_after) {
    out[3] = weight_gradient<T>(rows, G, H, pdGH, G, h_in, H, o);
  } else {  // r and z rows saw h_{t-1}, n rows saw r ⊙ h_{t-1}
    out[3] = at::empty({G, H}, o);
    Tensor rz = weight_gradient<T>(rows, 2 * H, H, pdGH, G, h_in, H, o);
    Tensor n = weight_gradient<T>(rows, H, H, pdGH + 2 * H, G, Rn, H, o);
    std::copy(ptr(rz), ptr(rz) + 2 * H * H, ptr(out[3]));
    std::copy(ptr(n), ptr(n) + H * H, ptr(out[3]) + 2 * H * H);
  }
  std::vector<double> dbias_ih(G), dbias_hh(G);
  column_sums<T>(rows, G, pdGX, G, nullptr, 0, dbias_ih.data());
  column_sums<T>(rows, G, pdGH, G, nullptr, 0, dbias_hh.data());
  out[4] = as_tensor<T>(dbias_ih, o);
  out[5] = as_tensor<T>(dbias_hh, o);
  return out;
}

}  // namespace lstmkit
