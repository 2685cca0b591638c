// The fused Elman RNN: one layer, one direction, forward and backward over the whole
// sequence; lstmkit/cells/rnn.py has the equation.
//
// Shapes (legend in common.h; P = H): x (T, B, I); h (B, H); weight_ih (H, I), weight_hh
// (H, H), biases (H). Saved for the backward pass (training only): A (T, B, H) each step's
// new h before zoneout and lengths, Hs (T+1, B, H) the carried states.
#pragma once

#include "gru.h"

namespace lstmkit {

template <typename T>
struct RNNScan {
  int64_t steps, batch, input, hidden;
  PlainWeights<T> w;
  bool relu;
  Masks<T> masks;
  bool save;

  std::vector<Tensor> forward(const Tensor& x, const Tensor& h0) const;
  std::vector<Tensor> backward(const Tensor& x, const Tensor& dy, const Tensor& dhT,
                               const std::vector<Tensor>& saved, bool need_dx) const;
};

template <typename T>
std::vector<Tensor> RNNScan<T>::forward(const Tensor& x, const Tensor& h0) const {
  const int64_t B = batch, H = hidden;
  const auto o = x.options();
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
  Tensor y = at::empty({steps, B, H}, o), A = at::empty({steps, B, H}, o);
  const int64_t chunk = std::min(steps, chunk_steps(B * H));
  Tensor Hs = at::empty({save ? steps + 1 : 2, B, H}, o);
  Tensor hin = masks.hidden || masks.rounds() ? at::empty({B, H}, o) : Tensor();
  T *pA = ptr(A), *pH = ptr(Hs);
  std::copy(h0.data_ptr<T>(), h0.data_ptr<T>() + B * H, pH);
  const RightOperand<T> w_ih(w.w_ih, input, H, true, o, masks.operand);
  const RightOperand<T> w_hh(w.w_hh, H, H, true, o, masks.operand);
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t s = save ? t : t % 2, s1 = save ? t + 1 : (t + 1) % 2;
    if (t % chunk == 0) {
      plain_input_term(w, w_ih, std::min(chunk, steps - t) * B, input, H, H,
                       ptr(x) + t * B * input, pA + t * B * H);
    }
    const T* h_prev = pH + s * B * H;
    T* a = pA + t * B * H;  // becomes the new h in place
    const T* h_in = masked_hidden(masks, h_prev, ptr(hin), 1, B * H);
    w_hh.times(B, operand(masks, h_in, ptr(hin), B * H), H, 1, a, H);
    activate(relu ? kRelu : kTanh, a, a, B * H);
    carry(masks, 0, t, B, H, h_prev, a, pH + s1 * B * H, ptr(y) + t * B * H);
  }
  std::vector<Tensor> out{y, Hs[save ? steps : steps % 2].clone()};
  if (save) out.insert(out.end(), {A, Hs});
  return out;
}

template <typename T>
std::vector<Tensor> RNNScan<T>::backward(const Tensor& x, const Tensor& dy, const Tensor& dhT,
                                         const std::vector<Tensor>& saved, bool need_dx) const {
  const int64_t B = batch, H = hidden, rows = steps * B;
  const auto o = x.options();
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
  const T *Hn = ptr(saved[0]), *Hs = ptr(saved[1]);
  Tensor dA = at::empty({steps, B, H}, o), dh = dhT.clone();
  Tensor buf = masks.hidden || masks.rounds()
      ? at::empty({std::max<int64_t>(steps, 1) * B, H}, o) : Tensor();
  T *pdA = ptr(dA), *pdh = ptr(dh);
  const RightOperand<T> w_hh(w.w_hh, H, H, false, o);
  for (int64_t t = steps - 1; t >= 0; --t) {
    T* da = pdA + t * B * H;
    uncarry(masks, 0, t, B, H, pdh, ptr(dy) + t * B * H, da);
    const T* h = Hn + t * B * H;
    for (int64_t j = 0; j < B * H; ++j)
      da[j] *= relu ? (h[j] > T(0) ? T(1) : T(0)) : T(1) - h[j] * h[j];
    backprop_recurrent(masks, B, H, da, H, w_hh, pdh, ptr(buf));
  }
  std::vector<Tensor> out(6);  // x, h0, weight_ih, weight_hh, bias_ih, bias_hh
  if (need_dx) {
    out[0] = at::empty({steps, B, input}, o);
    RightOperand<T>(w.w_ih, H, input, false, o).times(rows, pdA, H, 0, ptr(out[0]), input);
  }
  out[1] = dh;
  out[2] = weight_gradient<T>(rows, H, input, pdA, H, ptr(x), input, o);
  const T* h_in = operand(masks, masked_hidden(masks, Hs, ptr(buf), steps, B * H), ptr(buf),
                          rows * H);
  out[3] = weight_gradient<T>(rows, H, H, pdA, H, h_in, H, o);
  std::vector<double> dbias(H);
  column_sums<T>(rows, H, pdA, H, nullptr, 0, dbias.data());
  out[4] = as_tensor<T>(dbias, o);
  out[5] = as_tensor<T>(dbias, o);
  return out;
}

}  // namespace lstmkit
