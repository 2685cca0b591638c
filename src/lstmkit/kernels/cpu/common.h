// Shared by the cell kernels: activations the compiler can vectorise, layer-norm rows, column
// sums and the step masks (products are in matmul.h).
//
// Dimension legend: T time steps, B batch, I input features, H hidden units, P output units
// (proj_size or H), G gates (LSTM 4, GRU 3, RNN 1). Every tensor is contiguous and row-major;
// a (T, B, F) sequence is T blocks of B rows of F values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "generated.h"  // enum Act (kSigmoid, ...): _build.py writes it from lstmkit.activations
#include "matmul.h"

namespace lstmkit {

constexpr double inverse_factorial(int k) { return k <= 1 ? 1.0 : inverse_factorial(k - 1) / k; }

// 1/K! + r (1/(K+1)! + r (...)) up to 1/N!: the Taylor series of e^r from term K on, its
// coefficients folded to constants at compile time.
// The scalar math below must inline into the loops that call it, or those loops stay scalar.
#define LSTMKIT_INLINE inline __attribute__((always_inline))

template <typename T, int K, int N>
LSTMKIT_INLINE T taylor_exp(T r) {
  constexpr T c = static_cast<T>(inverse_factorial(K));
  if constexpr (K == N) return c; else return c + r * taylor_exp<T, K + 1, N>(r);
}

template <typename T>
LSTMKIT_INLINE T vexp(T x) {
  using Bits = std::conditional_t<std::is_same_v<T, float>, int32_t, int64_t>;
  constexpr bool single = std::is_same_v<T, float>;
  constexpr int mantissa = single ? 23 : 52, bias = single ? 127 : 1023, degree = single ? 7 : 13;
  constexpr T lo = single ? -87.0f : -708.0, hi = single ? 88.0f : 709.0;
  constexpr T ln2_hi = single ? 0.693145751953125f : 6.93147180369123816490e-01;
  constexpr T ln2_lo = single ? 1.428606765330187e-06f : 1.90821492927058770002e-10;
  x = std::min(std::max(x, lo), hi);
  const T n = std::floor(x * T(1.4426950408889634) + T(0.5));
  const T r = x - n * ln2_hi - n * ln2_lo;
  const T p = taylor_exp<T, 0, degree>(r);
  const Bits bits = (static_cast<Bits>(n) + bias) << mantissa;
  T scale;
  std::memcpy(&scale, &bits, sizeof(T));
  return p * scale;
}

template <typename T>
LSTMKIT_INLINE T vsigmoid(T x) { return T(1) / (T(1) + vexp(-x)); }

template <typename T>
LSTMKIT_INLINE T vtanh(T x) { return T(2) / (T(1) + vexp(T(-2) * x)) - T(1); }


// y = act(x) over n values. One loop per activation, so each vectorises on its own.
template <typename T>
void activate(int64_t act, const T* x, T* y, int64_t n) {
  switch (act) {
    case kSigmoid: for (int64_t j = 0; j < n; ++j) y[j] = vsigmoid(x[j]); break;
    case kTanh: for (int64_t j = 0; j < n; ++j) y[j] = vtanh(x[j]); break;
    case kRelu: for (int64_t j = 0; j < n; ++j) y[j] = x[j] > T(0) ? x[j] : T(0); break;
    case kHardSigmoid:
      for (int64_t j = 0; j < n; ++j) y[j] = std::min(std::max(T(0.2) * x[j] + T(0.5), T(0)), T(1));
      break;
    case kSoftsign: for (int64_t j = 0; j < n; ++j) y[j] = x[j] / (T(1) + std::abs(x[j])); break;
    case kSoftplus:  // torch's threshold: linear above 20. Scalar: log1p does not vectorise
      for (int64_t j = 0; j < n; ++j) y[j] = x[j] > T(20) ? x[j] : std::log1p(std::exp(x[j]));
      break;
    case kElu:  // exp of min(x, 0) on both sides keeps the loop branch-free
      for (int64_t j = 0; j < n; ++j) {
        const T e = vexp(std::min(x[j], T(0))) - T(1);
        y[j] = x[j] > T(0) ? x[j] : e;
      }
      break;
    case kLeakyRelu: for (int64_t j = 0; j < n; ++j) y[j] = x[j] > T(0) ? x[j] : T(0.01) * x[j]; break;
    default: if (y != x) std::copy(x, x + n, y);
  }
}

// d[j] = act'(x[j]) given x and y = act(x), with torch's choices at the kinks (relu' = 0 at 0,
// the hard sigmoid's clamp passes its bounds).
template <typename T>
void derivative(int64_t act, const T* x, const T* y, T* d, int64_t n) {
  switch (act) {
    case kSigmoid: for (int64_t j = 0; j < n; ++j) d[j] = y[j] * (T(1) - y[j]); break;
    case kTanh: for (int64_t j = 0; j < n; ++j) d[j] = T(1) - y[j] * y[j]; break;
    case kRelu: for (int64_t j = 0; j < n; ++j) d[j] = x[j] > T(0) ? T(1) : T(0); break;
    case kHardSigmoid:
      for (int64_t j = 0; j < n; ++j) {
        const T v = T(0.2) * x[j] + T(0.5);
        d[j] = (v >= T(0) && v <= T(1)) ? T(0.2) : T(0);
      }
      break;
    case kSoftsign:
      for (int64_t j = 0; j < n; ++j) {
        const T s = T(1) + std::abs(x[j]);
        d[j] = T(1) / (s * s);
      }
      break;
    case kSoftplus: for (int64_t j = 0; j < n; ++j) d[j] = x[j] > T(20) ? T(1) : vsigmoid(x[j]); break;
    case kElu: for (int64_t j = 0; j < n; ++j) d[j] = x[j] > T(0) ? T(1) : y[j] + T(1); break;
    case kLeakyRelu: for (int64_t j = 0; j < n; ++j) d[j] = x[j] > T(0) ? T(1) : T(0.01); break;
    default: for (int64_t j = 0; j < n; ++j) d[j] = T(1);
  }
}

constexpr double kLayerNormEps = 1e-5;  // lstmkit.cells.lstm.LN_EPS

// The mean (stored) and 1 / sqrt(var + eps) (returned) of a row; normalize_row also applies
// them in place, x <- (x - mean) / sqrt(var + eps), storing the mean if asked. Two passes for the variance (no cancellation when the mean is
// large); "omp simd reduction" lets the compiler keep the sums in vector lanes. Summing floats
// in double instead made a row three times slower.
template <typename T>
T row_moments(const T* x, int64_t n, T* mean_out) {
  T sum = 0, sq = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += x[j];
  const T mean = sum / T(n);
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < n; ++j) sq += (x[j] - mean) * (x[j] - mean);
  *mean_out = mean;
  return T(1) / std::sqrt(sq / T(n) + T(kLayerNormEps));
}

// row_moments of `rows` rows (row stride ld) into mean[r * stride] and rstd[r * stride], four
// rows at a time: a row's sums wait on their own adds and on the final horizontal sum, four
// independent ones overlap (a layer-norm step at H=64 went a third faster).
template <typename T>
void rows_moments(const T* x, int64_t rows, int64_t n, int64_t ld, T* mean, T* rstd,
                  int64_t stride) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const T *x0 = x + r * ld, *x1 = x0 + ld, *x2 = x1 + ld, *x3 = x2 + ld;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t j = 0; j < n; ++j) {
      s0 += x0[j];
      s1 += x1[j];
      s2 += x2[j];
      s3 += x3[j];
    }
    const T m0 = s0 / T(n), m1 = s1 / T(n), m2 = s2 / T(n), m3 = s3 / T(n);
    T q0 = 0, q1 = 0, q2 = 0, q3 = 0;
#pragma omp simd reduction(+ : q0, q1, q2, q3)
    for (int64_t j = 0; j < n; ++j) {
      q0 += (x0[j] - m0) * (x0[j] - m0);
      q1 += (x1[j] - m1) * (x1[j] - m1);
      q2 += (x2[j] - m2) * (x2[j] - m2);
      q3 += (x3[j] - m3) * (x3[j] - m3);
    }
    const T ms[4] = {m0, m1, m2, m3}, qs[4] = {q0, q1, q2, q3};
    for (int64_t k = 0; k < 4; ++k) {
      mean[(r + k) * stride] = ms[k];
      rstd[(r + k) * stride] = T(1) / std::sqrt(qs[k] / T(n) + T(kLayerNormEps));
    }
  }
  for (; r < rows; ++r) rstd[r * stride] = row_moments(x + r * ld, n, mean + r * stride);
}

// For normalize_row_backward's two means, over `rows` rows at once (see rows_moments):
// ma[r] = mean(dxhat_r), mb[r] = mean(dxhat_r * xhat_r), rows with strides ldd and ldx.
template <typename T>
void rows_backward_means(const T* dxhat, const T* xhat, int64_t rows, int64_t n, int64_t ldd,
                         int64_t ldx, T* ma, T* mb) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const T *d0 = dxhat + r * ldd, *d1 = d0 + ldd, *d2 = d1 + ldd, *d3 = d2 + ldd;
    const T *x0 = xhat + r * ldx, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;
    T a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, b0, b1, b2, b3)
    for (int64_t j = 0; j < n; ++j) {
      a0 += d0[j];
      a1 += d1[j];
      a2 += d2[j];
      a3 += d3[j];
      b0 += d0[j] * x0[j];
      b1 += d1[j] * x1[j];
      b2 += d2[j] * x2[j];
      b3 += d3[j] * x3[j];
    }
    const T as[4] = {a0, a1, a2, a3}, bs[4] = {b0, b1, b2, b3};
    for (int64_t k = 0; k < 4; ++k) {
      ma[r + k] = as[k] / T(n);
      mb[r + k] = bs[k] / T(n);
    }
  }
  for (; r < rows; ++r) {
    const T *d = dxhat + r * ldd, *x = xhat + r * ldx;
    T a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t j = 0; j < n; ++j) {
      a += d[j];
      b += d[j] * x[j];
    }
    ma[r] = a / T(n);
    mb[r] = b / T(n);
  }
}

template <typename T>
T normalize_row(T* x, int64_t n, T* mean_out = nullptr) {
  T mean;
  const T rstd = row_moments(x, n, &mean);
  if (mean_out) *mean_out = mean;
  for (int64_t j = 0; j < n; ++j) x[j] = (x[j] - mean) * rstd;
  return rstd;
}

// The gradient through normalize_row: given dxhat and xhat of a row (n values) and its rstd,
// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)). dx may be dxhat.
template <typename T>
void normalize_row_backward(const T* dxhat, const T* xhat, T rstd, T* dx, int64_t n) {
  T a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t j = 0; j < n; ++j) {
    a += dxhat[j];
    b += dxhat[j] * xhat[j];
  }
  const T ma = a / T(n), mb = b / T(n);
  for (int64_t j = 0; j < n; ++j) dx[j] = rstd * (dxhat[j] - ma - xhat[j] * mb);
}

// Steps whose input terms one product computes: about 256 KB of them, so that a chunk is still
// in cache when its steps read it back. All T steps up front left each step reading from
// memory (5-10% slower at T=200 here).
inline int64_t chunk_steps(int64_t values_per_step) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, values_per_step));
}

// Rows per parallel task: enough work per thread that waking it pays (about 16k values).
inline int64_t row_grain(int64_t values_per_row) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, values_per_row));
}

// acc[j] += the sum over rows r of a[r, j] * b[r, j] (b null: a alone), in double;
// parallel over columns, so every column sums in the same order on any number of threads.
template <typename T>
void column_sums(int64_t rows, int64_t cols, const T* a, int64_t lda, const T* b, int64_t ldb,
                 double* acc) {
  at::parallel_for(0, cols, std::max<int64_t>(16, 65536 / std::max<int64_t>(1, rows)),
                   [&](int64_t j0, int64_t j1) {
    for (int64_t r = 0; r < rows; ++r) {
      const T* ar = a + r * lda;
      const T* br = b ? b + r * ldb : nullptr;
      if (br) {
        for (int64_t j = j0; j < j1; ++j) acc[j] += ar[j] * br[j];
      } else {
        for (int64_t j = j0; j < j1; ++j) acc[j] += ar[j];
      }
    }
  });
}

// Double sums as a tensor of the kernels' dtype.
template <typename T>
Tensor as_tensor(const std::vector<double>& values, const at::TensorOptions& o) {
  Tensor t = at::empty({static_cast<int64_t>(values.size())}, o);
  std::copy(values.begin(), values.end(), t.data_ptr<T>());
  return t;
}

// Steps per chunk of the backward pass: its gradients are turned into weight gradients a
// chunk at a time, at least 256 rows (so the products stay large) and about 256 KB of gate
// gradients (so they are still in cache, and the buffers are reused rather than allocated for
// the whole sequence).
inline int64_t backward_chunk(int64_t batch, int64_t values_per_step) {
  const int64_t rows = std::max<int64_t>(1, batch);  // a batch of 0 still runs (empty) steps
  return std::max(chunk_steps(values_per_step), (256 + rows - 1) / rows);
}

template <typename T>
const T* ptr_or_null(const OptTensor& t) {
  return t && t->defined() ? t->data_ptr<T>() : nullptr;
}

// What a scan multiplies in at each step (lstmkit.kernels.contract.StepMasks) and the lengths:
// h_{t-1} is scaled by `hidden` (B, P) before the recurrent product; state tensor k becomes
// z * s_{t-1} + (1 - z) * s_new with z = zoneout[k] (T, B, size); a row b stops at lengths[b].
template <typename T>
struct Masks {
  const T* hidden = nullptr;
  std::vector<const T*> zoneout;  // empty, or one per state tensor
  std::vector<bool> per_step;     // zoneout[k] is (T, B, size), or else one row for all
  const int64_t* lengths = nullptr;
  int64_t operand = kExactOperand;  // 16-bit scans: what product operands round to (precision.h)

  bool valid(int64_t t, int64_t b) const { return !lengths || t < lengths[b]; }
  bool rounds() const { return operand != kExactOperand; }
  const T* zone(size_t k, int64_t t, int64_t b, int64_t size, int64_t batch) const {
    if (zoneout.empty()) return nullptr;
    return zoneout[k] + (per_step[k] ? (t * batch + b) * size : 0);
  }
};

// Forward, state tensor k after step t: row b of `next` (B, size) becomes `cur` mixed with
// `prev` by zoneout, or stays `prev` past the row's length; y (B, size), if given, gets the
// carried row, or zeros past the length.
template <typename T>
void carry(const Masks<T>& m, size_t k, int64_t t, int64_t B, int64_t size, const T* prev,
           const T* cur, T* next, T* y) {
  if (!m.lengths && m.zoneout.empty()) {  // the common case: whole blocks
    std::copy(cur, cur + B * size, next);
    if (y) std::copy(cur, cur + B * size, y);
    return;
  }
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * size;
    const T* src = cur + o;
    if (!m.valid(t, b)) {
      src = prev + o;
    } else if (const T* z = m.zone(k, t, b, size, B)) {
      for (int64_t j = 0; j < size; ++j) next[o + j] = z[j] * prev[o + j] + (T(1) - z[j]) * cur[o + j];
      src = next + o;
    }
    if (src != next + o) std::copy(src, src + size, next + o);
    if (y && m.valid(t, b)) std::copy(next + o, next + o + size, y + o);
    if (y && !m.valid(t, b)) std::fill(y + o, y + o + size, T(0));
  }
}

// Backward of carry: d (B, size) holds the gradient of the carried state (dy, if given, is
// added: the output is that state). Writes the new state's share to dcur and leaves in d the
// share that goes straight to the previous state.
template <typename T>
void uncarry(const Masks<T>& m, size_t k, int64_t t, int64_t B, int64_t size, T* d,
             const T* dy, T* dcur) {
  for (int64_t b = 0; b < B; ++b) {
    const int64_t o = b * size;
    if (!m.valid(t, b)) {
      std::fill(dcur + o, dcur + o + size, T(0));
      continue;
    }
    T *db = d + o, *dc = dcur + o;
    if (dy) for (int64_t j = 0; j < size; ++j) db[j] += dy[o + j];
    if (const T* z = m.zone(k, t, b, size, B)) {
      for (int64_t j = 0; j < size; ++j) {
        dc[j] = (T(1) - z[j]) * db[j];
        db[j] *= z[j];
      }
    } else {
      std::copy(db, db + size, dc);
      std::fill(db, db + size, T(0));
    }
  }
}

// h (rows of B * P values) scaled by the recurrent-dropout mask (B, P) into buf, or h itself.
template <typename T>
const T* masked_hidden(const Masks<T>& m, const T* h, T* buf, int64_t rows, int64_t BP) {
  if (!m.hidden) return h;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < BP; ++j) buf[r * BP + j] = h[r * BP + j] * m.hidden[j];
  return buf;
}

// The left operand of a forward product (n values): src itself, or in a 16-bit scan src
// rounded into buf (precision.h). The same rounding of the saved values in the backward pass
// gives the weight gradients of the products the forward pass computed.
template <typename T>
const T* operand(const Masks<T>& m, const T* src, T* buf, int64_t n) {
  if (!m.rounds()) return src;
  round_operand(m.operand, src, buf, n);
  return buf;
}

// d += dh_in (B * P values) through the recurrent-dropout mask.
template <typename T>
void add_masked(const Masks<T>& m, const T* dh_in, T* d, int64_t BP) {
  for (int64_t j = 0; j < BP; ++j) d[j] += m.hidden ? dh_in[j] * m.hidden[j] : dh_in[j];
}

// d (rows, P) += g (rows, G) @ w (G, P), through the recurrent-dropout mask if there is one.
template <typename T>
void backprop_recurrent(const Masks<T>& m, int64_t rows, int64_t P, const T* g, int64_t ldg,
                        const RightOperand<T>& w, T* d, T* buf) {
  if (!m.hidden) return w.times(rows, g, ldg, 1, d, P);
  w.times(rows, g, ldg, 0, buf, P);
  add_masked(m, buf, d, rows * P);
}

}  // namespace lstmkit
