// Dot products of one quantized weight row with T activation rows at once (quant_native.cpp tiles with them).
//
// Each weight block is loaded and unpacked once and multiplied with T activation rows, so a batch of tokens
// (prefill, grouped MoE, batched decode) pays the unpacking once per block, as a repacked GEMM would, without
// repacking the memory-mapped weights. Integer products run in int8 -> int16 (vpmaddubsw) and are scaled per
// sub-block into int32 (vpdpwssd with AVX512-VNNI / AVX-VNNI, else vpmaddwd + vpaddd): the approach of ggml's
// x86 kernels. Written with 256-bit vectors: on AMD Zen 4 a 512-bit integer op is two 256-bit ones, and on Intel
// servers the 512-bit integer multiplies issue on one port where the 256-bit ones issue on two (512-bit versions
// measured 0.9x for Q4_K / Q5_K and 1.03-1.06x for Q6_K on a Sapphire Rapids VM: not worth a second copy); the
// same code is the AVX2 fallback. Without AVX2: a plain C++ path (dequantize, multiply). Large products run as
// bf16 GEMMs instead where the CPU has them (quant_gemm_bf16.h).

#pragma once

#include <vector>

#include "quant_blocks.h"

#if defined(__AVX2__) && defined(__FMA__)
#define Q3_AVX2 1
#include <immintrin.h>
#endif

namespace q3 {

#if defined(Q3_AVX2)

// acc + sum over pairs of int16 a*b, per int32 lane.
inline __m256i dpwssd(__m256i acc, __m256i a, __m256i b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpwssd_epi32(acc, a, b);
#elif defined(__AVXVNNI__)
  return _mm256_dpwssd_avx_epi32(acc, a, b);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

// acc + sum over groups of 4 of unsigned u8 * signed s8, per int32 lane (|products| < 2^15 in our uses).
inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(acc, u, s);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hsum(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i loadu(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// 32 bytes of 0x10 where bit i of the 32-bit word is set (Q5_0's fifth bits; ggml's bytes_from_bits_32).
inline __m256i fifth_bits(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
  bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_and_si256(_mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
}

// ---- K-quants x ActK -------------------------------------------------------------------------------------

// Q4_K and Q5_K share the layout of their low 4 bits and their scales; FIVE adds Q5_K's fifth bits (qh).
template <int T, bool FIVE, typename Block>
inline void dot_q45k(const Block* w, const ActK* const* a, int64_t nb, float* out) {
  __m256 acc[T];
  __m128 accm[T];
  for (int t = 0; t < T; ++t) { acc[t] = _mm256_setzero_ps(); accm[t] = _mm_setzero_ps(); }
  const __m256i m4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
  for (int64_t b = 0; b < nb; ++b) {
    const Block& x = w[b];
    uint8_t sc[8], mn[8];
    unpack_scales_k4(x.scales, sc, mn);
    const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn)));
    __m256i hb = _mm256_setzero_si256();
    if constexpr (FIVE) hb = loadu(reinterpret_cast<const BlockQ5K&>(x).qh);
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m256i q = loadu(x.qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, m4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if constexpr (FIVE) {  // bit 2c of qh[l] is the fifth bit of value 64c + l, bit 2c + 1 of 64c + 32 + l
        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hb, 2 * c), 4), bit4));
        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hb, 2 * c + 1), 4), bit4));
      }
      const __m256i s_lo = _mm256_set1_epi16(sc[2 * c]), s_hi = _mm256_set1_epi16(sc[2 * c + 1]);
      for (int t = 0; t < T; ++t) {
        const int8_t* xq = a[t][b].qs + 64 * c;
        isum[t] = dpwssd(isum[t], _mm256_maddubs_epi16(lo, loadu(xq)), s_lo);
        isum[t] = dpwssd(isum[t], _mm256_maddubs_epi16(hi, loadu(xq + 32)), s_hi);
      }
    }
    const float d = fp16_to_f32(x.d), dmin = fp16_to_f32(x.dmin);
    for (int t = 0; t < T; ++t) {
      const ActK& y = a[t][b];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * y.d), acc[t]);
      const __m128i pm = _mm_madd_epi16(mins, _mm_loadu_si128(reinterpret_cast<const __m128i*>(y.bsums32)));
      accm[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(pm), _mm_set1_ps(dmin * y.d), accm[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = hsum(acc[t]) - hsum(accm[t]);
}

// The 6-bit values (0..63) of a Q6_K block's values 128n + 32g .. 128n + 32g + 31 into q[g], g < 4 (n < 2).
inline void unpack_q6k(const BlockQ6K& x, int n, __m256i q[4]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x03);
  const __m256i ql0 = loadu(x.ql + 64 * n), ql1 = loadu(x.ql + 64 * n + 32), qh = loadu(x.qh + 32 * n);
  q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
  q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
}

template <int T>
inline void dot_q6k(const BlockQ6K* w, const ActK* const* a, int64_t nb, float* out) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ6K& x = w[b];
    __m256i isum[T];
    for (int t = 0; t < T; ++t) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n) {
      __m256i q[4];
      unpack_q6k(x, n, q);
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        // int16 lanes 0-7 hold values 0-15 of the group (scale 8n + 2g), lanes 8-15 values 16-31 (8n + 2g + 1)
        const __m256i s = _mm256_set_m128i(_mm_set1_epi16(x.scales[8 * n + 2 * g + 1]),
                                           _mm_set1_epi16(x.scales[8 * n + 2 * g]));
        for (int t = 0; t < T; ++t) {
          isum[t] = dpwssd(isum[t], _mm256_maddubs_epi16(q[g], loadu(a[t][b].qs + 128 * n + 32 * g)), s);
        }
      }
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales)));
    const float d = fp16_to_f32(x.d);
    for (int t = 0; t < T; ++t) {
      const ActK& y = a[t][b];
      // the values are q - 32: take 32 * sum over groups of scale * (sum of the group's activations) off
      const __m256i off = _mm256_madd_epi16(sc16, loadu(y.bsums16));
      const __m256i v = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(off, 5));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(d * y.d), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = hsum(acc[t]);
}

// ---- legacy 32-value formats x Act32 ------------------------------------------------------------------------

template <int T>
inline void dot_q8_0(const BlockQ8_0* w, const Act32* const* a, int64_t nb, float* out) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const __m256i q = loadu(w[b].qs);
    const __m256i aq = _mm256_sign_epi8(q, q);  // |q|, with q's sign moved onto the activations
    const float d = fp16_to_f32(w[b].d);
    for (int t = 0; t < T; ++t) {
      const __m256i p = dpbusd(_mm256_setzero_si256(), aq, _mm256_sign_epi8(loadu(a[t][b].qs), q));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a[t][b].d), acc[t]);
    }
  }
  for (int t = 0; t < T; ++t) out[t] = hsum(acc[t]);
}

// Q4_0 (FIVE false: q - 8) and Q5_0 (FIVE true: q - 16 with the fifth bits from qh).
template <int T, bool FIVE, typename Block>
inline void dot_q45_0(const Block* w, const Act32* const* a, int64_t nb, float* out) {
  __m256 acc[T];
  float corr[T];
  for (int t = 0; t < T; ++t) { acc[t] = _mm256_setzero_ps(); corr[t] = 0.f; }
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  constexpr float kOffset = FIVE ? 16.f : 8.f;
  for (int64_t b = 0; b < nb; ++b) {
    const Block& x = w[b];
    const __m128i qq = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qs));
    __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qq, 4), qq), m4);
    if constexpr (FIVE) q = _mm256_or_si256(q, fifth_bits(reinterpret_cast<const BlockQ5_0&>(x).qh));
    const float d = fp16_to_f32(x.d);
    for (int t = 0; t < T; ++t) {
      const Act32& y = a[t][b];
      const float s = d * y.d;
      const __m256i p = dpbusd(_mm256_setzero_si256(), q, loadu(y.qs));
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s), acc[t]);
      corr[t] += s * (float)y.sum;
    }
  }
  for (int t = 0; t < T; ++t) out[t] = hsum(acc[t]) - kOffset * corr[t];
}

// ---- float formats x float activations ---------------------------------------------------------------------

template <int TYPE>
inline __m256 load8(const uint8_t* w, int64_t k) {
  if constexpr (TYPE == kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(w) + k);
  } else if constexpr (TYPE == kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * k)));
  } else {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2 * k)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
  }
}

template <int T, int TYPE>
inline void dot_float(const uint8_t* w, const float* const* a, int64_t cols, float* out) {
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= cols; k += 8) {
    const __m256 wv = load8<TYPE>(w, k);
    for (int t = 0; t < T; ++t) acc[t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a[t] + k), acc[t]);
  }
  for (int t = 0; t < T; ++t) {
    float s = hsum(acc[t]);
    for (int64_t j = k; j < cols; ++j) {
      float wj;
      dequant_row(TYPE, w + (int64_t)block_bytes(TYPE) * j, 1, &wj);
      s += wj * a[t][j];
    }
    out[t] = s;
  }
}

#endif  // Q3_AVX2

// ---- portable path (no AVX2) and dispatch ---------------------------------------------------------------------

// An activation row back to floats (the values the integer kernels multiply with).
inline void act_to_float(ActFormat fmt, const uint8_t* a, int64_t cols, float* y) {
  if (fmt == kActK) {
    const ActK* blocks = reinterpret_cast<const ActK*>(a);
    for (int64_t i = 0; i < cols; ++i) y[i] = blocks[i / kQK].qs[i % kQK] * blocks[i / kQK].d;
  } else if (fmt == kAct32) {
    const Act32* blocks = reinterpret_cast<const Act32*>(a);
    for (int64_t i = 0; i < cols; ++i) y[i] = blocks[i / kQ32].qs[i % kQ32] * blocks[i / kQ32].d;
  } else {
    std::memcpy(y, a, cols * sizeof(float));
  }
}

// The same products without SIMD: dequantize the row and the activations, multiply in float.
inline void dot_rows_generic(int type, const uint8_t* w, const uint8_t* const* a, int64_t cols, int T, float* out) {
  thread_local std::vector<float> wf, af;
  wf.resize(cols);
  af.resize(cols);
  dequant_row(type, w, cols, wf.data());
  for (int t = 0; t < T; ++t) {
    act_to_float(act_format(type), a[t], cols, af.data());
    float s = 0.f;
    for (int64_t i = 0; i < cols; ++i) s += wf[i] * af[i];
    out[t] = s;
  }
}

// out[t] = weight row `w` (cols values of `type`) . activation row a[t] (in act_format(type)), t < T.
template <int T>
inline void dot_rows(int type, const uint8_t* w, const uint8_t* const* a, int64_t cols, float* out) {
#if defined(Q3_AVX2)
  switch (type) {
    case kQ4_K:
      return dot_q45k<T, false>(reinterpret_cast<const BlockQ4K*>(w), reinterpret_cast<const ActK* const*>(a), cols / kQK, out);
    case kQ5_K:
      return dot_q45k<T, true>(reinterpret_cast<const BlockQ5K*>(w), reinterpret_cast<const ActK* const*>(a), cols / kQK, out);
    case kQ6_K:
      return dot_q6k<T>(reinterpret_cast<const BlockQ6K*>(w), reinterpret_cast<const ActK* const*>(a), cols / kQK, out);
    case kQ8_0:
      return dot_q8_0<T>(reinterpret_cast<const BlockQ8_0*>(w), reinterpret_cast<const Act32* const*>(a), cols / kQ32, out);
    case kQ4_0:
      return dot_q45_0<T, false>(reinterpret_cast<const BlockQ4_0*>(w), reinterpret_cast<const Act32* const*>(a), cols / kQ32, out);
    case kQ5_0:
      return dot_q45_0<T, true>(reinterpret_cast<const BlockQ5_0*>(w), reinterpret_cast<const Act32* const*>(a), cols / kQ32, out);
    case kF32: return dot_float<T, kF32>(w, reinterpret_cast<const float* const*>(a), cols, out);
    case kF16: return dot_float<T, kF16>(w, reinterpret_cast<const float* const*>(a), cols, out);
    case kBF16: return dot_float<T, kBF16>(w, reinterpret_cast<const float* const*>(a), cols, out);
    default: break;
  }
#endif
  dot_rows_generic(type, w, a, cols, T, out);
}

}  // namespace q3
