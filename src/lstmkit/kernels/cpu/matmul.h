// Matrix products on raw row-major pointers, chosen by what was measured fastest here
// (docs/benchmarks.md names the machine; single thread, GFLOP/s):
//   - float: oneDNN's brgemm ukernel, which torch exports as at::native::cpublas::brgemm. It
//     runs AVX-512 where the CPU has it; MKL's sgemm takes an AVX2 path on AMD CPUs. Over cache
//     blocks: 160-250 against MKL's 75-95 for every product the kernels make.
//   - one row (batch 1): a plain loop that streams the matrix once, 1.5 us against 3.1 us for
//     a BLAS call at K=128, N=512.
//   - double, and anything brgemm declines: BLAS (the Fortran symbols torch exports), called
//     directly to skip the dispatcher, which costs microseconds per call.
//   - the float weight gradients on a CPU without AVX-512: MKL's sgemm, 70-87 GFLOP/s where
//     brgemm's AVX2 kernels run 40-45 on those operands (sgemm_weight_gradients).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>

#include "precision.h"

// Declared weak: a torch build that does not export them falls back to at::addmm_out.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
// MKL's C name for mkl_set_num_threads_local (mkl_service.h); the lower-case symbol is the
// Fortran one, which takes a pointer.
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
}

// Before an elementwise loop over several arrays: iteration j touches index j only (arrays
// may be the same one, never offset views of it). Without it GCC gives up on loops that would
// need more than ten run-time alias checks and leaves them scalar.
#define LSTMKIT_ELEMENTWISE _Pragma("GCC ivdep")

namespace lstmkit {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// C (M, N) = op(A) (M, K) @ op(B) (K, N) + beta C through BLAS, op transposing when the flag
// is set; lda, ldb, ldc are row strides. BLAS is column-major, so it computes
// C^T = op(B)^T op(A)^T on the same memory.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
  const int m = N, n = M, k = K, la = ldb, lb = lda, lc = ldc;
  const T one = 1;
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_) return sgemm_(&ta, &tb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  } else {
    if (dgemm_) return dgemm_(&ta, &tb, &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
  }
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* p, bool t, int64_t rows, int64_t cols, int64_t ld) {
    auto v = at::from_blob(const_cast<T*>(p), {t ? cols : rows, t ? rows : cols}, {ld, 1}, opts);
    return t ? v.t() : v;
  };
  Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  at::addmm_out(c, c, view(A, trans_a, M, K, lda), view(B, trans_b, K, N, ldb), beta, 1);
}

// C (M, N) = A (M, K) @ B (K, N) (+ C if add) for floats, B in plain row-major layout: brgemm
// on tiles of at most 256 x 256 of C, each summed over K in chunks of 256 (over the whole K
// the ukernel thrashes the cache: 30 GFLOP/s at K=3200), tiles spread over threads.
inline void brgemm_tiles(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                         const float* B, int64_t ldb, bool add, float* C, int64_t ldc) {
  constexpr int64_t kTile = 256, kDepth = 256;
  const int64_t mt = (M + kTile - 1) / kTile, nt = (N + kTile - 1) / kTile;
  const int64_t work = std::min(M, kTile) * std::min(N, kTile) * std::max<int64_t>(K, 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 21) / work);  // ~2M multiply-adds
  at::parallel_for(0, mt * nt, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t m0 = tile / nt * kTile, n0 = tile % nt * kTile;
      const int64_t m = std::min(kTile, M - m0), n = std::min(kTile, N - n0);
      float* c = C + m0 * ldc + n0;
      if (K == 0 && !add) {
        for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
      }
      for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
        at::native::cpublas::brgemm(m, n, std::min(kDepth, K - k0), lda, ldb, ldc, add || k0 > 0,
                                    A + m0 * lda + k0, B + k0 * ldb + n0, c);
      }
    }
  });
}

// Whether the weight gradients go through MKL's sgemm rather than brgemm: on a CPU without
// AVX-512, where brgemm's AVX2 kernels read a plain row-major B 2048 wide at 40-45 GFLOP/s and
// MKL's sgemm, packing its operands itself, runs the same products at 70-87
// (benchmarks/cpu_products.py, AMD Zen 3). With AVX-512 brgemm ran 160-250 against MKL's
// 75-95 (the earlier table's machine), so those CPUs keep it. Needs MKL (its thread-local
// thread count, see sgemm_columns); fixed per CPU and torch build, never by measured timing,
// so a machine's numbers do not change with its load.
inline bool sgemm_weight_gradients() {
#if defined(__x86_64__)
  static const bool use = sgemm_ && MKL_Set_Num_Threads_Local &&
                          !__builtin_cpu_supports("avx512f");
  return use;
#else
  return false;
#endif
}

// C (M, N) += A^T B for A (K, M) and B (K, N) row-major (row strides lda, ldb, ldc), through
// sgemm on column tiles of C, each one thread's and each sgemm call on one thread: MKL may
// split a product differently on more threads, and the numbers must not depend on the count.
inline void sgemm_columns(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                          const float* B, int64_t ldb, float* C, int64_t ldc) {
  constexpr int64_t kCols = 512;
  at::parallel_for(0, (N + kCols - 1) / kCols, 1, [&](int64_t t0, int64_t t1) {
    const int previous = MKL_Set_Num_Threads_Local(1);
    for (int64_t n0 = t0 * kCols; n0 < std::min(N, t1 * kCols); n0 += kCols) {
      gemm<float>(true, false, M, std::min(kCols, N - n0), K, A, lda, B + n0, ldb, 1.0f,
                  C + n0, ldc);
    }
    MKL_Set_Num_Threads_Local(previous);
  });
}

// c (N) = beta c + a (K) @ b (K, N) for a single row, streaming b once; ldc unused.
template <typename T>
void row_times(const T* a, const T* b, int64_t K, int64_t N, T beta, T* c) {
  if (beta == T(0)) std::fill(c, c + N, T(0));
  for (int64_t k = 0; k < K; ++k) {
    const T ak = a[k];
    const T* bk = b + k * N;
    for (int64_t j = 0; j < N; ++j) c[j] += ak * bk[j];
  }
}

// c (W) = beta c + a (K) @ b (K, W) for one row and one full panel of W columns. The two sets
// of accumulators (even and odd k) stay in registers: row_times keeps c in memory and waits
// on store-to-load forwarding every k, which made it three times slower here.
template <typename T, int W>
void panel_row(const T* a, const T* b, int64_t K, T beta, T* c) {
  T even[W], odd[W];
  for (int j = 0; j < W; ++j) {
    even[j] = beta != T(0) ? c[j] : T(0);
    odd[j] = T(0);
  }
  int64_t k = 0;
  for (; k + 2 <= K; k += 2) {
    const T a0 = a[k], a1 = a[k + 1];
    const T* bk = b + k * W;
    for (int j = 0; j < W; ++j) {
      even[j] += a0 * bk[j];
      odd[j] += a1 * bk[W + j];
    }
  }
  if (k < K) for (int j = 0; j < W; ++j) even[j] += a[k] * b[k * W + j];
  for (int j = 0; j < W; ++j) c[j] = even[j] + odd[j];
}

// src (rows, cols) with row stride ld into dst (cols, rows), by 16 x 16 blocks. A plain double
// loop is ten times slower on power-of-two sizes, whose strides collide in the cache.
template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, int64_t ld, T* dst) {
  constexpr int64_t kBlock = 16;
  const int64_t rf = rows / kBlock * kBlock, cf = cols / kBlock * kBlock;
  at::parallel_for(0, rf / kBlock, 256, [&](int64_t b0, int64_t b1) {
    for (int64_t i0 = b0 * kBlock; i0 < b1 * kBlock; i0 += kBlock)
      for (int64_t j0 = 0; j0 < cf; j0 += kBlock)
        for (int64_t j = 0; j < kBlock; ++j)
          for (int64_t i = 0; i < kBlock; ++i) dst[(j0 + j) * rows + i0 + i] = src[(i0 + i) * ld + j0 + j];
  });
  for (int64_t i = 0; i < rows; ++i)  // the ragged edges
    for (int64_t j = i < rf ? cf : 0; j < cols; ++j) dst[j * rows + i] = src[i * ld + j];
}

template <typename T>
Tensor transposed(const T* src, int64_t rows, int64_t cols, int64_t ld,
                  const at::TensorOptions& o) {
  Tensor out = at::empty({cols, rows}, o);
  transpose(src, rows, cols, ld, out.data_ptr<T>());
  return out;
}

// The float panels' width: four vector registers, 64 columns with AVX-512 and 32 with AVX2.
// brgemm's AVX2 kernels ran 64-wide panels 5-15% slower than 32-wide ones at every product
// shape of a (50, 64, 512, 512) LSTM (AMD Zen 3; 16 and 48 slower still). Fixed per CPU.
inline int64_t float_panel() {
#if defined(__x86_64__)
  static const int64_t width = __builtin_cpu_supports("avx512f") ? 64 : 32;
  return width;
#else
  return 64;
#endif
}

// The right operand B (K, N) of products that a call makes many times (every step's recurrent
// product, the input product over all steps, the backward products through the weights),
// built from a weight w: B = w^T for w (N, K) in the forward pass, B = w for w (K, N) in the
// backward pass. Floats keep B as column panels, each a contiguous (K, width) block, which
// brgemm reads 10-25% faster than the plain layout (220-240 against 190 GFLOP/s per step with
// AVX-512); the pack costs about what one step's product does. The width is four vector
// registers (float_panel). Doubles use the weight as it is, through BLAS.
template <typename T>
class RightOperand {
 public:
  static constexpr int64_t kPanel = 64, kRows = 256, kDepth = 512;

  // operand: what the left operands a of times() are rounded to (precision.h); bfloat16
  // takes the bfloat16 dot-product path where it runs.
  RightOperand(const T* w, int64_t K, int64_t N, bool transpose, const at::TensorOptions& o,
               int64_t operand = kExactOperand)
      : w_(w), K_(K), N_(N), transpose_(transpose) {
    if (!std::is_same_v<T, float> || !w) return;
    if (operand == kBFloat16Operand && bf16_dot()) {
      pack16(o);
      return;
    }
    packed_ = at::empty({K * N}, o);
    T* p = packed_.data_ptr<T>();
    const int64_t W = panel_ = float_panel();
    at::parallel_for(0, (N + W - 1) / W, 4, [&](int64_t p0, int64_t p1) {
      for (int64_t n0 = p0 * W; n0 < std::min(N, p1 * W); n0 += W) {
        const int64_t width = std::min(W, N - n0);
        if (transpose) {
          ::lstmkit::transpose(w + n0 * K, width, K, K, p + n0 * K);
        } else {
          for (int64_t k = 0; k < K; ++k) std::copy(w + k * N + n0, w + k * N + n0 + width, p + n0 * K + k * width);
        }
      }
    });
  }

  // c (M, N) = a (M, K) @ B + beta c, beta 0 or 1; lda and ldc are row strides.
  void times(int64_t M, const T* a, int64_t lda, T beta, T* c, int64_t ldc) const {
    if constexpr (std::is_same_v<T, float>) {
      if (packed16_.defined()) return times16(M, a, lda, beta, c, ldc);
      const int64_t panels = (N_ + panel_ - 1) / panel_, blocks = (M + kRows - 1) / kRows;
      const int64_t work = std::min(M, kRows) * panel_ * K_;
      const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 21) / std::max<int64_t>(work, 1));
      at::parallel_for(0, blocks * panels, grain, [&](int64_t t0, int64_t t1) {
        for (int64_t task = t0; task < t1; ++task) panel_times(task / panels * kRows,
                                                               task % panels * panel_, M, a, lda,
                                                               beta, c, ldc);
      });
    } else {
      gemm<T>(false, transpose_, M, N_, K_, a, lda, w_, transpose_ ? K_ : N_, beta, c, ldc);
    }
  }

 private:
  // The bfloat16 path: B as bfloat16 panels of kPanel columns (the last one zero-padded) over
  // an even depth (a zero row where K is odd), each in the VNNI layout that oneDNN's bfloat16
  // brgemm reads: (depth16 / 2, kPanel, 2), rows k and k + 1 interleaved column by column.
  // The layout is written here rather than by torch's cpublas::pack, which packs only on a CPU
  // with AMX, although brgemm runs bfloat16 on any AVX-512 BF16 CPU (vdpbf16ps).
  void pack16(const at::TensorOptions& o) {
    depth16_ = (K_ + 1) / 2 * 2;
    const int64_t panels = (N_ + kPanel - 1) / kPanel, size = depth16_ * kPanel;
    packed16_ = at::zeros({panels * size}, o.dtype(at::kBFloat16));
    auto* out = packed16_.data_ptr<at::BFloat16>();
    at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n0 = p * kPanel, width = std::min(kPanel, N_ - n0);
        at::BFloat16* panel = out + p * size;
        for (int64_t k = 0; k < K_; ++k)
          for (int64_t j = 0; j < width; ++j)
            panel[(k / 2 * kPanel + j) * 2 + k % 2] =
                at::BFloat16(transpose_ ? w_[(n0 + j) * K_ + k] : w_[k * N_ + n0 + j]);
      }
    });
  }

  // times() on the bfloat16 path: a rounded to bfloat16 (it holds bfloat16 values already, so
  // exactly), then oneDNN's brgemm panel by panel.
  void times16(int64_t M, const float* a, int64_t lda, float beta, float* c, int64_t ldc) const {
    const int64_t D = depth16_, panels = (N_ + kPanel - 1) / kPanel;
    std::vector<at::BFloat16> left(M * D, at::BFloat16(0.0f));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K_; ++k) left[i * D + k] = at::BFloat16(a[i * lda + k]);
    const auto* packed = packed16_.data_ptr<at::BFloat16>();
    const int64_t blocks = (M + kRows - 1) / kRows;
    at::parallel_for(0, blocks * panels, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t m0 = task / panels * kRows, n0 = task % panels * kPanel;
        const int64_t rows = std::min(kRows, M - m0), width = std::min(kPanel, N_ - n0);
        float* cb = c + m0 * ldc + n0;
        if (D == 0 && beta == 0.0f) {
          for (int64_t i = 0; i < rows; ++i) std::fill(cb + i * ldc, cb + i * ldc + width, 0.0f);
        }
        for (int64_t k0 = 0; k0 < D; k0 += kDepth) {  // kDepth is even: whole row pairs
          at::native::cpublas::brgemm(rows, width, std::min(kDepth, D - k0), D, kPanel, ldc,
                                      beta != 0.0f || k0 > 0, left.data() + m0 * D + k0,
                                      packed + (task % panels) * D * kPanel + k0 * kPanel, cb);
        }
      }
      at::native::cpublas::brgemm_release();  // AMX keeps a tile configuration per thread
    });
  }

  // Rows m0.. (up to kRows) of c, columns n0.. of one panel.
  void panel_times(int64_t m0, int64_t n0, int64_t M, const T* a, int64_t lda, T beta, T* c,
                   int64_t ldc) const {
    const int64_t width = std::min(panel_, N_ - n0), rows = std::min(kRows, M - m0);
    const T* panel = packed_.data_ptr<T>() + n0 * K_;
    T* cb = c + m0 * ldc + n0;
    if (M == 1 && width == 64) return panel_row<T, 64>(a, panel, K_, beta, cb);
    if (M == 1 && width == 32) return panel_row<T, 32>(a, panel, K_, beta, cb);
    if (M == 1) return row_times(a, panel, K_, width, beta, cb);
    if (K_ == 0 && beta == T(0)) {
      for (int64_t i = 0; i < rows; ++i) std::fill(cb + i * ldc, cb + i * ldc + width, T(0));
    }
    for (int64_t k0 = 0; k0 < K_; k0 += kDepth) {
      at::native::cpublas::brgemm(rows, width, std::min(kDepth, K_ - k0), lda, width, ldc,
                                  beta != T(0) || k0 > 0, a + m0 * lda + k0, panel + k0 * width,
                                  cb);
    }
  }

  const T* w_;
  int64_t K_, N_;
  bool transpose_;
  Tensor packed_, packed16_;  // packed16_: the bfloat16 path's panels, else undefined
  int64_t depth16_ = 0, panel_ = kPanel;  // panel_: the float panels' width
};

// A weight gradient dw (N, K) = g^T (N, rows) @ x (rows, K), summed chunk by chunk over all
// steps' rows. For floats it sums dw^T = x^T g instead: transposing each chunk of x (K is an
// input or hidden size) costs far less than transposing g (4H wide), and lets brgemm run;
// without AVX-512, sgemm takes x^T as it is (sgemm_weight_gradients).
template <typename T>
class WeightGradient {
 public:
  WeightGradient(int64_t N, int64_t K, const at::TensorOptions& o)
      : N_(N), K_(K), o_(o), sum_(at::zeros(std::is_same_v<T, float> ? at::IntArrayRef{K, N}
                                                                      : at::IntArrayRef{N, K},
                                            o)) {}

  void add(int64_t rows, const T* g, int64_t ldg, const T* x, int64_t ldx) {
    if constexpr (std::is_same_v<T, float>) {
      if (sgemm_weight_gradients()) {
        return sgemm_columns(K_, N_, rows, x, ldx, g, ldg, sum_.data_ptr<T>(), N_);
      }
      Tensor xt = transposed(x, rows, K_, ldx, o_);  // (K, rows)
      brgemm_tiles(K_, N_, rows, xt.data_ptr<T>(), rows, g, ldg, true, sum_.data_ptr<T>(), N_);
    } else {
      gemm<T>(true, false, N_, K_, rows, g, ldg, x, ldx, 1, sum_.data_ptr<T>(), K_);
    }
  }

  Tensor result() const {
    if constexpr (std::is_same_v<T, float>) return transposed(sum_.data_ptr<T>(), K_, N_, N_, o_);
    return sum_;
  }

 private:
  int64_t N_, K_;
  at::TensorOptions o_;
  Tensor sum_;
};

// The whole sum at once, for gradients kept for every step.
template <typename T>
Tensor weight_gradient(int64_t rows, int64_t N, int64_t K, const T* g, int64_t ldg, const T* x,
                       int64_t ldx, const at::TensorOptions& o) {
  WeightGradient<T> dw(N, K, o);
  dw.add(rows, g, ldg, x, ldx);
  return dw.result();
}

}  // namespace lstmkit
