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

// Whether this CPU has AVX-512 BF16 and torch's oneDNN ukernel runs bfloat16 here.
inline bool bf16_dot_supported() {
#if defined(__x86_64__)
  static const bool supported = __builtin_cpu_supports("avx512bf16") &&
                                at::native::cpublas::could_pack(at::kBFloat16);
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

inline bool bf16_dot() { return bf16_dot_wanted().load() && bf16_dot_supported(); }

}  // namespace lstmkit
