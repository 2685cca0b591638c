// Integer products for int8 inference with int8 activations: each row of a product's left
// operand rounded to 7-bit unsigned integers at run time, its dots with the int8 weight rows
// summed exactly in int32, and the scales and the zero point applied once per dot.
//
// What is computed, for a row a (K) of a left operand and an int8 weight row q (K) of scale s:
//   lo = min(0, min_k a_k),  hi = max(0, max_k a_k),  s_a = (hi - lo) / 127 (1 if hi = lo),
//   z = round(-lo / s_a),  a_u = clamp(round(a / s_a) + z, 0, 127)   (round half to even),
//   a . W_n ~= (s_a * s_n) * (sum_k a_u[k] q[k] - z sum_k q[k]),
// so a ~= s_a (a_u - z): 128 levels spanning the row's range and zero (torch.ao's x86 dynamic
// quantisation rounds activations to the same 7 bits, fbgemm's reduce_range). A row holding a
// NaN or an infinity has s_a = NaN, so its products are NaN. The rounding is elementwise IEEE
// arithmetic, so torch computes the same a_u, z and s_a bit for bit (layers/quantized.py's
// specification does); the integer sums are exact, so the AVX2 and AVX-512 VNNI paths and the
// portable one return the same bits.
//
// Why 7 bits: AVX2's byte product (vpmaddubsw: unsigned by signed bytes, adjacent pairs summed
// in int16) saturates above 32767. With a_u <= 127 and any int8 weight a pair is at most
// 2 * 127 * 128 = 32512, so every sum is exact whatever the weights; 8-bit activations would
// need 7-bit weights (ONNX Runtime's reduce_range) or a sign instruction per product, which
// measured 1.8x slower here. Per 32 products of a weight row: the byte product, a pairwise add
// to int32 (vpmaddwd) and an add; float products of int8 weights take four instructions per
// eight (three to widen, a fused multiply-add).
//
// Shapes (legend in common.h): a (K) uint8; q (N, K) int8 row-major; dots and sums (N) int32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "step.h"  // LSTMKIT_STEP_X86, <immintrin.h>

namespace lstmkit {

// The most terms an int32 sum of these products holds exactly: K * 127 * 128 < 2^31.
constexpr int64_t kMaxIntegerTerms = (int64_t(1) << 31) / (127 * 128);

// A row's rounding: a ~= scale * (a_u - zero).
struct RowQuant {
  float scale;
  int32_t zero;
};

// a_u (K) = a (K) rounded as above.
inline RowQuant quantize_row(const float* a, int64_t K, uint8_t* a_u) {
  float lo = 0.0f, hi = 0.0f, poison = 0.0f;  // poison: NaN once a NaN or an infinity is seen
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(+ : poison)
  for (int64_t k = 0; k < K; ++k) {
    lo = std::min(lo, a[k]), hi = std::max(hi, a[k]);
    poison += a[k] * 0.0f;
  }
  if (std::isnan(poison)) {
    std::memset(a_u, 0, K);
    return {std::numeric_limits<float>::quiet_NaN(), 0};
  }
  const float s = hi > lo ? (hi - lo) / 127.0f : 1.0f, z = std::nearbyint(-lo / s);
  for (int64_t k = 0; k < K; ++k)
    a_u[k] = static_cast<uint8_t>(std::min(127.0f, std::max(0.0f, std::nearbyint(a[k] / s) + z)));
  return {s, static_cast<int32_t>(z)};
}

// dots[n] = sum_k a[k] q[n, k] for rows n0..n1.
inline void int8_dots_portable(const uint8_t* a, const int8_t* q, int64_t K, int64_t n0,
                               int64_t n1, int32_t* dots) {
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* row = q + n * K;
    int32_t sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += int32_t(a[k]) * int32_t(row[k]);
    dots[n] = sum;
  }
}

// dots[0..3] += the products of a[k0..K) with four consecutive rows from r0 (K apart): the
// tail of the vector loops below, past the last whole 32 bytes.
inline void tail_dots(const uint8_t* a, const int8_t* r0, int64_t K, int64_t k0, int32_t* dots) {
  for (int j = 0; j < 4; ++j)
    for (int64_t k = k0; k < K; ++k) dots[j] += int32_t(a[k]) * r0[j * K + k];
}

#ifdef LSTMKIT_STEP_X86
__attribute__((target("avx2"))) inline __m256i load32(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// Eight int32 partial sums of the 32 products of a's bytes with row's.
__attribute__((target("avx2"))) inline __m256i int8_sums32(__m256i a, const int8_t* row) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(a, load32(row)), _mm256_set1_epi16(1));
}

__attribute__((target("avx2"))) inline int32_t lane_total(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}

// The lane totals of four rows' sums, stored as four int32 (three horizontal adds in all).
__attribute__((target("avx2"))) inline void four_totals(__m256i s0, __m256i s1, __m256i s2,
                                                        __m256i s3, int32_t* out) {
  const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
  const __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), t);
}

// The same dots, four rows at a time sharing each load of a.
__attribute__((target("avx2"))) void int8_dots_avx2(const uint8_t* a, const int8_t* q, int64_t K,
                                                    int64_t n0, int64_t n1, int32_t* dots) {
  const int64_t K32 = K / 32 * 32;
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const int8_t *r0 = q + n * K, *r1 = r0 + K, *r2 = r1 + K, *r3 = r2 + K;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k < K32; k += 32) {
      const __m256i ak = load32(a + k);
      s0 = _mm256_add_epi32(s0, int8_sums32(ak, r0 + k));
      s1 = _mm256_add_epi32(s1, int8_sums32(ak, r1 + k));
      s2 = _mm256_add_epi32(s2, int8_sums32(ak, r2 + k));
      s3 = _mm256_add_epi32(s3, int8_sums32(ak, r3 + k));
    }
    four_totals(s0, s1, s2, s3, dots + n);
    tail_dots(a, r0, K, K32, dots + n);
  }
  for (; n < n1; ++n) {
    const int8_t* row = q + n * K;
    __m256i s = _mm256_setzero_si256();
    for (int64_t k = 0; k < K32; k += 32)
      s = _mm256_add_epi32(s, int8_sums32(load32(a + k), row + k));
    int32_t d = lane_total(s);
    for (int64_t k = K32; k < K; ++k) d += int32_t(a[k]) * row[k];
    dots[n] = d;
  }
}

// With AVX-512 VNNI (Xeon from Cascade Lake on), vpdpbusd sums each four byte products into an
// int32 lane in one instruction, without int16 in between: the same exact sums for four rows
// at a time, the remaining rows and the tail as above.
__attribute__((target("avx2,avx512vnni,avx512vl"))) void int8_dots_vnni(
    const uint8_t* a, const int8_t* q, int64_t K, int64_t n0, int64_t n1, int32_t* dots) {
  const int64_t K32 = K / 32 * 32;
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const int8_t *r0 = q + n * K, *r1 = r0 + K, *r2 = r1 + K, *r3 = r2 + K;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k < K32; k += 32) {
      const __m256i ak = load32(a + k);
      s0 = _mm256_dpbusd_epi32(s0, ak, load32(r0 + k));
      s1 = _mm256_dpbusd_epi32(s1, ak, load32(r1 + k));
      s2 = _mm256_dpbusd_epi32(s2, ak, load32(r2 + k));
      s3 = _mm256_dpbusd_epi32(s3, ak, load32(r3 + k));
    }
    four_totals(s0, s1, s2, s3, dots + n);
    tail_dots(a, r0, K, K32, dots + n);
  }
  if (n < n1) int8_dots_avx2(a, q, K, n, n1, dots);
}
#endif

// Which integer product this CPU runs: "avx512_vnni", "avx2" or "portable".
inline const char* int8_dot_isa() {
#ifdef LSTMKIT_STEP_X86
  static const char* isa = __builtin_cpu_supports("avx2")
                               ? (__builtin_cpu_supports("avx512vnni") &&
                                          __builtin_cpu_supports("avx512vl")
                                      ? "avx512_vnni"
                                      : "avx2")
                               : "portable";
  return isa;
#else
  return "portable";
#endif
}

inline void int8_dots(const uint8_t* a, const int8_t* q, int64_t K, int64_t n0, int64_t n1,
                      int32_t* dots, bool portable) {
#ifdef LSTMKIT_STEP_X86
  const char* isa = portable ? "portable" : int8_dot_isa();
  if (std::strcmp(isa, "avx512_vnni") == 0) return int8_dots_vnni(a, q, K, n0, n1, dots);
  if (std::strcmp(isa, "avx2") == 0) return int8_dots_avx2(a, q, K, n0, n1, dots);
#endif
  int8_dots_portable(a, q, K, n0, n1, dots);
}

// sums[n] = sum_k q[n, k] for rows n0..n1, what the zero point multiplies: the dots with ones
// (the compiler's own loop for this sum ran at a quarter of the dots' speed).
inline void row_sums(const int8_t* q, int64_t K, int64_t n0, int64_t n1, int32_t* sums,
                     bool portable) {
  const std::vector<uint8_t> ones(K, 1);
  int8_dots(ones.data(), q, K, n0, n1, sums, portable);
}

}  // namespace lstmkit
