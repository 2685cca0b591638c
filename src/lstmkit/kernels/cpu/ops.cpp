// The extension's one translation unit: the cell kernels and their registration as torch ops
// (torch.ops.lstmkit_cpu.*). One unit with the lightest ATen headers keeps the first-use build
// to seconds; lstmkit/kernels/cpu/_build.py compiles it.
//
// Everything crosses from Python by name: the weights as a dict named as lstmkit's parameters
// (weight_ih, bias_hh, weight_peephole, ...; absent tensors absent), the options as dicts named
// as the config's fields (activations as generated.h's Act codes), so inserting a field or a
// tensor on the Python side cannot shift the meaning of another.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <string>

#include "gru.h"
#include "lstm_backward.h"
#include "rnn.h"
#include "step.h"

namespace lstmkit {
namespace {

using Named = c10::Dict<std::string, Tensor>;
using Ints = c10::Dict<std::string, int64_t>;
using Reals = c10::Dict<std::string, double>;

// The names of each family's tensors in the order its kernel's weight struct and backward
// outputs use (LSTMWeights in lstm.h, PlainWeights in gru.h).
const std::vector<std::string> kLSTMNames = {
    "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_peephole",
    "weight_ln_ih", "weight_ln_hh", "weight_ln_c", "bias_ln_c"};
const std::vector<std::string> kPlainNames = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};

// The weights in a kernel's order, zeros standing in for absent biases so the kernels' loops
// need no branch for them.
std::vector<OptTensor> ordered(const Named& weights, const std::vector<std::string>& names) {
  for (const auto& entry : weights) {
    TORCH_CHECK(std::find(names.begin(), names.end(), entry.key()) != names.end(),
                "lstmkit_cpu: unexpected weight '", entry.key(), "'");
  }
  std::vector<OptTensor> v;
  for (const auto& name : names) v.push_back(weights.contains(name) ? OptTensor(weights.at(name))
                                                                    : OptTensor());
  TORCH_CHECK(v[0] && v[1], "lstmkit_cpu: expected weight_ih and weight_hh");
  for (int k : {2, 3}) {
    if (!v[k]) v[k] = at::zeros({v[1]->size(0)}, v[1]->options());
  }
  return v;
}

template <typename T>
LSTMWeights<T> lstm_weights(const std::vector<OptTensor>& w) {
  const T* p[10];
  for (size_t k = 0; k < 10; ++k) p[k] = ptr_or_null<T>(w[k]);
  return {p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]};
}

template <typename T>
PlainWeights<T> plain_weights(const std::vector<OptTensor>& w) {
  return {ptr_or_null<T>(w[0]), ptr_or_null<T>(w[1]), ptr_or_null<T>(w[2]), ptr_or_null<T>(w[3])};
}

int64_t option(const Ints& options, const char* name) {
  TORCH_CHECK(options.contains(name), "lstmkit_cpu: expected option '", name, "'");
  return options.at(name);
}

LSTMOptions lstm_options(const Ints& o, const Reals& reals) {
  return {option(o, "gate_activation"), option(o, "cell_activation"),
          option(o, "output_activation"), option(o, "coupled") != 0,
          option(o, "input_gate") != 0, option(o, "forget_gate") != 0,
          option(o, "output_gate") != 0, reals.contains("cell_clip") ? reals.at("cell_clip") : 0.0};
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

void check(const Tensor& x, at::TensorList state, const Named& weights) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && x.is_contiguous(),
              "lstmkit_cpu: expected a contiguous (T, B, I) CPU input");
  for (const Tensor& s : state) TORCH_CHECK(s.is_contiguous() && s.scalar_type() == x.scalar_type());
  for (const auto& entry : weights) {
    const Tensor& t = entry.value();
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == x.scalar_type(),
                "lstmkit_cpu: expected contiguous weights of the input's dtype");
  }
}

// 16-bit scans run the float kernels with this internal option set (precision.h): what the
// forward products' left operands round to.
constexpr const char* kOperand = "operand";

int64_t operand_option(const Ints& options) {
  return options.contains(kOperand) ? options.at(kOperand) : kExactOperand;
}

const std::vector<std::string>& names_of(const std::string& family) {
  if (family == "lstm") return kLSTMNames;
  TORCH_CHECK(family == "gru" || family == "rnn", "lstmkit_cpu: no kernel for family '", family,
              "'");
  return kPlainNames;
}

// One layer, one direction. Returns (y, final state tensors..., saved tensors... if save).
std::vector<Tensor> scan_forward(const std::string& family, const Tensor& x, at::TensorList state,
                                 const Named& weights, const OptTensor& lengths,
                                 const OptTensor& hidden_mask, at::TensorList zoneout,
                                 const Ints& options, const Reals& reals, bool save) {
  check(x, state, weights);
  const auto w = ordered(weights, names_of(family));
  std::vector<Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstmkit_cpu_forward", [&] {
    auto masks = make_masks<scalar_t>(lengths, hidden_mask, zoneout);
    masks.operand = operand_option(options);
    const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = state[0].size(1);
    if (family == "lstm") {
      LSTMScan<scalar_t> scan{T, B, I, state[1].size(1), P, lstm_weights<scalar_t>(w),
                              lstm_options(options, reals), masks, save};
      out = scan.forward(x, state[0], state[1]);
    } else if (family == "gru") {
      GRUScan<scalar_t> scan{T, B, I, P, plain_weights<scalar_t>(w),
                             option(options, "reset_after") != 0, masks, save};
      out = scan.forward(x, state[0]);
    } else {
      RNNScan<scalar_t> scan{T, B, I, P, plain_weights<scalar_t>(w),
                             option(options, "nonlinearity") == kRelu, masks, save};
      out = scan.forward(x, state[0]);
    }
  });
  return out;
}

// The gradients of (x, state tensors..., then the weights named in `wanted`, in that order)
// given those of (y, final state...).
std::vector<Tensor> scan_backward(const std::string& family, const Tensor& x,
                                  at::TensorList grads, at::TensorList saved,
                                  const Named& weights, const OptTensor& lengths,
                                  const OptTensor& hidden_mask, at::TensorList zoneout,
                                  const Ints& options, const Reals& reals,
                                  const std::vector<std::string>& wanted, bool need_dx) {
  check(x, grads, weights);
  const auto& names = names_of(family);
  const auto w = ordered(weights, names);
  const std::vector<Tensor> kept(saved.begin(), saved.end());
  std::vector<Tensor> out;
  size_t states = 1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstmkit_cpu_backward", [&] {
    auto masks = make_masks<scalar_t>(lengths, hidden_mask, zoneout);
    masks.operand = operand_option(options);
    const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = grads[1].size(1);
    if (family == "lstm") {
      states = 2;
      LSTMScan<scalar_t> scan{T, B, I, grads[2].size(1), P, lstm_weights<scalar_t>(w),
                              lstm_options(options, reals), masks, true};
      out = scan.backward(x, grads[0], grads[1], grads[2], kept, need_dx);
    } else if (family == "gru") {
      GRUScan<scalar_t> scan{T, B, I, P, plain_weights<scalar_t>(w),
                             option(options, "reset_after") != 0, masks, true};
      out = scan.backward(x, grads[0], grads[1], kept, need_dx);
    } else {
      RNNScan<scalar_t> scan{T, B, I, P, plain_weights<scalar_t>(w),
                             option(options, "nonlinearity") == kRelu, masks, true};
      out = scan.backward(x, grads[0], grads[1], kept, need_dx);
    }
  });
  std::vector<Tensor> result(out.begin(), out.begin() + 1 + states);
  for (const auto& name : wanted) {
    const auto at = std::find(names.begin(), names.end(), name);
    TORCH_CHECK(at != names.end(), "lstmkit_cpu: no gradient for weight '", name, "'");
    result.push_back(out[1 + states + (at - names.begin())]);
  }
  return result;
}


// One step of a stack of L plain LSTM layers for a few rows (step.h): float32 x (B, I) or
// (I,); h, c (L, B, H) or (L, H); per layer packed float32, float16 or int8 weights (NP, K, 64)
// and a float32 bias (4H), as lstmkit/kernels/cpu/step.py packs them; `scales` holds, per
// layer, the row scales (2, NP * 64) of int8 weights and an empty tensor for float ones.
// Layer k > 0 reads h_out[k-1].
void step_stack(at::TensorList packed, at::TensorList bias, at::TensorList scales,
                const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& h_out,
                const Tensor& c_out, bool portable) {
  const int64_t L = static_cast<int64_t>(packed.size()), H = h.size(-1);
  const int64_t B = x.dim() == 2 ? x.size(0) : 1;
  TORCH_CHECK(L >= 1 && static_cast<int64_t>(bias.size()) == L &&
                  static_cast<int64_t>(scales.size()) == L,
              "lstmkit_cpu.lstm_step: expected one bias and one scale tensor per packed layer");
  for (const Tensor* t : {&x, &h, &c, &h_out, &c_out})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device().is_cpu(),
                "lstmkit_cpu.lstm_step: expected contiguous float32 CPU tensors");
  TORCH_CHECK((x.dim() == 1 || x.dim() == 2) && h.dim() == x.dim() + 1 && h.size(0) == L &&
                  (x.dim() == 1 || h.size(1) == B) && h.sizes() == c.sizes() &&
                  h.sizes() == h_out.sizes() && h.sizes() == c_out.sizes(),
              "lstmkit_cpu.lstm_step: expected x (B, I), h, c (L, B, H), or unbatched (I,), "
              "(L, H)");
  for (int64_t k = 0; k < L; ++k) {
    const int64_t I = k == 0 ? x.size(-1) : H;
    const Tensor& w = packed[k];
    TORCH_CHECK(w.dim() == 3 && w.size(0) == (4 * H + kStepPanel - 1) / kStepPanel &&
                    w.size(1) == I + H && w.size(2) == kStepPanel && w.is_contiguous() &&
                    (w.scalar_type() == at::kFloat || w.scalar_type() == at::kHalf ||
                     w.scalar_type() == at::kChar),
                "lstmkit_cpu.lstm_step: expected packed float32, float16 or int8 weights "
                "(NP, I + H, 64) for layer ", k);
    const bool int8 = w.scalar_type() == at::kChar;
    const Tensor& s = scales[k];
    TORCH_CHECK(int8 ? (s.scalar_type() == at::kFloat && s.is_contiguous() && s.dim() == 2 &&
                        s.size(0) == 2 && s.size(1) == w.size(0) * kStepPanel)
                     : s.numel() == 0,
                "lstmkit_cpu.lstm_step: expected float32 row scales (2, NP * 64) with int8 "
                "weights and an empty tensor with float ones, for layer ", k);
    TORCH_CHECK(bias[k].scalar_type() == at::kFloat && bias[k].is_contiguous() &&
                    bias[k].numel() == 4 * H,
                "lstmkit_cpu.lstm_step: expected a float32 bias (4H) for layer ", k);
    const float* in = k == 0 ? x.data_ptr<float>() : h_out.data_ptr<float>() + (k - 1) * B * H;
    const int64_t at = k * B * H;
    const float *hp = h.data_ptr<float>() + at, *cp = c.data_ptr<float>() + at;
    float *ho = h_out.data_ptr<float>() + at, *co = c_out.data_ptr<float>() + at;
    const float* b = bias[k].data_ptr<float>();
    if (int8) {
      const float* sp = s.data_ptr<float>();
      const StepScales rows{sp, sp + s.size(1), I};
      lstm_step_rows(w.data_ptr<int8_t>(), rows, b, B, I, H, in, hp, cp, ho, co, portable);
    } else if (w.scalar_type() == at::kHalf) {
      lstm_step_rows(reinterpret_cast<const uint16_t*>(w.data_ptr()), StepScales{}, b, B, I, H,
                     in, hp, cp, ho, co, portable);
    } else {
      lstm_step_rows(w.data_ptr<float>(), StepScales{}, b, B, I, H, in, hp, cp, ho, co,
                     portable);
    }
  }
}

// The layers' step with fresh outputs: (y, h_out, c_out), y the last layer's h, (B, H) or (H,),
// or with a head (weight (O, H), bias (O)) head(h) = h W^T + b, (B, O) or (O,).
std::tuple<Tensor, Tensor, Tensor> lstm_step(at::TensorList packed, at::TensorList bias,
                                             at::TensorList scales, const Tensor& x,
                                             const Tensor& h, const Tensor& c,
                                             const OptTensor& head_weight,
                                             const OptTensor& head_bias, bool portable) {
  const Tensor xc = x.contiguous(), hc = h.contiguous(), cc = c.contiguous();
  Tensor h_out = at::empty(hc.sizes(), hc.options()), c_out = at::empty(cc.sizes(), cc.options());
  step_stack(packed, bias, scales, xc, hc, cc, h_out, c_out, portable);
  const int64_t H = hc.size(-1), rows = hc.numel() / hc.size(0) / H;
  const float* top = h_out.data_ptr<float>() + (h_out.numel() - rows * H);
  if (!head_weight) {
    Tensor y = at::empty(hc.sizes().slice(1), hc.options());
    std::memcpy(y.data_ptr<float>(), top, rows * H * sizeof(float));
    return std::make_tuple(y, h_out, c_out);
  }
  const Tensor w = head_weight->contiguous();
  TORCH_CHECK(w.dim() == 2 && w.size(1) == H && w.scalar_type() == at::kFloat &&
                  w.device().is_cpu() &&
                  (!head_bias || (head_bias->numel() == w.size(0) &&
                                  head_bias->scalar_type() == at::kFloat &&
                                  head_bias->device().is_cpu())),
              "lstmkit_cpu.lstm_step: expected a float32 CPU head weight (O, H) and bias (O)");
  const int64_t O = w.size(0);
  std::vector<int64_t> shape(hc.sizes().begin() + 1, hc.sizes().end());
  shape.back() = O;
  Tensor y = at::empty(shape, hc.options());
  const Tensor b = head_bias ? head_bias->contiguous() : Tensor();
  const float *wp = w.data_ptr<float>(), *bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < O; ++o) {
      const float *wo = wp + o * H, *hr = top + r * H;
      float acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t j = 0; j < H; ++j) acc += wo[j] * hr[j];
      yp[r * O + o] = acc + (bp ? bp[o] : 0.0f);
    }
  }
  return std::make_tuple(y, h_out, c_out);
}

// The same in place: h_out and c_out (which may be h and c) are written.
void lstm_step_(at::TensorList packed, at::TensorList bias, at::TensorList scales,
                const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& h_out,
                const Tensor& c_out, bool portable) {
  step_stack(packed, bias, scales, x, h, c, h_out, c_out, portable);
}

std::string lstm_step_isa() { return step_isa(); }

// --- 16-bit scans (precision.h): the float kernels on exact float copies ---------------------

bool is_16bit(at::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

std::vector<Tensor> floats(at::TensorList tensors) {
  std::vector<Tensor> out;
  for (const Tensor& t : tensors) out.push_back(t.to(at::kFloat));
  return out;
}

Named floats(const Named& weights) {
  Named out;
  for (const auto& entry : weights) out.insert(entry.key(), entry.value().to(at::kFloat));
  return out;
}

Ints with_operand(const Ints& options, at::ScalarType dtype) {
  Ints out = options.copy();
  out.insert_or_assign(kOperand, dtype == at::kBFloat16 ? kBFloat16Operand : kHalfOperand);
  return out;
}

// scan_forward in any dtype: y and the final state come back in x's dtype, the saved tensors
// in float (the backward pass reads them as they were computed).
std::vector<Tensor> forward_any(const std::string& family, const Tensor& x, at::TensorList state,
                                const Named& weights, const OptTensor& lengths,
                                const OptTensor& hidden_mask, at::TensorList zoneout,
                                const Ints& options, const Reals& reals, bool save) {
  if (!is_16bit(x.scalar_type())) {
    return scan_forward(family, x, state, weights, lengths, hidden_mask, zoneout, options, reals,
                        save);
  }
  check(x, state, weights);
  const OptTensor hidden = hidden_mask ? OptTensor(hidden_mask->to(at::kFloat)) : OptTensor();
  auto out = scan_forward(family, x.to(at::kFloat), floats(state), floats(weights), lengths,
                          hidden, floats(zoneout), with_operand(options, x.scalar_type()), reals,
                          save);
  for (size_t k = 0; k <= state.size(); ++k) out[k] = out[k].to(x.scalar_type());
  return out;
}

// scan_backward in any dtype: every gradient in the dtype of the tensor it belongs to (the
// weights and the state share x's), computed in float and rounded once.
std::vector<Tensor> backward_any(const std::string& family, const Tensor& x,
                                 at::TensorList grads, at::TensorList saved,
                                 const Named& weights, const OptTensor& lengths,
                                 const OptTensor& hidden_mask, at::TensorList zoneout,
                                 const Ints& options, const Reals& reals,
                                 const std::vector<std::string>& wanted, bool need_dx) {
  if (!is_16bit(x.scalar_type())) {
    return scan_backward(family, x, grads, saved, weights, lengths, hidden_mask, zoneout,
                         options, reals, wanted, need_dx);
  }
  check(x, grads, weights);
  const OptTensor hidden = hidden_mask ? OptTensor(hidden_mask->to(at::kFloat)) : OptTensor();
  auto out = scan_backward(family, x.to(at::kFloat), floats(grads), saved, floats(weights),
                           lengths, hidden, floats(zoneout), with_operand(options, x.scalar_type()),
                           reals, wanted, need_dx);
  for (Tensor& t : out) {
    if (t.defined()) t = t.to(x.scalar_type());
  }
  return out;
}

// The ops as Python calls them: each dict as its names (comma-joined) and a list of values.
// A dict argument costs a C++ exception per call in torch's argument parsing (it tries a
// ScriptDict first), several microseconds each, against a few microseconds for the kernel of a
// small layer.
std::vector<std::string> split_names(const std::string& names) {
  std::vector<std::string> out;
  size_t start = 0;
  while (!names.empty()) {
    const size_t comma = names.find(',', start);
    out.push_back(names.substr(start, comma == std::string::npos ? std::string::npos
                                                                 : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

template <typename T, typename Values>
c10::Dict<std::string, T> by_name(const std::string& names, const Values& values) {
  const auto keys = split_names(names);
  TORCH_CHECK(keys.size() == static_cast<size_t>(values.size()), "lstmkit_cpu: expected ",
              keys.size(), " values for the names '", names, "', got ", values.size());
  c10::Dict<std::string, T> out;
  for (size_t k = 0; k < keys.size(); ++k) out.insert(keys[k], values[k]);
  return out;
}

std::vector<Tensor> forward_op(const std::string& family, const Tensor& x, at::TensorList state,
                               const std::string& names, at::TensorList weights,
                               const OptTensor& lengths, const OptTensor& hidden_mask,
                               at::TensorList zoneout, const std::string& int_names,
                               c10::ArrayRef<int64_t> ints, const std::string& real_names,
                               c10::ArrayRef<double> reals, bool save) {
  return forward_any(family, x, state, by_name<Tensor>(names, weights), lengths, hidden_mask,
                     zoneout, by_name<int64_t>(int_names, ints),
                     by_name<double>(real_names, reals), save);
}

// The gradients come back for the weights in the order of `names`.
std::vector<Tensor> backward_op(const std::string& family, const Tensor& x,
                                at::TensorList grads, at::TensorList saved,
                                const std::string& names, at::TensorList weights,
                                const OptTensor& lengths, const OptTensor& hidden_mask,
                                at::TensorList zoneout, const std::string& int_names,
                                c10::ArrayRef<int64_t> ints, const std::string& real_names,
                                c10::ArrayRef<double> reals, bool need_dx) {
  return backward_any(family, x, grads, saved, by_name<Tensor>(names, weights), lengths,
                      hidden_mask, zoneout, by_name<int64_t>(int_names, ints),
                      by_name<double>(real_names, reals), split_names(names), need_dx);
}

// Whether the bfloat16 products take the AVX-512 BF16 path here; `use_bf16_dot(false)` makes
// them take the fallback (returns the previous setting), so the two can be compared.
bool bf16_dot_active() { return bf16_dot(); }

bool use_bf16_dot(bool wanted) { return bf16_dot_wanted().exchange(wanted); }

}  // namespace
}  // namespace lstmkit

TORCH_LIBRARY(lstmkit_cpu, m) {
  m.def("scan_forward", &lstmkit::forward_op);
  m.def("scan_backward", &lstmkit::backward_op);
  m.def("bf16_dot_active", &lstmkit::bf16_dot_active);
  m.def("use_bf16_dot", &lstmkit::use_bf16_dot);
  m.def("lstm_step(Tensor[] packed, Tensor[] bias, Tensor[] scales, Tensor x, Tensor h, "
        "Tensor c, Tensor? head_weight, Tensor? head_bias, bool portable) -> "
        "(Tensor, Tensor, Tensor)",
        &lstmkit::lstm_step);
  m.def("lstm_step_(Tensor[] packed, Tensor[] bias, Tensor[] scales, Tensor x, Tensor h, "
        "Tensor c, Tensor(a!) h_out, Tensor(b!) c_out, bool portable) -> ()",
        &lstmkit::lstm_step_);
  m.def("lstm_step_isa", &lstmkit::lstm_step_isa);
}

// Int8 inference (dynamic quantisation's weights): quant_ops.h registers its op.
#include "quant_ops.h"
