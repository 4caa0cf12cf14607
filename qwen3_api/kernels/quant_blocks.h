// GGUF (ggml) quantized block formats, their scalar dequantization, and the int8 activation blocks the dot
// kernels (quant_dot.h) multiply them with.
//
// The weight blocks are byte-for-byte ggml's (ggml-common.h), read in place from the memory-mapped file: the
// model is never copied or repacked. Activations are quantized per row the way llama.cpp does it, so the error
// this adds is of the same kind and size as llama.cpp's: 256 values per int8 block with one float scale for the
// K-quants (ggml's Q8_K), 32 per block for Q4_0 / Q5_0 / Q8_0 (ggml's Q8_0, with a float scale).

#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace q3 {

constexpr int kQK = 256;  // values per K-quant block (QK_K)
constexpr int kQ32 = 32;  // values per legacy block (QK8_0, QK4_0, QK5_0)

// ggml type ids (ggml.h: enum ggml_type), the ones this server reads.
enum GgmlType : int {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ5_0 = 6, kQ8_0 = 8, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30,
};

struct BlockQ4K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
static_assert(sizeof(BlockQ4K) == 144 && sizeof(BlockQ5K) == 176 && sizeof(BlockQ6K) == 210, "K-quant sizes");
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ5_0) == 22, "legacy sizes");

// One activation row quantized for the K-quants: 256 int8 values, their sums per 16 (Q6_K's sub-blocks) and
// per 32 (Q4_K / Q5_K's), and the float scale.
struct ActK { int8_t qs[kQK]; int16_t bsums16[16]; int16_t bsums32[8]; float d; };
// ... and for the legacy 32-value formats: values, scale, sum of the values (for the formats' zero offsets).
struct Act32 { int8_t qs[kQ32]; float d; int32_t sum; };

// Which activation format a weight type multiplies with.
enum ActFormat : int { kActK = 0, kAct32 = 1, kActF32 = 2 };

inline ActFormat act_format(int type) {
  switch (type) {
    case kQ4_K: case kQ5_K: case kQ6_K: return kActK;
    case kQ4_0: case kQ5_0: case kQ8_0: return kAct32;
    default: return kActF32;
  }
}

// Values per block and bytes per block of a weight type (0 for an unknown type).
inline int block_values(int type) {
  switch (type) {
    case kQ4_K: case kQ5_K: case kQ6_K: return kQK;
    case kQ4_0: case kQ5_0: case kQ8_0: return kQ32;
    case kF32: case kF16: case kBF16: return 1;
    default: return 0;
  }
}

inline int block_bytes(int type) {
  switch (type) {
    case kQ4_K: return sizeof(BlockQ4K);
    case kQ5_K: return sizeof(BlockQ5K);
    case kQ6_K: return sizeof(BlockQ6K);
    case kQ4_0: return sizeof(BlockQ4_0);
    case kQ5_0: return sizeof(BlockQ5_0);
    case kQ8_0: return sizeof(BlockQ8_0);
    case kF32: return 4;
    case kF16: case kBF16: return 2;
    default: return 0;
  }
}

inline size_t act_row_bytes(ActFormat fmt, int64_t cols) {
  switch (fmt) {
    case kActK: return sizeof(ActK) * (cols / kQK);
    case kAct32: return sizeof(Act32) * (cols / kQ32);
    default: return sizeof(float) * cols;
  }
}

__attribute__((always_inline)) inline float fp16_to_f32(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) { mant <<= 1; --exp; }
      bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

inline float bf16_to_f32(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K block (ggml's get_scale_min_k4).
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// All 8 scales and 8 mins of a Q4_K / Q5_K block at once (ggml's kmask trick on 32-bit words).
__attribute__((always_inline)) inline void unpack_scales_k4(const uint8_t* scales, uint8_t* sc, uint8_t* mn) {
  uint32_t u[4];
  std::memcpy(u, scales, 12);
  const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
  u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
  const uint32_t mins_lo = u[1] & k1;
  u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
  u[0] &= k1;
  // u[0], u[1]: the 8 scales; mins_lo, u[3]: the 8 mins
  std::memcpy(sc, &u[0], 4);
  std::memcpy(sc + 4, &u[1], 4);
  std::memcpy(mn, &mins_lo, 4);
  std::memcpy(mn + 4, &u[3], 4);
}

// ---- scalar dequantization of one row of `cols` values (tests, embeddings, small tensors) -------------------

inline void dequant_row(int type, const uint8_t* src, int64_t cols, float* y) {
  switch (type) {
    case kF32: std::memcpy(y, src, cols * 4); return;
    case kF16: for (int64_t i = 0; i < cols; ++i) { uint16_t h; std::memcpy(&h, src + 2 * i, 2); y[i] = fp16_to_f32(h); } return;
    case kBF16: for (int64_t i = 0; i < cols; ++i) { uint16_t h; std::memcpy(&h, src + 2 * i, 2); y[i] = bf16_to_f32(h); } return;
    default: break;
  }
  const int64_t nb = cols / block_values(type);
  for (int64_t b = 0; b < nb; ++b) {
    switch (type) {
      case kQ4_K: {
        const BlockQ4K& x = reinterpret_cast<const BlockQ4K*>(src)[b];
        const float d = fp16_to_f32(x.d), dmin = fp16_to_f32(x.dmin);
        const uint8_t* q = x.qs;
        for (int j = 0; j < kQK; j += 64, q += 32) {
          uint8_t sc, m;
          scale_min_k4(j / 32, x.scales, &sc, &m);
          const float d1 = d * sc, m1 = dmin * m;
          scale_min_k4(j / 32 + 1, x.scales, &sc, &m);
          const float d2 = d * sc, m2 = dmin * m;
          for (int l = 0; l < 32; ++l) y[j + l] = d1 * (q[l] & 0xF) - m1;
          for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * (q[l] >> 4) - m2;
        }
        break;
      }
      case kQ5_K: {
        const BlockQ5K& x = reinterpret_cast<const BlockQ5K*>(src)[b];
        const float d = fp16_to_f32(x.d), dmin = fp16_to_f32(x.dmin);
        const uint8_t* q = x.qs;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < kQK; j += 64, q += 32, u1 <<= 2, u2 <<= 2) {
          uint8_t sc, m;
          scale_min_k4(j / 32, x.scales, &sc, &m);
          const float d1 = d * sc, m1 = dmin * m;
          scale_min_k4(j / 32 + 1, x.scales, &sc, &m);
          const float d2 = d * sc, m2 = dmin * m;
          for (int l = 0; l < 32; ++l) y[j + l] = d1 * ((q[l] & 0xF) + (x.qh[l] & u1 ? 16 : 0)) - m1;
          for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * ((q[l] >> 4) + (x.qh[l] & u2 ? 16 : 0)) - m2;
        }
        break;
      }
      case kQ6_K: {
        const BlockQ6K& x = reinterpret_cast<const BlockQ6K*>(src)[b];
        const float d = fp16_to_f32(x.d);
        for (int n = 0; n < 2; ++n) {
          const uint8_t* ql = x.ql + 64 * n;
          const uint8_t* qh = x.qh + 32 * n;
          const int8_t* sc = x.scales + 8 * n;
          float* yy = y + 128 * n;
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            yy[l] = d * sc[is] * ((int)((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
            yy[l + 32] = d * sc[is + 2] * ((int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            yy[l + 64] = d * sc[is + 4] * ((int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            yy[l + 96] = d * sc[is + 6] * ((int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
          }
        }
        break;
      }
      case kQ8_0: {
        const BlockQ8_0& x = reinterpret_cast<const BlockQ8_0*>(src)[b];
        const float d = fp16_to_f32(x.d);
        for (int l = 0; l < 32; ++l) y[l] = d * x.qs[l];
        break;
      }
      case kQ4_0: {
        const BlockQ4_0& x = reinterpret_cast<const BlockQ4_0*>(src)[b];
        const float d = fp16_to_f32(x.d);
        for (int l = 0; l < 16; ++l) {
          y[l] = d * ((x.qs[l] & 0xF) - 8);
          y[l + 16] = d * ((x.qs[l] >> 4) - 8);
        }
        break;
      }
      case kQ5_0: {
        const BlockQ5_0& x = reinterpret_cast<const BlockQ5_0*>(src)[b];
        const float d = fp16_to_f32(x.d);
        uint32_t qh;
        std::memcpy(&qh, x.qh, 4);
        for (int l = 0; l < 16; ++l) {
          const int h0 = ((qh >> l) << 4) & 0x10, h1 = (qh >> (l + 12)) & 0x10;
          y[l] = d * (((x.qs[l] & 0xF) | h0) - 16);
          y[l + 16] = d * (((x.qs[l] >> 4) | h1) - 16);
        }
        break;
      }
      default: break;
    }
    y += block_values(type);
  }
}

// ---- activation quantization (one row of `cols` float values) ---------------------------------------------

#if defined(__AVX2__)
// The largest |x[i]|, i < n (n a multiple of 8).
inline float abs_max(const float* x, int n) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

// q[i] = round-to-nearest-even(x[i] * id), i < n (n a multiple of 32): what nearbyint gives, 32 at a time.
inline void round_to_int8(const float* x, float id, int n, int8_t* q) {
  const __m256 s = _mm256_set1_ps(id);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the packs' lane interleave
  for (int i = 0; i < n; i += 32) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), s));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), s));
    const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), s));
    const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), s));
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(p, order));
  }
}
#else
inline float abs_max(const float* x, int n) {
  float amax = 0.f;
  for (int i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  return amax;
}

inline void round_to_int8(const float* x, float id, int n, int8_t* q) {
  for (int i = 0; i < n; ++i) q[i] = (int8_t)std::nearbyint(x[i] * id);
}
#endif

inline void quantize_act_k(const float* x, int64_t cols, ActK* out) {
  for (int64_t b = 0; b < cols / kQK; ++b, x += kQK) {
    ActK& a = out[b];
    const float amax = abs_max(x, kQK);
    const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
    round_to_int8(x, id, kQK, a.qs);
    for (int g = 0; g < 16; ++g) {
      int s = 0;
      for (int i = 0; i < 16; ++i) s += a.qs[16 * g + i];
      a.bsums16[g] = (int16_t)s;
    }
    for (int j = 0; j < 8; ++j) a.bsums32[j] = (int16_t)(a.bsums16[2 * j] + a.bsums16[2 * j + 1]);
    a.d = d;
  }
}

inline void quantize_act_32(const float* x, int64_t cols, Act32* out) {
  for (int64_t b = 0; b < cols / kQ32; ++b, x += kQ32) {
    Act32& a = out[b];
    const float amax = abs_max(x, kQ32);
    const float d = amax / 127.f, id = amax > 0.f ? 127.f / amax : 0.f;
    round_to_int8(x, id, kQ32, a.qs);
    int s = 0;
    for (int i = 0; i < kQ32; ++i) s += a.qs[i];
    a.d = d;
    a.sum = s;
  }
}

// Quantize one row into the format `fmt` (kActF32: a plain copy).
inline void quantize_act_row(ActFormat fmt, const float* x, int64_t cols, uint8_t* out) {
  switch (fmt) {
    case kActK: quantize_act_k(x, cols, reinterpret_cast<ActK*>(out)); return;
    case kAct32: quantize_act_32(x, cols, reinterpret_cast<Act32*>(out)); return;
    default: std::memcpy(out, x, cols * sizeof(float)); return;
  }
}

}  // namespace q3
