// The int8 scans (quant.h) as torch ops, torch.ops.lstmkit_cpu.quant_scan_forward. Included at
// the end of ops.cpp, whose helpers (ordered, lstm_options, make_masks, option) it uses, so the
// weights and options cross from Python by name exactly as for the float scans: the float
// tensors under their own names, each int8 matrix under its name (weight_ih, weight_hh,
// weight_hr) with its row scales as "<name>_scale".
#pragma once

#include "quant.h"

namespace lstmkit {
namespace {

const std::vector<std::string> kQuantMatrices = {"weight_ih", "weight_hh", "weight_hr"};

// One layer, one direction, evaluation only. Returns (y, final state tensors...).
std::vector<Tensor> quant_scan_forward(const std::string& family, const Tensor& x,
                                       at::TensorList state, const Named& weights,
                                       const OptTensor& lengths, at::TensorList zoneout,
                                       const Ints& options, const Reals& reals) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && x.is_contiguous() &&
                  x.scalar_type() == at::kFloat,
              "lstmkit_cpu: expected a contiguous (T, B, I) float32 CPU input");
  Named floats;
  QuantMatrix q[3];
  for (const auto& entry : weights) {
    const std::string& name = entry.key();
    const Tensor& t = entry.value();
    const auto at = std::find(kQuantMatrices.begin(), kQuantMatrices.end(), name);
    const bool scale = name.size() > 6 && name.compare(name.size() - 6, 6, "_scale") == 0;
    if (at == kQuantMatrices.end() && !scale) {
      floats.insert(name, t);
      continue;
    }
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == (scale ? at::kFloat : at::kChar),
                "lstmkit_cpu: expected '", name, "' contiguous in ", scale ? "float32" : "int8");
    if (scale) continue;
    const std::string scale_name = name + "_scale";
    TORCH_CHECK(weights.contains(scale_name), "lstmkit_cpu: expected '", scale_name, "'");
    const Tensor& s = weights.at(scale_name);
    TORCH_CHECK(s.dim() == 1 && s.size(0) == t.size(0), "lstmkit_cpu: expected one scale per row of '",
                name, "'");
    q[at - kQuantMatrices.begin()] = {t.data_ptr<int8_t>(), s.data_ptr<float>()};
  }
  TORCH_CHECK(q[0].q && q[1].q, "lstmkit_cpu: expected int8 weight_ih and weight_hh");
  // ordered() wants both matrices; the float scans' structs get none (they are not read).
  const Tensor none = at::empty({0}, x.options());
  floats.insert("weight_ih", none);
  floats.insert("weight_hh", none);
  check(x, state, floats);
  for (const Tensor& s : state) {
    TORCH_CHECK(s.dim() == 2 && s.size(0) == x.size(1), "lstmkit_cpu: expected (B, ...) state "
                "tensors with B = ", x.size(1), ", got shape ", s.sizes());
  }
  // The int8 matrices are read through raw pointers: their shapes against x's and the state's.
  const Tensor &w_ih = weights.at("weight_ih"), &w_hh = weights.at("weight_hh");
  const int64_t width = state[0].size(1);  // P: the recurrent product's input
  TORCH_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2 && w_ih.size(1) == x.size(2) &&
                  w_hh.size(1) == width && w_ih.size(0) == w_hh.size(0),
              "lstmkit_cpu: expected weight_ih (G, ", x.size(2), ") and weight_hh (G, ", width,
              "), got ", w_ih.sizes(), " and ", w_hh.sizes());
  if (q[2].q) {
    const Tensor& w_hr = weights.at("weight_hr");
    TORCH_CHECK(state.size() == 2 && w_hr.dim() == 2 && w_hr.size(0) == width &&
                    w_hr.size(1) == state[1].size(1),
                "lstmkit_cpu: expected weight_hr (", width, ", H), got ", w_hr.sizes());
  }
  auto w = ordered(floats, names_of(family));
  const int64_t G = weights.at("weight_hh").size(0);
  for (int k : {2, 3}) {  // ordered() sized absent biases from the empty weight_hh
    if (!floats.contains(k == 2 ? "bias_ih" : "bias_hh")) w[k] = at::zeros({G}, x.options());
  }
  w[0] = w[1] = OptTensor();
  const QuantWeights qw{q[0], q[1], q[2]};
  const auto masks = make_masks<float>(lengths, OptTensor(), zoneout);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = state[0].size(1);
  const auto flag = [&](const char* name) {
    return options.contains(name) && options.at(name) != 0;
  };
  const Products products{flag("int8_activations"), flag("portable")};
  if (family == "lstm") {
    const LSTMScan<float> cell{T, B, I, state[1].size(1), P, lstm_weights<float>(w),
                               lstm_options(options, reals), masks, false};
    return quant_lstm_forward(cell, qw, x, state[0], state[1], products);
  }
  const auto plain = plain_weights<float>(w);
  if (family == "gru") {
    return quant_gru_forward(T, B, I, P, plain, qw, option(options, "reset_after") != 0, masks, x,
                             state[0], products);
  }
  return quant_rnn_forward(T, B, I, P, plain, qw, option(options, "nonlinearity") == kRelu, masks,
                           x, state[0], products);
}

// As Python calls it: names and lists for the dicts (ops.cpp, forward_op, says why).
std::vector<Tensor> quant_forward_op(const std::string& family, const Tensor& x,
                                     at::TensorList state, const std::string& names,
                                     at::TensorList weights, const OptTensor& lengths,
                                     at::TensorList zoneout, const std::string& int_names,
                                     c10::ArrayRef<int64_t> ints, const std::string& real_names,
                                     c10::ArrayRef<double> reals) {
  return quant_scan_forward(family, x, state, by_name<Tensor>(names, weights), lengths, zoneout,
                            by_name<int64_t>(int_names, ints), by_name<double>(real_names, reals));
}

// One step of a stack of plain LSTM layers with int8 activations: the single-stream path of
// such a model (layers/fused_step.py). Each layer is quant_lstm_step_layer (quant.h), the
// scan's step in the scan's order, so a step computes what the scan does, bit for bit; the
// weight rows' sums come precomputed (packed once, where the scan sums them per call).
// Per layer k: matrices[2k], matrices[2k + 1] = q_ih (4H, I), q_hh (4H, H) int8; bias[2k],
// bias[2k + 1] = b_ih, b_hh (4H) float32; rows[4k .. 4k + 3] = the scales of q_ih and q_hh
// (4H) float32, then their row sums (4H) int32. x (B, I) or (I,); h, c (L, B, H) or (L, H).
// Returns (y, h_out, c_out), y the last layer's h. head_weight and head_bias must be None (the
// caller applies its head, as the general path does), kept so the call matches lstm_step's.
std::tuple<Tensor, Tensor, Tensor> quant_lstm_step(at::TensorList matrices, at::TensorList bias,
                                                   at::TensorList rows, const Tensor& x,
                                                   const Tensor& h, const Tensor& c,
                                                   const OptTensor& head_weight,
                                                   const OptTensor& head_bias, bool portable) {
  const int64_t L = static_cast<int64_t>(matrices.size()) / 2, H = h.size(-1);
  const bool batched = x.dim() == 2;
  const int64_t B = batched ? x.size(0) : 1;
  TORCH_CHECK(!head_weight && !head_bias, "lstmkit_cpu.quant_lstm_step: expected no head");
  TORCH_CHECK(L >= 1 && static_cast<int64_t>(matrices.size()) == 2 * L &&
                  static_cast<int64_t>(bias.size()) == 2 * L &&
                  static_cast<int64_t>(rows.size()) == 4 * L,
              "lstmkit_cpu.quant_lstm_step: expected 2 matrices, 2 biases and 4 row tensors a "
              "layer");
  TORCH_CHECK((x.dim() == 1 || x.dim() == 2) && h.dim() == x.dim() + 1 && h.size(0) == L &&
                  (!batched || h.size(1) == B) && h.sizes() == c.sizes() &&
                  x.scalar_type() == at::kFloat && h.scalar_type() == at::kFloat &&
                  c.scalar_type() == at::kFloat && x.device().is_cpu() && h.device().is_cpu() &&
                  c.device().is_cpu(),
              "lstmkit_cpu.quant_lstm_step: expected float32 CPU x (B, I), h, c (L, B, H), or "
              "unbatched (I,), (L, H)");
  const Tensor xc = x.contiguous(), hc = h.contiguous(), cc = c.contiguous();
  Tensor h_out = at::empty(hc.sizes(), hc.options()), c_out = at::empty(cc.sizes(), cc.options());
  const LSTMOptions plain{kSigmoid, kTanh, kTanh, false, true, true, true, 0.0};
  for (int64_t k = 0; k < L; ++k) {
    const int64_t I = k == 0 ? x.size(-1) : H;
    const Tensor &q_ih = matrices[2 * k], &q_hh = matrices[2 * k + 1];
    TORCH_CHECK(q_ih.scalar_type() == at::kChar && q_hh.scalar_type() == at::kChar &&
                    q_ih.is_contiguous() && q_hh.is_contiguous() &&
                    q_ih.sizes() == at::IntArrayRef({4 * H, I}) &&
                    q_hh.sizes() == at::IntArrayRef({4 * H, H}),
                "lstmkit_cpu.quant_lstm_step: expected contiguous int8 q_ih (4H, I) and q_hh "
                "(4H, H) for layer ", k);
    for (int j = 0; j < 4; ++j) {
      const Tensor& r = rows[4 * k + j];
      TORCH_CHECK(r.is_contiguous() && r.numel() == 4 * H &&
                      r.scalar_type() == (j < 2 ? at::kFloat : at::kInt),
                  "lstmkit_cpu.quant_lstm_step: expected (4H) float32 scales and int32 sums "
                  "for layer ", k);
    }
    for (int j = 0; j < 2; ++j) {
      const Tensor& b = bias[2 * k + j];
      TORCH_CHECK(b.is_contiguous() && b.numel() == 4 * H && b.scalar_type() == at::kFloat,
                  "lstmkit_cpu.quant_lstm_step: expected float32 biases (4H) for layer ", k);
    }
    std::vector<OptTensor> w(kLSTMNames.size());
    w[2] = bias[2 * k], w[3] = bias[2 * k + 1];
    const LSTMScan<float> cell{1, B, I, H, H, lstm_weights<float>(w), plain, Masks<float>{},
                               false};
    auto quant = [&](const Tensor& q, int j) {
      return QuantMatrix{q.data_ptr<int8_t>(), rows[4 * k + j].data_ptr<float>(),
                         rows[4 * k + 2 + j].data_ptr<int32_t>()};
    };
    const float* in = k == 0 ? xc.data_ptr<float>() : h_out.data_ptr<float>() + (k - 1) * B * H;
    const int64_t at = k * B * H;
    quant_lstm_step_layer(cell, {quant(q_ih, 0), quant(q_hh, 1), QuantMatrix{}}, in,
                          hc.data_ptr<float>() + at, cc.data_ptr<float>() + at,
                          h_out.data_ptr<float>() + at, c_out.data_ptr<float>() + at, portable);
  }
  Tensor y = h_out[L - 1].clone();
  return std::make_tuple(y, h_out, c_out);
}

}  // namespace
}  // namespace lstmkit

TORCH_LIBRARY_FRAGMENT(lstmkit_cpu, m) {
  m.def("quant_lstm_step(Tensor[] matrices, Tensor[] bias, Tensor[] rows, Tensor x, Tensor h, "
        "Tensor c, Tensor? head_weight, Tensor? head_bias, bool portable) -> "
        "(Tensor, Tensor, Tensor)",
        &lstmkit::quant_lstm_step);
  m.def("quant_scan_forward", &lstmkit::quant_forward_op);
  m.def("int8_dot_isa", []() { return std::string(lstmkit::int8_dot_isa()); });
}
