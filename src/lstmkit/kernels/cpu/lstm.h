// The fused LSTM: one layer, one direction, forward and backward over the whole sequence.
// It computes the function of lstmkit/cells/lstm.py (equations there) step for step.
//
// Shapes (legend in common.h): x (T, B, I); state h (B, P), c (B, H); weight_ih (4H, I),
// weight_hh (4H, P), weight_hr (P, H), peephole (3H), layer-norm gains (4H) and (H).
// Saved for the backward pass (training only):
//   Gates (1, T, B, 4H): A, the gate pre-activations, peephole terms included, before the clip;
//   Hs (T+1, B, P), Cs (T+1, B, H) the carried states, Cn (T, B, H) each step's new c;
//   with layer_norm: Rih, Rhh (T, B) the 1/std of the normalised input and recurrent terms
//   Xih, Xhh (T, B, 4H), and Sc (T, B, 2) the mean and 1/std of each c_t. Xih and Xhh follow
//   A in Gates (3, T, B, 4H) while the three take at most kJointBytes, else they come last.
#pragma once

#include <tuple>

#include "common.h"

namespace lstmkit {

struct LSTMOptions {
  int64_t gate_act, cell_act, out_act;  // generated.h's Act codes
  bool coupled;
  bool input_gate, forget_gate, output_gate;  // false: the gate is fixed to 1 (an ablation)
  double clip;  // <= 0: no clip
};

// The most bytes the saved A, Xih and Xhh take as one block (see forward); _saved_like in
// kernels/cpu/__init__.py shapes the fake kernel's outputs by the same bound.
constexpr int64_t kJointBytes = int64_t(32) << 20;

template <typename T>
struct LSTMWeights {
  const T *w_ih, *w_hh, *b_ih, *b_hh, *w_hr, *peephole, *ln_ih, *ln_hh, *ln_c, *bln_c;
};

// y = act(clamp(a, -clip, clip)) over n values; clip <= 0 means no clamp. A gate the cell does
// not have is 1.
template <typename T>
void gate(int64_t act, double clip, const T* a, T* y, int64_t n, bool present = true) {
  if (!present) return std::fill(y, y + n, T(1));
  if (clip <= 0) return activate(act, a, y, n);
  const T k = static_cast<T>(clip);
  for (int64_t j = 0; j < n; ++j) y[j] = std::min(std::max(a[j], -k), k);
  activate(act, y, y, n);
}

// The same, and d = dy/da: act' at the clamped input, zero where the clamp cut (torch's clamp
// passes gradient at its bounds). d first holds the clamped input, read before overwritten.
template <typename T>
void gate_grad(int64_t act, double clip, const T* a, T* y, T* d, int64_t n, bool present = true) {
  if (!present) {
    std::fill(y, y + n, T(1));
    return std::fill(d, d + n, T(0));
  }
  const T* x = a;
  const T k = static_cast<T>(clip);
  if (clip > 0) {
    for (int64_t j = 0; j < n; ++j) d[j] = std::min(std::max(a[j], -k), k);
    x = d;
  }
  activate(act, x, y, n);
  derivative(act, x, y, d, n);
  if (clip > 0) for (int64_t j = 0; j < n; ++j) d[j] = (a[j] >= -k && a[j] <= k) ? d[j] : T(0);
}

template <typename T>
struct LSTMScan {
  int64_t steps, batch, input, hidden, output;
  LSTMWeights<T> w;
  LSTMOptions opt;
  Masks<T> masks;
  bool save;

  int64_t gates() const { return 4 * hidden; }
  int64_t slot(int64_t t) const { return save ? t : t % 2; }  // state rows kept: all or two

  // The input term of `rows` rows (a chunk of steps) in one product: A = x W_ih^T + b_ih + b_hh,
  // or with layer norm A = γ_ih LN(x W_ih^T) + b_ih + b_hh, keeping LN's output in Xih (which
  // may be A itself) and 1/std in Rih.
  void input_term(const RightOperand<T>& w_ih, int64_t rows, const T* x, T* A, T* Xih,
                  T* Rih) const {
    const int64_t G = gates();
    const bool ln = w.ln_ih != nullptr;
    if (!ln) {
      at::parallel_for(0, rows, row_grain(G), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t j = 0; j < G; ++j) A[r * G + j] = w.b_ih[j] + w.b_hh[j];
      });
    }
    w_ih.times(rows, x, input, ln ? 0 : 1, ln ? Xih : A, G);
    if (!ln) return;
    at::parallel_for(0, rows, row_grain(2 * G), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* xr = Xih + r * G;
        Rih[r] = normalize_row(xr, G);
        for (int64_t j = 0; j < G; ++j)
          A[r * G + j] = w.ln_ih[j] * xr[j] + w.b_ih[j] + w.b_hh[j];
      }
    });
  }

  // The default activations (sigmoid gates, tanh cell and output) without clip or coupling,
  // with or without peepholes and layer norm, get fused rows: one pass for the gates where the
  // general path makes seven and calls activate() four times (10-50% of a step at H <= 256).
  bool fused() const {
    return opt.gate_act == kSigmoid && opt.cell_act == kTanh && opt.out_act == kTanh &&
           opt.clip <= 0 && !opt.coupled && opt.input_gate && opt.forget_gate && opt.output_gate;
  }

  // n consecutive rows of a step (each array from the first row's): a (4H) gets the normalised
  // recurrent term (layer norm: from gh, kept in xhh with 1/std in rhh) and the peepholes;
  // c_new (H) and o ⊙ ψ(c) (hraw, H) come out, with the mean and 1/std of c in sc (2). The
  // rows' layer-norm statistics are taken together (rows_moments). work: n * (H + 1) values.
  template <bool Peephole, bool LayerNorm>
  void fused_rows(int64_t n, T* a, const T* gh, T* xhh, T* rhh, const T* c_prev, T* c_new,
                  T* sc, T* hraw, T* work) const {
    const int64_t H = hidden, G = gates();
    const T* p = w.peephole;
    T* mean_h = work + n * H;
    if constexpr (LayerNorm) rows_moments(gh, n, G, G, mean_h, rhh, 1);
    for (int64_t b = 0; b < n; ++b) {
      T *ab = a + b * G, *cn = c_new + b * H;
      const T* cp = c_prev + b * H;
      if constexpr (LayerNorm) {
        const T *g = gh + b * G, mean = mean_h[b], rstd = rhh[b];
        T* x = xhh + b * G;
        LSTMKIT_ELEMENTWISE
        for (int64_t j = 0; j < G; ++j) {
          x[j] = (g[j] - mean) * rstd;
          ab[j] += w.ln_hh[j] * x[j];
        }
      }
      LSTMKIT_ELEMENTWISE
      for (int64_t j = 0; j < H; ++j) {
        if constexpr (Peephole) {
          ab[j] += p[j] * cp[j];
          ab[H + j] += p[H + j] * cp[j];
        }
        const T c = vsigmoid(ab[H + j]) * cp[j] + vsigmoid(ab[j]) * vtanh(ab[2 * H + j]);
        cn[j] = c;
        if constexpr (Peephole) ab[3 * H + j] += p[2 * H + j] * c;
        const T o = vsigmoid(ab[3 * H + j]);
        if constexpr (LayerNorm) work[b * H + j] = o; else hraw[b * H + j] = o * vtanh(c);
      }
    }
    if constexpr (LayerNorm) {  // h = o ⊙ tanh(LN(c)): the rows' statistics first
      rows_moments(c_new, n, H, H, sc, sc + 1, 2);
      for (int64_t b = 0; b < n; ++b) {
        const T *cn = c_new + b * H, *o = work + b * H, mean = sc[2 * b], rstd = sc[2 * b + 1];
        T* hr = hraw + b * H;
        LSTMKIT_ELEMENTWISE
        for (int64_t j = 0; j < H; ++j) {
          hr[j] = o[j] * vtanh(w.ln_c[j] * (cn[j] - mean) * rstd + w.bln_c[j]);
        }
      }
    }
  }

  // The gradient of fused_rows (cell_row_backward has the general one); lstm_backward.h.
  template <bool Peephole, bool LayerNorm>
  void fused_rows_backward(int64_t n, const T* a, const T* c_prev, const T* c_new, const T* sc,
                           const T* xhh, const T* rhh, const T* dhraw, const T* dcn, T* dc,
                           T* da, T* dgh, T* hraw, T* chat, T* dchat, T* work) const;

  // Dispatch to the fused rows for this cell's peephole and layer-norm flags.
  template <typename... Args>
  void fused_step_rows(Args... args) const {
    if (w.peephole && w.ln_ih) return fused_rows<true, true>(args...);
    if (w.peephole) return fused_rows<true, false>(args...);
    if (w.ln_ih) return fused_rows<false, true>(args...);
    fused_rows<false, false>(args...);
  }

  template <typename... Args>
  void fused_step_rows_backward(Args... args) const {
    if (w.peephole && w.ln_ih) return fused_rows_backward<true, true>(args...);
    if (w.peephole) return fused_rows_backward<true, false>(args...);
    if (w.ln_ih) return fused_rows_backward<false, true>(args...);
    fused_rows_backward<false, false>(args...);
  }

  // Gate math of one row: a (4H) gets the recurrent layer-norm term and the peepholes; writes
  // the new c (H) and o ⊙ ψ(c) (H) into hraw. work holds 5H values.
  void cell_row(T* a, const T* gh, T* xhh, T* rhh, const T* c_prev, T* c_new, T* sc, T* hraw,
                T* work) const {
    const int64_t H = hidden, G = gates();
    if (w.ln_hh) {
      std::copy(gh, gh + G, xhh);
      *rhh = normalize_row(xhh, G);
      for (int64_t j = 0; j < G; ++j) a[j] += w.ln_hh[j] * xhh[j];
    }
    T *ai = a, *af = a + H, *ag = a + 2 * H, *ao = a + 3 * H;
    T *i = work, *f = work + H, *g = work + 2 * H, *o = work + 3 * H, *psi = work + 4 * H;
    const T* p = w.peephole;
    if (p) {
      for (int64_t j = 0; j < H; ++j) {
        ai[j] += p[j] * c_prev[j];
        af[j] += p[H + j] * c_prev[j];
      }
    }
    gate<T>(opt.gate_act, opt.clip, ai, i, H, opt.input_gate);
    if (opt.coupled) {
      for (int64_t j = 0; j < H; ++j) f[j] = T(1) - i[j];
    } else {
      gate<T>(opt.gate_act, opt.clip, af, f, H, opt.forget_gate);
    }
    gate<T>(opt.cell_act, opt.clip, ag, g, H);
    for (int64_t j = 0; j < H; ++j) c_new[j] = f[j] * c_prev[j] + i[j] * g[j];
    if (p) for (int64_t j = 0; j < H; ++j) ao[j] += p[2 * H + j] * c_new[j];
    gate<T>(opt.gate_act, opt.clip, ao, o, H, opt.output_gate);
    const T* c_out = c_new;
    if (w.ln_c) {
      std::copy(c_new, c_new + H, psi);
      sc[1] = normalize_row(psi, H, sc);
      for (int64_t j = 0; j < H; ++j) psi[j] = w.ln_c[j] * psi[j] + w.bln_c[j];
      c_out = psi;
    }
    activate(opt.out_act, c_out, psi, H);
    for (int64_t j = 0; j < H; ++j) hraw[j] = o[j] * psi[j];
  }

  void cell_row_backward(const T* a, const T* c_prev, const T* c_new, const T* sc, const T* xhh,
                         T rhh, const T* dhraw, const T* dcn, T* dc, T* da, T* dgh, T* hraw,
                         T* chat, T* dchat, T* work) const;
  std::vector<Tensor> forward(const Tensor& x, const Tensor& h0, const Tensor& c0) const;
  std::vector<Tensor> backward(const Tensor& x, const Tensor& dy, const Tensor& dhT,
                               const Tensor& dcT, const std::vector<Tensor>& saved,
                               bool need_dx) const;
};

template <typename T>
std::vector<Tensor> LSTMScan<T>::forward(const Tensor& x, const Tensor& h0,
                                         const Tensor& c0) const {
  const int64_t B = batch, H = hidden, P = output, G = gates();
  const bool ln = w.ln_ih != nullptr, proj = w.w_hr != nullptr, fast = fused();
  const auto o = x.options();
  const int64_t kept = save ? steps : 1;  // steps whose new c and layer-norm rows are kept
  const int64_t chunk = std::min(steps, chunk_steps(B * G)), held = save ? steps : chunk;
  auto empty = [&](std::initializer_list<int64_t> shape, bool needed = true) {
    return needed ? at::empty(shape, o) : Tensor();
  };
  // Saved with layer norm, the pre-activations and both normalised terms (each T x B x 4H) are
  // one allocation while they fit in kJointBytes. glibc hands its heap's free top back to the
  // system once it exceeds twice the largest block it has had to map: three blocks of that
  // size went past it on every call, and each call faulted their pages in again (830 faults,
  // a third of the time, in training at T, B, I, H = 200, 16, 32, 64); one block of their
  // joint size stays. glibc maps a block above 32 MiB afresh each time, so a larger joint
  // block would fault all of itself (9,600 faults at 100, 32, 128, 256).
  const bool joint = ln && save && 3 * steps * B * G * int64_t(sizeof(T)) <= kJointBytes;
  Tensor y = empty({steps, B, P}), Gates = empty({joint ? 3 : 1, held, B, G}), A = Gates[0];
  Tensor Hs = empty({save ? steps + 1 : 2, B, P}), Cs = empty({save ? steps + 1 : 2, B, H});
  Tensor Cn = empty({kept, B, H});
  Tensor Xih = joint ? Gates[1] : ln && save ? empty({steps, B, G}) : A;
  Tensor Xhh = joint ? Gates[2] : empty({kept, B, G}, ln), Rih = empty({held, B}, ln);
  Tensor Rhh = empty({kept, B}, ln), Sc = empty({kept, B, 2}, ln), gh = empty({B, G}, ln);
  Tensor hin = empty({B, P}, masks.hidden || masks.rounds()), hraw = empty({B, H});
  Tensor hnew = proj ? empty({B, P}) : hraw;
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
  T *pA = ptr(A), *pH = ptr(Hs), *pC = ptr(Cs), *py = ptr(y), *pCn = ptr(Cn), *pXhh = ptr(Xhh);
  T *pRhh = ptr(Rhh), *pSc = ptr(Sc), *pgh = ptr(gh), *phin = ptr(hin), *praw = ptr(hraw);
  T *pnew = ptr(hnew), *pXih = ptr(Xih), *pRih = ptr(Rih);
  std::copy(ptr(h0), ptr(h0) + B * P, pH);
  std::copy(ptr(c0), ptr(c0) + B * H, pC);
  const RightOperand<T> w_ih(w.w_ih, input, G, true, o, masks.operand);
  const RightOperand<T> w_hh(w.w_hh, P, G, true, o, masks.operand);
  const RightOperand<T> w_hr(w.w_hr, H, P, true, o, masks.operand);

  for (int64_t t = 0; t < steps; ++t) {
    const int64_t s = slot(t), s1 = slot(t + 1), k = save ? t : 0, at = save ? t : t % chunk;
    if (t % chunk == 0) {
      const int64_t r = (save ? t : 0) * B;
      input_term(w_ih, std::min(chunk, steps - t) * B, ptr(x) + t * B * input, pA + r * G,
                 pXih + r * G, ln ? pRih + r : nullptr);
    }
    const T *h_prev = pH + s * B * P, *c_prev = pC + s * B * H;
    const T* h_in = operand(masks, masked_hidden(masks, h_prev, phin, 1, B * P), phin, B * P);
    T *a = pA + at * B * G, *c_new = pCn + k * B * H;
    if (ln) w_hh.times(B, h_in, P, 0, pgh, G);
    else w_hh.times(B, h_in, P, 1, a, G);
    at::parallel_for(0, B, row_grain(10 * G), [&](int64_t b0, int64_t b1) {
      std::vector<T> work(fast ? (ln ? (b1 - b0) * (H + 1) : 0) : 5 * H);
      auto row = [&](int64_t b) {  // the arrays at row b of this step
        const int64_t r = k * B + b;
        return std::make_tuple(a + b * G, ln ? pgh + b * G : nullptr, ln ? pXhh + r * G : nullptr,
                               ln ? pRhh + r : nullptr, c_prev + b * H, c_new + b * H,
                               ln ? pSc + r * 2 : nullptr, praw + b * H);
      };
      if (fast) {
        std::apply([&](auto... rows) { fused_step_rows(b1 - b0, rows..., work.data()); }, row(b0));
        return;
      }
      for (int64_t b = b0; b < b1; ++b) {
        std::apply([&](auto... rows) { cell_row(rows..., work.data()); }, row(b));
      }
    });
    if (proj) w_hr.times(B, operand(masks, praw, praw, B * H), H, 0, pnew, P);
    carry(masks, 0, t, B, P, h_prev, pnew, pH + s1 * B * P, py + t * B * P);
    carry(masks, 1, t, B, H, c_prev, c_new, pC + s1 * B * H, (T*)nullptr);
  }
  const int64_t last = slot(steps);
  std::vector<Tensor> out{y, Hs[last].clone(), Cs[last].clone()};
  if (save) {
    for (const Tensor& t : {Gates, Hs, Cs, Cn}) out.push_back(t);
    if (ln) for (const Tensor& t : {Rih, Rhh, Sc}) out.push_back(t);
    if (ln && !joint) for (const Tensor& t : {Xih, Xhh}) out.push_back(t);
  }
  return out;
}

}  // namespace lstmkit
