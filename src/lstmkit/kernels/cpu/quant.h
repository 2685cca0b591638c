// Int8 inference: the forward scans of lstm.h, gru.h and rnn.h with their weight matrices
// stored as int8, one scale per output row (dynamic quantisation's weights), in float32.
//
// What is computed, in one of two modes (Products):
//   - weights only: every product x W^T is x (diag(s) q)^T, the product with the dequantised
//     weight, so a scan here is the float scan of the dequantised model up to float32
//     rounding. Inputs are not quantised, so the error is the weights' rounding alone.
//   - int8 activations: every product's left operand (x for the input term, h, r * h, the
//     projection's input) is rounded to 7-bit integers per row at run time and multiplied in
//     integers (int8_dot.h says exactly what is computed), as torch.ao's and ONNX Runtime's
//     dynamic quantisation do; a row's rounding does not depend on the other rows of its call,
//     so stepping a stream one call at a time computes what one long call does, bit for bit.
// Activations' nonlinearities, states, biases, peepholes and layer-norm gains stay float32.
//
// How, weights only: a call whose products with a matrix total at most kStreamRows rows (a
// step or two of one stream) dots the int8 rows in place, widening each weight to float in
// registers and applying the row scales at the end: it reads a quarter of the float kernel's
// bytes and packs nothing. A call with more rows dequantises the matrix once and runs the float
// kernel's products (RightOperand, matmul.h): on AVX2 the widening costs three instructions per
// eight weights where a float product takes one, so past a few rows one dequantisation is
// cheaper. With int8 activations every product is integer, on the int8 rows in place.
//
// Shapes (legend in common.h): q (N, K) int8 row-major, scale (N) for a weight W (N, K); the
// scans' tensors as in lstm.h, gru.h, rnn.h. Inference only: nothing is saved for a backward
// pass, and there is no recurrent-dropout mask (evaluation has none).
#pragma once

#include "lstm.h"
#include "rnn.h"
#include "int8_dot.h"
#include "step.h"  // load8: eight int8 weights widened to floats

namespace lstmkit {

// A weight matrix as int8 rows with their scales: W[n] = scale[n] * q[n].
struct QuantMatrix {
  const int8_t* q = nullptr;
  const float* scale = nullptr;
  const int32_t* sums = nullptr;  // each row's sum, if known (int8 activations need it)

  QuantMatrix rows_from(int64_t n, int64_t K) const {
    return {q + n * K, scale + n, sums ? sums + n : nullptr};
  }
};

// How the products multiply (see the top of this file); `portable` runs the integer products'
// portable loop on any CPU (the tests compare the two).
struct Products {
  bool int8_activations = false;
  bool portable = false;
};

// out[n] = a (K) . q[n] (K) for rows n0..n1 of an int8 matrix (N, K) in its own row-major
// layout, four rows at a time: the four sums share each load of a, and no packed copy is made
// per call. With AVX2 and FMA (the build is -march=native) eight weights at a time are widened
// in registers (sign-extend to int32, convert, fused multiply-add): about four times the
// portable loop's rate; elsewhere the portable loop, which the compiler vectorises as it can.
#if defined(__AVX2__) && defined(__FMA__)
LSTMKIT_INLINE float lane_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
#endif

LSTMKIT_INLINE void int8_row_dots(const float* a, const int8_t* q, int64_t K, int64_t n0,
                                  int64_t n1, float* out) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const int8_t *q0 = q + n * K, *q1 = q0 + K, *q2 = q1 + K, *q3 = q2 + K;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t k = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 v0 = _mm256_setzero_ps(), v1 = v0, v2 = v0, v3 = v0;
    for (; k + 8 <= K; k += 8) {
      const __m256 ak = _mm256_loadu_ps(a + k);
      v0 = _mm256_fmadd_ps(ak, load8(q0 + k), v0);
      v1 = _mm256_fmadd_ps(ak, load8(q1 + k), v1);
      v2 = _mm256_fmadd_ps(ak, load8(q2 + k), v2);
      v3 = _mm256_fmadd_ps(ak, load8(q3 + k), v3);
    }
    s0 = lane_sum(v0), s1 = lane_sum(v1), s2 = lane_sum(v2), s3 = lane_sum(v3);
#endif
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t j = k; j < K; ++j) {
      s0 += a[j] * static_cast<float>(q0[j]);
      s1 += a[j] * static_cast<float>(q1[j]);
      s2 += a[j] * static_cast<float>(q2[j]);
      s3 += a[j] * static_cast<float>(q3[j]);
    }
    out[n] = s0;
    out[n + 1] = s1;
    out[n + 2] = s2;
    out[n + 3] = s3;
  }
  for (; n < n1; ++n) {
    const int8_t* qn = q + n * K;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t k = 0; k < K; ++k) sum += a[k] * static_cast<float>(qn[k]);
    out[n] = sum;
  }
}

// The right operand B = W^T (K, N) of repeated products, W given as a QuantMatrix (N, K).
class QuantOperand {
 public:
  static constexpr int64_t kStreamRows = 4;
  static constexpr int64_t kBlockRows = 64;  // weight rows an integer product keeps in L1

  // rows: the rows all of the call's products with it add up to, which picks the path.
  QuantOperand(QuantMatrix w, int64_t K, int64_t N, int64_t rows, const at::TensorOptions& o,
               Products products = {})
      : w_(w), K_(K), N_(N), stream_(rows <= kStreamRows), products_(products) {
    if (!w.q) return;
    if (products.int8_activations) {
      TORCH_CHECK(K <= kMaxIntegerTerms, "lstmkit_cpu: int8 activations: expected at most ",
                  kMaxIntegerTerms, " inputs to a product (an exact int32 sum), got ", K);
      if (w.sums) return;
      own_sums_.resize(N);
      at::parallel_for(0, N, row_grain(K), [&](int64_t n0, int64_t n1) {
        row_sums(w.q, K, n0, n1, own_sums_.data(), products.portable);
      });
      w_.sums = own_sums_.data();
      return;
    }
    if (stream_) return;
    Tensor dense = at::empty({N, K}, o);  // dequantised once, then packed by the float path
    float* d = dense.data_ptr<float>();
    at::parallel_for(0, N, row_grain(K), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t k = 0; k < K; ++k) d[n * K + k] = w.scale[n] * static_cast<float>(w.q[n * K + k]);
    });
    dense_.emplace(d, K, N, true, o);
  }

  // c (M, N) = a (M, K) @ B + beta c, beta 0 or 1; lda and ldc are row strides.
  void times(int64_t M, const float* a, int64_t lda, float beta, float* c, int64_t ldc) const {
    if (products_.int8_activations) return integer_times(M, a, lda, beta, c, ldc);
    if (!stream_ || M > kStreamRows) {
      TORCH_CHECK(dense_, "lstmkit_cpu: a product of ", M, " rows on an operand made for ",
                  kStreamRows, " or fewer");
      return dense_->times(M, a, lda, beta, c, ldc);
    }
    const int64_t grain = std::max<int64_t>(64, (int64_t(1) << 18) / std::max<int64_t>(1, K_));
    at::parallel_for(0, N_, grain, [&](int64_t n0, int64_t n1) {
      std::vector<float> dots(N_);
      for (int64_t m = 0; m < M; ++m) {
        int8_row_dots(a + m * lda, w_.q, K_, n0, n1, dots.data());
        float* cm = c + m * ldc;
        for (int64_t n = n0; n < n1; ++n)
          cm[n] = (beta != 0.0f ? cm[n] : 0.0f) + w_.scale[n] * dots[n];
      }
    });
  }

 private:
  // The rows of a rounded to 7 bits (int8_dot.h), then each block of weight rows dotted with
  // every row of a while it is in cache.
  void integer_times(int64_t M, const float* a, int64_t lda, float beta, float* c,
                     int64_t ldc) const {
    std::vector<uint8_t> aq(M * K_);
    std::vector<RowQuant> rq(M);
    at::parallel_for(0, M, row_grain(4 * K_), [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) rq[m] = quantize_row(a + m * lda, K_, aq.data() + m * K_);
    });
    const int64_t work = std::max<int64_t>(1, M * K_);  // bytes of a per weight row
    const int64_t grain = std::max<int64_t>(kBlockRows, (int64_t(1) << 17) / work);
    at::parallel_for(0, N_, grain, [&](int64_t n0, int64_t n1) {
      std::vector<int32_t> dots(N_);
      for (int64_t b0 = n0; b0 < n1; b0 += kBlockRows) {
        const int64_t b1 = std::min(n1, b0 + kBlockRows);
        for (int64_t m = 0; m < M; ++m) {
          int8_dots(aq.data() + m * K_, w_.q, K_, b0, b1, dots.data(), products_.portable);
          float* cm = c + m * ldc;
          for (int64_t n = b0; n < b1; ++n) {
            const int32_t dot = dots[n] - rq[m].zero * w_.sums[n];
            const float product = rq[m].scale * w_.scale[n] * static_cast<float>(dot);
            cm[n] = beta != 0.0f ? cm[n] + product : product;
          }
        }
      }
    });
  }

  QuantMatrix w_;
  int64_t K_, N_;
  bool stream_;
  Products products_;
  std::vector<int32_t> own_sums_;  // int8 activations: the rows' sums, where not given
  std::optional<RightOperand<float>> dense_;
};

// The matrices of a cell (null where it has none: w_hr without a projection).
struct QuantWeights {
  QuantMatrix w_ih, w_hh, w_hr;
};

// The gate math of one step for the B rows of `cell` (from lstm.h): pre-activations a (B, G),
// with layer norm the recurrent term gh (B, G) and its buffers Xhh, Rhh, Sc (null without),
// c_prev -> c_new (B, H) and h before any projection, hraw (B, H). One function for the scan
// and the step (quant_lstm_step_layer), so that both compute the same bits.
inline void quant_cell_rows(const LSTMScan<float>& cell, float* a, float* gh, float* Xhh,
                            float* Rhh, const float* c_prev, float* c_new, float* Sc,
                            float* hraw) {
  const int64_t B = cell.batch, H = cell.hidden, G = cell.gates();
  const bool ln = cell.w.ln_ih != nullptr, fast = cell.fused();
  at::parallel_for(0, B, row_grain(10 * G), [&](int64_t b0, int64_t b1) {
    std::vector<float> work(fast ? (ln ? (b1 - b0) * (H + 1) : 0) : 5 * H);
    auto row = [&](int64_t b) {
      return std::make_tuple(a + b * G, ln ? gh + b * G : nullptr, ln ? Xhh + b * G : nullptr,
                             ln ? Rhh + b : nullptr, c_prev + b * H, c_new + b * H,
                             ln ? Sc + b * 2 : nullptr, hraw + b * H);
    };
    if (fast) {
      std::apply([&](auto... rows) { cell.fused_step_rows(b1 - b0, rows..., work.data()); },
                 row(b0));
      return;
    }
    for (int64_t b = b0; b < b1; ++b) {
      std::apply([&](auto... rows) { cell.cell_row(rows..., work.data()); }, row(b));
    }
  });
}

// One step of a plain LSTM layer (no layer norm, projection or mask) with int8 activations,
// for `cell`'s B rows: x (B, I), h, c (B, H) -> h_out, c_out (B, H). It does what one step of
// quant_lstm_forward does, in the same order (the input term and both biases, then the
// recurrent term added, then quant_cell_rows), without its tensors: the single-stream path.
inline void quant_lstm_step_layer(const LSTMScan<float>& cell, const QuantWeights& qw,
                                  const float* x, const float* h, const float* c, float* h_out,
                                  float* c_out, bool portable) {
  const int64_t B = cell.batch, I = cell.input, H = cell.hidden, G = cell.gates();
  TORCH_CHECK(!cell.w.ln_ih && !qw.w_hr.q && cell.output == H,
              "lstmkit_cpu: the int8 step computes the plain LSTM");
  const Products products{true, portable};
  const auto o = at::TensorOptions().dtype(at::kFloat);
  const QuantOperand w_ih(qw.w_ih, I, G, B, o, products), w_hh(qw.w_hh, H, G, B, o, products);
  std::vector<float> a(B * G);
  w_ih.times(B, x, I, 0, a.data(), G);
  for (int64_t r = 0; r < B; ++r)
    for (int64_t j = 0; j < G; ++j) a[r * G + j] = a[r * G + j] + cell.w.b_ih[j] + cell.w.b_hh[j];
  w_hh.times(B, h, H, 1, a.data(), G);
  quant_cell_rows(cell, a.data(), nullptr, nullptr, nullptr, c, c_out, nullptr, h_out);
}

// LSTM forward with int8 matrices; `cell` (from lstm.h, its matrix pointers unused) supplies
// the biases, peepholes, layer-norm gains, options and masks, and its gate rows.
inline std::vector<Tensor> quant_lstm_forward(const LSTMScan<float>& cell, const QuantWeights& qw,
                                              const Tensor& x, const Tensor& h0,
                                              const Tensor& c0, Products products) {
  const int64_t T = cell.steps, B = cell.batch, I = cell.input, H = cell.hidden, P = cell.output;
  const int64_t G = cell.gates();
  const auto& w = cell.w;
  const bool ln = w.ln_ih != nullptr, proj = qw.w_hr.q != nullptr;
  const auto o = x.options();
  const int64_t chunk = std::min(T, chunk_steps(B * G));
  auto empty = [&](std::initializer_list<int64_t> shape, bool needed = true) {
    return needed ? at::empty(shape, o) : Tensor();
  };
  Tensor y = empty({T, B, P}), A = empty({chunk, B, G}), Xih = empty({chunk, B, G}, ln);
  Tensor Rih = empty({chunk, B}, ln), Hs = empty({2, B, P}), Cs = empty({2, B, H});
  Tensor Cn = empty({B, H}), Xhh = empty({B, G}, ln), Rhh = empty({B}, ln);
  Tensor Sc = empty({B, 2}, ln), gh = empty({B, G}, ln), hraw = empty({B, H});
  Tensor hnew = proj ? empty({B, P}) : hraw;
  auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
  float *pA = ptr(A), *pH = ptr(Hs), *pC = ptr(Cs), *pgh = ptr(gh), *praw = ptr(hraw);
  float *pnew = ptr(hnew), *pXih = ptr(Xih), *pRih = ptr(Rih);
  std::copy(ptr(h0), ptr(h0) + B * P, pH);
  std::copy(ptr(c0), ptr(c0) + B * H, pC);
  const QuantOperand w_ih(qw.w_ih, I, G, T * B, o, products);
  const QuantOperand w_hh(qw.w_hh, P, G, T * B, o, products);
  const QuantOperand w_hr(qw.w_hr, H, P, T * B, o, products);

  for (int64_t t = 0; t < T; ++t) {
    const int64_t s = t % 2, s1 = (t + 1) % 2;
    float* a = pA + t % chunk * B * G;
    if (t % chunk == 0) {  // the input term, as LSTMScan::input_term
      const int64_t rows = std::min(chunk, T - t) * B;
      w_ih.times(rows, ptr(x) + t * B * I, I, 0, ln ? pXih : pA, G);
      at::parallel_for(0, rows, row_grain(2 * G), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          float* xr = (ln ? pXih : pA) + r * G;
          if (ln) pRih[r] = normalize_row(xr, G);
          for (int64_t j = 0; j < G; ++j)
            pA[r * G + j] = (ln ? w.ln_ih[j] * xr[j] : xr[j]) + w.b_ih[j] + w.b_hh[j];
        }
      });
    }
    const float *h_prev = pH + s * B * P, *c_prev = pC + s * B * H;
    float* c_new = ptr(Cn);
    if (ln) w_hh.times(B, h_prev, P, 0, pgh, G);
    else w_hh.times(B, h_prev, P, 1, a, G);
    quant_cell_rows(cell, a, pgh, ptr(Xhh), ptr(Rhh), c_prev, c_new, ptr(Sc), praw);
    if (proj) w_hr.times(B, praw, H, 0, pnew, P);
    carry(cell.masks, 0, t, B, P, h_prev, pnew, pH + s1 * B * P, ptr(y) + t * B * P);
    carry(cell.masks, 1, t, B, H, c_prev, c_new, pC + s1 * B * H, (float*)nullptr);
  }
  return {y, Hs[T % 2].clone(), Cs[T % 2].clone()};
}

// GRU forward with int8 matrices (both forms of gru.h; biases from `w`, zeros if absent).
inline std::vector<Tensor> quant_gru_forward(int64_t T, int64_t B, int64_t I, int64_t H,
                                             const PlainWeights<float>& w, const QuantWeights& qw,
                                             bool reset_after, const Masks<float>& masks,
                                             const Tensor& x, const Tensor& h0,
                                             Products products) {
  const int64_t G = 3 * H, chunk = std::min(T, chunk_steps(B * G));
  const auto o = x.options();
  Tensor y = at::empty({T, B, H}, o), A = at::empty({chunk, B, G}, o);
  Tensor Hs = at::empty({2, B, H}, o), gh = at::empty({B, G}, o), hnew = at::empty({B, H}, o);
  Tensor gates = at::empty({B, G}, o), rn = at::empty({B, H}, o);
  float *pA = A.data_ptr<float>(), *pH = Hs.data_ptr<float>(), *pgh = gh.data_ptr<float>();
  float *pnew = hnew.data_ptr<float>(), *pg = gates.data_ptr<float>(), *prn = rn.data_ptr<float>();
  std::copy(h0.data_ptr<float>(), h0.data_ptr<float>() + B * H, pH);
  const QuantOperand w_ih(qw.w_ih, I, G, T * B, o, products);
  // reset-after: all three recurrent terms in one product; reset-before: r and z, then n.
  const QuantOperand w_hh(qw.w_hh, H, reset_after ? G : 2 * H, T * B, o, products);
  const QuantOperand w_hn(reset_after ? QuantMatrix{} : qw.w_hh.rows_from(2 * H, H), H, H, T * B,
                          o, products);
  const float* b_hn = w.b_hh + 2 * H;
  for (int64_t t = 0; t < T; ++t) {
    float* a = pA + t % chunk * B * G;
    if (t % chunk == 0) {
      const int64_t rows = std::min(chunk, T - t) * B;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < G; ++j) pA[r * G + j] = w.b_ih[j] + (j < 2 * H ? w.b_hh[j] : 0.0f);
      w_ih.times(rows, x.data_ptr<float>() + t * B * I, I, 1, pA, G);
    }
    const float* h = pH + t % 2 * B * H;
    w_hh.times(B, h, H, 0, pgh, G);
    for (int64_t b = 0; b < B; ++b) {  // r and z, and what n's reset multiplies
      const float *ab = a + b * G, *ghb = pgh + b * G, *hb = h + b * H;
      float *r = pg + b * G, *rnb = prn + b * H;
      for (int64_t j = 0; j < 2 * H; ++j) r[j] = vsigmoid(ab[j] + ghb[j]);
      for (int64_t j = 0; j < H; ++j) rnb[j] = reset_after ? ghb[2 * H + j] + b_hn[j] : r[j] * hb[j];
    }
    if (!reset_after) w_hn.times(B, prn, H, 0, pgh + 2 * H, G);
    for (int64_t b = 0; b < B; ++b) {
      const float *ab = a + b * G + 2 * H, *hb = h + b * H, *ghn = pgh + b * G + 2 * H;
      const float *r = pg + b * G, *z = r + H, *rnb = prn + b * H;
      float* hn = pnew + b * H;
      for (int64_t j = 0; j < H; ++j) {
        const float n = vtanh(ab[j] + (reset_after ? r[j] * rnb[j] : ghn[j] + b_hn[j]));
        hn[j] = (1.0f - z[j]) * n + z[j] * hb[j];
      }
    }
    carry(masks, 0, t, B, H, h, pnew, pH + (t + 1) % 2 * B * H, y.data_ptr<float>() + t * B * H);
  }
  return {y, Hs[T % 2].clone()};
}

// Elman RNN forward with int8 matrices.
inline std::vector<Tensor> quant_rnn_forward(int64_t T, int64_t B, int64_t I, int64_t H,
                                             const PlainWeights<float>& w, const QuantWeights& qw,
                                             bool relu, const Masks<float>& masks,
                                             const Tensor& x, const Tensor& h0,
                                             Products products) {
  const int64_t chunk = std::min(T, chunk_steps(B * H));
  const auto o = x.options();
  Tensor y = at::empty({T, B, H}, o), A = at::empty({chunk, B, H}, o), Hs = at::empty({2, B, H}, o);
  float *pA = A.data_ptr<float>(), *pH = Hs.data_ptr<float>();
  std::copy(h0.data_ptr<float>(), h0.data_ptr<float>() + B * H, pH);
  const QuantOperand w_ih(qw.w_ih, I, H, T * B, o, products);
  const QuantOperand w_hh(qw.w_hh, H, H, T * B, o, products);
  for (int64_t t = 0; t < T; ++t) {
    float* a = pA + t % chunk * B * H;  // becomes the new h in place
    if (t % chunk == 0) {
      const int64_t rows = std::min(chunk, T - t) * B;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < H; ++j) pA[r * H + j] = w.b_ih[j] + w.b_hh[j];
      w_ih.times(rows, x.data_ptr<float>() + t * B * I, I, 1, pA, H);
    }
    const float* h = pH + t % 2 * B * H;
    w_hh.times(B, h, H, 1, a, H);
    activate(relu ? kRelu : kTanh, a, a, B * H);
    carry(masks, 0, t, B, H, h, a, pH + (t + 1) % 2 * B * H, y.data_ptr<float>() + t * B * H);
  }
  return {y, Hs[T % 2].clone()};
}

}  // namespace lstmkit
