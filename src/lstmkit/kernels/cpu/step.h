// One step of a plain LSTM layer for a few rows: the single-stream fast path.
//
// At batch 1 a step is one matrix-vector product over all the layer's weights and a little gate
// math, and at large H the product is bound by the bytes it reads (4H (I+H) weights: 4.7 MB in
// float32 at I=64, H=512). So the weights are packed once, optionally in float16 (half the
// bytes) or int8 (a quarter), in panels the product streams through; the state and every sum
// stay float32.
//
// Shapes (legend in common.h): x (B, I); h, c (B, H); packed weights (NP, I + H, 64): panel p
// holds the 64 gate rows 64p..64p+63 of [W_ih | W_hh] (4H, I + H), transposed, zero past 4H;
// bias (4H) = b_ih + b_hh. Gates in torch's order i, f, g, o. int8 weights come with their
// row scales (2, NP * 64), one row for W_ih's and one for W_hh's (dynamic quantisation's, per
// output row of each matrix): a gate's sum over x is scaled by the first, over h by the
// second, so the step computes the float step of the dequantised weights.
//
// The product has an AVX2/FMA/F16C kernel chosen at run time (the build is -march=native, but
// the kernel asks the CPU, so the same code is right on any x86-64) and a portable loop for a
// CPU without those instructions or another architecture; both sum in the same order.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LSTMKIT_STEP_X86 1
#endif

#include "common.h"

namespace lstmkit {

constexpr int64_t kStepPanel = 64;  // gate rows per panel: 8 AVX2 registers of sums

// IEEE half -> float, for the portable loop (F16C does it in hardware).
inline float half_to_float(uint16_t bits) {
  const uint32_t sign = uint32_t(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (mantissa << 13);  // inf, NaN
  } else if (exponent != 0) {
    out = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    out = sign;
  } else {  // subnormal: normalise
    exponent = 113;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --exponent;
    }
    out = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &out, sizeof f);
  return f;
}

inline float weight_value(float w) { return w; }
inline float weight_value(uint16_t w) { return half_to_float(w); }
inline float weight_value(int8_t w) { return static_cast<float>(w); }

// Row scales of int8 weights: z = sx * (sum over k < split) + sh * (sum over k >= split) per
// gate row (split = I); null for float weights, whose z is the one sum over k.
struct StepScales {
  const float* sx = nullptr;
  const float* sh = nullptr;
  int64_t split = 0;
};

// z (NP * 64) = xh (K) times the packed weights (NP, K, 64): every sum runs over k in order.
template <typename W>
void step_product_portable(const W* packed, const float* xh, int64_t K, int64_t panels,
                           float* z, StepScales scales) {
  const int64_t split = scales.sx ? scales.split : K;
  for (int64_t p = 0; p < panels; ++p) {
    float acc[kStepPanel] = {}, first[kStepPanel] = {};
    const W* panel = packed + p * K * kStepPanel;
    for (int64_t k = 0; k < K; ++k) {
      if (k == split) {
        for (int64_t j = 0; j < kStepPanel; ++j) first[j] = acc[j], acc[j] = 0.0f;
      }
      const W* row = panel + k * kStepPanel;
      for (int64_t j = 0; j < kStepPanel; ++j) acc[j] += weight_value(row[j]) * xh[k];
    }
    float* out = z + p * kStepPanel;
    if (!scales.sx) {
      std::memcpy(out, acc, sizeof acc);
      continue;
    }
    const float *sx = scales.sx + p * kStepPanel, *sh = scales.sh + p * kStepPanel;
    for (int64_t j = 0; j < kStepPanel; ++j) out[j] = sx[j] * first[j] + sh[j] * acc[j];
  }
}

#ifdef LSTMKIT_STEP_X86
__attribute__((target("avx2,fma"))) inline __m256 load8(const float* w) {
  return _mm256_loadu_ps(w);
}
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const uint16_t* w) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
}
__attribute__((target("avx2,fma"))) inline __m256 load8(const int8_t* w) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w))));
}

// a[0..7] += the panel's rows k0..k1 times xh, eight lanes at a time.
template <typename W>
__attribute__((target("avx2,fma,f16c"))) inline void panel_sums(const W* panel, const float* xh,
                                                                int64_t k0, int64_t k1,
                                                                __m256* a) {
  __m256 a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5], a6 = a[6], a7 = a[7];
  const W* row = panel + k0 * kStepPanel;
  for (int64_t k = k0; k < k1; ++k, row += kStepPanel) {
    const __m256 x = _mm256_broadcast_ss(xh + k);
    a0 = _mm256_fmadd_ps(load8(row), x, a0);
    a1 = _mm256_fmadd_ps(load8(row + 8), x, a1);
    a2 = _mm256_fmadd_ps(load8(row + 16), x, a2);
    a3 = _mm256_fmadd_ps(load8(row + 24), x, a3);
    a4 = _mm256_fmadd_ps(load8(row + 32), x, a4);
    a5 = _mm256_fmadd_ps(load8(row + 40), x, a5);
    a6 = _mm256_fmadd_ps(load8(row + 48), x, a6);
    a7 = _mm256_fmadd_ps(load8(row + 56), x, a7);
  }
  a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3, a[4] = a4, a[5] = a5, a[6] = a6, a[7] = a7;
}

// The same sums, eight lanes at a time; FMA rounds once where the portable loop rounds twice,
// so the two agree to float32 rounding, not bit for bit.
template <typename W>
__attribute__((target("avx2,fma,f16c"))) void step_product_avx2(const W* packed, const float* xh,
                                                                 int64_t K, int64_t panels,
                                                                 float* z, StepScales scales) {
  for (int64_t p = 0; p < panels; ++p) {
    __m256 a[8], first[8];
    for (auto& v : a) v = _mm256_setzero_ps();
    const W* panel = packed + p * K * kStepPanel;
    float* out = z + p * kStepPanel;
    if (!scales.sx) {
      panel_sums(panel, xh, 0, K, a);
      for (int j = 0; j < 8; ++j) _mm256_storeu_ps(out + 8 * j, a[j]);
      continue;
    }
    panel_sums(panel, xh, 0, scales.split, a);
    const float *sx = scales.sx + p * kStepPanel, *sh = scales.sh + p * kStepPanel;
    for (int j = 0; j < 8; ++j) {
      first[j] = _mm256_mul_ps(_mm256_loadu_ps(sx + 8 * j), a[j]);
      a[j] = _mm256_setzero_ps();
    }
    panel_sums(panel, xh, scales.split, K, a);
    for (int j = 0; j < 8; ++j)
      _mm256_storeu_ps(out + 8 * j, _mm256_fmadd_ps(_mm256_loadu_ps(sh + 8 * j), a[j], first[j]));
  }
}
#endif

// Which product this CPU runs: "avx2" or "portable". The AVX2 product is compiled for AVX2, FMA
// and F16C whatever the weights' type (one target attribute), so it needs all three for every
// type: the compiler may use any instruction the target enables.
inline const char* step_isa() {
#ifdef LSTMKIT_STEP_X86
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           __builtin_cpu_supports("f16c");
  if (avx2) return "avx2";
#endif
  return "portable";
}

template <typename W>
void step_product(const W* packed, const float* xh, int64_t K, int64_t panels, float* z,
                  StepScales scales, bool portable) {
#ifdef LSTMKIT_STEP_X86
  if (!portable && std::strcmp(step_isa(), "avx2") == 0)
    return step_product_avx2(packed, xh, K, panels, z, scales);
#endif
  step_product_portable(packed, xh, K, panels, z, scales);
}

// rows x rows of (I), h, c rows (H) -> h_out, c_out (each may be its input: a row's product
// is taken before its state is written).
template <typename W>
void lstm_step_rows(const W* packed, StepScales scales, const float* bias, int64_t rows,
                    int64_t I, int64_t H, const float* x, const float* h, const float* c,
                    float* h_out, float* c_out, bool portable) {
  const int64_t K = I + H, G = 4 * H, panels = (G + kStepPanel - 1) / kStepPanel;
  std::vector<float> xh(K), z(panels * kStepPanel);
  for (int64_t b = 0; b < rows; ++b) {
    std::memcpy(xh.data(), x + b * I, I * sizeof(float));
    std::memcpy(xh.data() + I, h + b * H, H * sizeof(float));
    step_product(packed, xh.data(), K, panels, z.data(), scales, portable);
    float* a = z.data();
    const float* cp = c + b * H;
    float *cn = c_out + b * H, *hn = h_out + b * H;
    LSTMKIT_ELEMENTWISE
    for (int64_t j = 0; j < H; ++j) {
      const float i = vsigmoid(a[j] + bias[j]), f = vsigmoid(a[H + j] + bias[H + j]);
      const float g = vtanh(a[2 * H + j] + bias[2 * H + j]);
      const float o = vsigmoid(a[3 * H + j] + bias[3 * H + j]);
      const float cj = f * cp[j] + i * g;
      cn[j] = cj;
      hn[j] = o * vtanh(cj);
    }
  }
}

}  // namespace lstmkit
