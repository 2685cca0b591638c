// 16-bit scans (bfloat16, float16): what is rounded where, and the bfloat16 dot-product path.
//
// A scan in 16 bits runs the float kernels on float copies of its 16-bit inputs (ops.cpp
// upcasts x, the state, the weights and the masks at the boundary: exactly, every 16-bit value
// is a float). The state, the gate math and every sum stay float32; only the left operands of
// the forward matrix products are rounded to the 16-bit type (round to nearest even), so every
// product multiplies two 16-bit values and sums in float32, whichever path computes it:
//   - the fallback, on any CPU: the float products of matmul.h on the rounded values (a
//     product of two 16-bit values is exact in float32);
//   - bfloat16 on a CPU with AVX-512 BF16 (vdpbf16ps, detected at run time): oneDNN's
//     bfloat16 brgemm ukernel, which torch exports, on weights packed once per call in its
//     VNNI layout. It sums in another order, so the two paths agree to float32 rounding.
// The backward pass is float32 throughout (the rounding of an operand passes its gradient
// unchanged); ops.cpp rounds the results once, to the dtypes of the tensors they belong to.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <atomic>
#include <cstdint>

#include <ATen/Context.h>
#include <ATen/native/CPUBlas.h>

namespace lstmkit {

// What the forward products' left operands are rounded to.
enum Operand : int64_t { kExactOperand = 0, kBFloat16Operand = 1, kHalfOperand = 2 };

// dst = src rounded to `operand` (and back to T) over n values; dst may be src.
template <typename T>
void round_operand(int64_t operand, const T* src, T* dst, int64_t n) {
  if (operand == kBFloat16Operand) {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(static_cast<float>(c10::BFloat16(src[j])));
  } else if (operand == kHalfOperand) {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(static_cast<float>(c10::Half(src[j])));
  } else if (dst != src) {
    std::copy(src, src + n, dst);
  }
}

// Whether the bfloat16 products can take oneDNN's bfloat16 brgemm ukernel (which torch
// exports): the CPU has AVX-512 BF16 (vdpbf16ps), and a two-row product on B in the VNNI
// layout that matmul.h's RightOperand packs gives the exact sums. The probe runs once; it
// fails where oneDNN is held below AVX-512 (ONEDNN_MAX_CPU_ISA), and brgemm then refuses.
inline bool bf16_dot_supported() {
#if defined(__x86_64__)
  static const bool supported = [] {
    if (!__builtin_cpu_supports("avx512bf16")) return false;
    constexpr int64_t N = 16;
    const at::BFloat16 a[2] = {1.0f, 2.0f};
    at::BFloat16 b[2 * N];  // (1, N, 2): rows k = 0 and 1 interleaved, b[k][j] = (k + 1) j
    for (int64_t j = 0; j < N; ++j) b[2 * j] = float(j), b[2 * j + 1] = float(2 * j);
    float c[N] = {};
    try {
      at::native::cpublas::brgemm(1, N, 2, 2, N, N, false, a, b, c);
      at::native::cpublas::brgemm_release();
    } catch (const c10::Error&) {
      return false;
    }
    for (int64_t j = 0; j < N; ++j)
      if (c[j] != 5.0f * j) return false;
    return true;
  }();
  return supported;
#else
  return false;
#endif
}

// The process-wide switch (ops.cpp's use_bf16_dot): on by default where supported, so the
// tests can run both paths on one machine and compare them.
inline std::atomic<bool>& bf16_dot_wanted() {
  static std::atomic<bool> wanted{true};
  return wanted;
}

// brgemm runs bfloat16 only while torch's oneDNN is enabled (torch.backends.mkldnn.enabled).
inline bool bf16_dot() {
  return bf16_dot_wanted().load() && at::globalContext().userEnabledMkldnn() &&
         bf16_dot_supported();
}

}  // namespace lstmkit
