// The extension's one translation unit: the cell kernels and their registration as torch ops
// (torch.ops.lstmkit_cpu.*). One unit with the lightest ATen headers keeps the first-use build
// to seconds; lstmkit/kernels/cpu/_build.py compiles it.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "gru.h"
#include "lstm_backward.h"
#include "rnn.h"

namespace lstmkit {
namespace {

enum Mode : int64_t { kLSTM, kGRU, kRNN };

// The weights as a vector, zeros standing in for absent biases (entries 2, 3: bias_ih,
// bias_hh) so the kernels' loops need no branch for them.
std::vector<OptTensor> as_vector(const c10::List<OptTensor>& list) {
  std::vector<OptTensor> v;
  for (const auto& t : list) v.push_back(t);
  for (int k : {2, 3}) {
    if (!v[k]) v[k] = at::zeros({v[1]->size(0)}, v[1]->options());
  }
  return v;
}

template <typename T>
Masks<T> make_masks(const OptTensor& lengths, const OptTensor& hidden, at::TensorList zoneout) {
  Masks<T> m;
  m.lengths = lengths ? lengths->data_ptr<int64_t>() : nullptr;
  m.hidden = ptr_or_null<T>(hidden);
  for (const Tensor& z : zoneout) {  // evaluation's constant weight comes as one row
    m.zoneout.push_back(z.data_ptr<T>());
    m.per_step.push_back(z.dim() == 3);
  }
  return m;
}

// options: the three activations' codes, then coupled, input_gate, forget_gate, output_gate.
LSTMOptions lstm_options(at::IntArrayRef options, double clip) {
  return {options[0], options[1], options[2], options[3] != 0, options[4] != 0,
          options[5] != 0, options[6] != 0, clip};
}

void check(const Tensor& x, at::TensorList state, const c10::List<OptTensor>& weights) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && x.is_contiguous(),
              "lstmkit_cpu: expected a contiguous (T, B, I) CPU input");
  for (const Tensor& s : state) TORCH_CHECK(s.is_contiguous() && s.scalar_type() == x.scalar_type());
  for (const auto& w : weights) {
    const OptTensor t = w;
    TORCH_CHECK(!t || (t->is_contiguous() && t->scalar_type() == x.scalar_type()),
                "lstmkit_cpu: expected contiguous weights of the input's dtype");
  }
}

// One layer, one direction. Returns (y, final state tensors..., saved tensors... if save).
std::vector<Tensor> scan_forward(int64_t mode, const Tensor& x, at::TensorList state,
                                 const c10::List<OptTensor>& weights, const OptTensor& lengths,
                                 const OptTensor& hidden_mask, at::TensorList zoneout,
                                 at::IntArrayRef options, double clip, bool save) {
  check(x, state, weights);
  const auto w = as_vector(weights);
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstmkit_cpu_forward", [&] {
    auto masks = make_masks<scalar_t>(lengths, hidden_mask, zoneout);
    const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = state[0].size(1);
    if (mode == kLSTM) {
      LSTMScan<scalar_t> scan{T, B, I, state[1].size(1), P, lstm_weights<scalar_t>(w),
                              lstm_options(options, clip), masks, save};
      out = scan.forward(x, state[0], state[1]);
    } else if (mode == kGRU) {
      GRUScan<scalar_t> scan{T, B, I, P, gru_weights<scalar_t>(w), options[0] != 0, masks, save};
      out = scan.forward(x, state[0]);
    } else {
      RNNScan<scalar_t> scan{T, B, I, P, gru_weights<scalar_t>(w), options[0] != 0, masks, save};
      out = scan.forward(x, state[0]);
    }
  });
  return out;
}

// The gradients of (x, state tensors..., weights...) given those of (y, final state...).
std::vector<Tensor> scan_backward(int64_t mode, const Tensor& x, at::TensorList grads,
                                  at::TensorList saved, const c10::List<OptTensor>& weights,
                                  const OptTensor& lengths, const OptTensor& hidden_mask,
                                  at::TensorList zoneout, at::IntArrayRef options, double clip,
                                  bool need_dx) {
  check(x, grads, weights);
  const auto w = as_vector(weights);
  const std::vector<Tensor> kept(saved.begin(), saved.end());
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstmkit_cpu_backward", [&] {
    auto masks = make_masks<scalar_t>(lengths, hidden_mask, zoneout);
    const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = grads[1].size(1);
    if (mode == kLSTM) {
      LSTMScan<scalar_t> scan{T, B, I, grads[2].size(1), P, lstm_weights<scalar_t>(w),
                              lstm_options(options, clip), masks, true};
      out = scan.backward(x, grads[0], grads[1], grads[2], kept, need_dx);
    } else if (mode == kGRU) {
      GRUScan<scalar_t> scan{T, B, I, P, gru_weights<scalar_t>(w), options[0] != 0, masks, true};
      out = scan.backward(x, grads[0], grads[1], kept, need_dx);
    } else {
      RNNScan<scalar_t> scan{T, B, I, P, gru_weights<scalar_t>(w), options[0] != 0, masks, true};
      out = scan.backward(x, grads[0], grads[1], kept, need_dx);
    }
  });
  return out;
}

}  // namespace
}  // namespace lstmkit

TORCH_LIBRARY(lstmkit_cpu, m) {
  m.def("scan_forward", &lstmkit::scan_forward);
  m.def("scan_backward", &lstmkit::scan_backward);
}
