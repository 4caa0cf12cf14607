// Large quantized products (prefill, well-filled MoE experts) as bf16 GEMMs on oneDNN's brgemm micro-kernels.
//
// With many activation rows per weight row, the int8 dot products (quant_dot.h) are bound by their multiply
// throughput (~45 G multiply-adds/s per core with AVX-512 VNNI). CPUs with AMX or AVX512-BF16 multiply bf16
// several times faster, so for M >= min_rows the weight rows of a job are dequantized once into a small
// per-thread bf16 buffer (VNNI-packed: [K/2][N][2], as the micro-kernel reads it) and multiplied with the
// activations in bf16, accumulated and written in float32 (at::native::cpublas::brgemm, the oneDNN ukernel
// torch's own CPU attention uses; quant_native.py asks Linux for the AMX state first). The weights stay
// quantized in the mapped file: only one job's rows (<= 64) exist in bf16 at a time.
//
// Accuracy: the weights' values rounded to bf16 and the activations rounded to bf16 (8 significant bits, each
// value on its own) instead of int8 per 256-value block: no block-wide loss for rows with outliers, and
// 0.34-0.53x llama.cpp's mean log-probability error on the same files (benchmarks/gguf_accuracy.py).
//
// Whether a CPU may run it is decided in Python (quant_native.py: CPU flags, then a self-test in a child
// process, since a hypervisor can advertise instructions it does not run); set_bf16_gemm turns it on.

#pragma once

#include <ATen/native/CPUBlas.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "quant_dot.h"

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define Q3_BF16_FAST 1  // the weights' packing runs vectorized; without it the bf16 path stays off
#include <immintrin.h>
#endif

namespace q3 {

using bf16 = c10::BFloat16;

struct Bf16Gemm {
  std::atomic<bool> enabled{false};
  std::atomic<int64_t> min_rows{16};
};

inline Bf16Gemm& bf16_gemm() {
  static Bf16Gemm g;
  return g;
}

// Whether a product with `m` activation rows runs in bf16 (quantized weights only: float weights keep their
// exact float path).
inline bool use_bf16(int type, int64_t m) {
  const Bf16Gemm& g = bf16_gemm();
  return act_format(type) != kActF32 && g.enabled.load(std::memory_order_relaxed) &&
         m >= g.min_rows.load(std::memory_order_relaxed);
}

constexpr int64_t kBfRows = 64;    // weight rows per dequantized buffer (the GEMM's N)
constexpr int64_t kBfMChunk = 32;  // activation rows per micro-kernel call: few distinct kernel shapes

#if defined(Q3_BF16_FAST)
// 32 values q[i] * s + b (s, b: s0, b0 for the first 16, s1, b1 for the next), rounded to bf16 pairs and
// scattered to 16 pair slots `where` (uint32 offsets) from dst.
inline void put32(__m256i q, float s0, float b0, float s1, float b1, uint32_t* dst, __m512i where) {
  const __m512 f0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(q)));
  const __m512 f1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(q, 1)));
  const __m512 w0 = _mm512_fmadd_ps(f0, _mm512_set1_ps(s0), _mm512_set1_ps(b0));
  const __m512 w1 = _mm512_fmadd_ps(f1, _mm512_set1_ps(s1), _mm512_set1_ps(b1));
  _mm512_i32scatter_epi32(dst, where, (__m512i)_mm512_cvtne2ps_pbh(w1, w0), 4);
}

// One 256-value block of Q4_K / Q5_K / Q6_K into bf16 pair slots (dst: its first pair; pairs n apart). False
// for other types (the caller decodes those through floats).
inline bool block_to_vnni(int type, const uint8_t* blk, uint32_t* dst, int64_t n, __m512i where) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if (type == kQ4_K || type == kQ5_K) {
    const bool five = type == kQ5_K;
    const BlockQ4K& x4 = *reinterpret_cast<const BlockQ4K*>(blk);
    const BlockQ5K& x5 = *reinterpret_cast<const BlockQ5K*>(blk);
    const uint16_t dh = five ? x5.d : x4.d, mh = five ? x5.dmin : x4.dmin;
    const uint8_t* scales = five ? x5.scales : x4.scales;
    const uint8_t* qs = five ? x5.qs : x4.qs;
    uint8_t sc[8], mn[8];
    unpack_scales_k4(scales, sc, mn);
    const float d = fp16_to_f32(dh), dmin = fp16_to_f32(mh);
    const __m256i hb = five ? loadu(x5.qh) : _mm256_setzero_si256(), bit4 = _mm256_set1_epi8(0x10);
    for (int c = 0; c < 4; ++c) {
      const __m256i q = loadu(qs + 32 * c);
      __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      if (five) {
        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hb, 2 * c), 4), bit4));
        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(hb, 2 * c + 1), 4), bit4));
      }
      const float s0 = d * sc[2 * c], b0 = -dmin * mn[2 * c], s1 = d * sc[2 * c + 1], b1 = -dmin * mn[2 * c + 1];
      put32(lo, s0, b0, s0, b0, dst + (32 * c) * n, where);
      put32(hi, s1, b1, s1, b1, dst + (32 * c + 16) * n, where);
    }
    return true;
  }
  if (type == kQ6_K) {
    const BlockQ6K& x = *reinterpret_cast<const BlockQ6K*>(blk);
    const float d = fp16_to_f32(x.d);
    for (int h = 0; h < 2; ++h) {
      __m256i q[4];
      unpack_q6k(x, h, q);
      for (int g = 0; g < 4; ++g) {
        const float s0 = d * x.scales[8 * h + 2 * g], s1 = d * x.scales[8 * h + 2 * g + 1];
        put32(q[g], s0, -32.f * s0, s1, -32.f * s1, dst + (64 * h + 16 * g) * n, where);
      }
    }
    return true;
  }
  return false;
}
#endif

// Rows [r0, r1) of a [rows, K] quantized matrix (rows of row_bytes at w) into out, VNNI-packed bf16:
// out[((k / 2) * n + j) * 2 + k % 2] = w[r0 + j][k], n = r1 - r0. K is whole blocks (of 256 values for the
// K-quants, 32 for the others). Up to 256 values of a row at a time, rounded to bf16 pairs 32 values at a time
// and scattered to their pairs' places; the loop runs over 256-column strips, rows inside, so a strip's stores
// (n x 512 bytes) stay in L1. Q4_K / Q5_K / Q6_K decode in vectors; the other types through floats.
inline void dequant_vnni(int type, const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, int64_t K,
                         bf16* out) {
  const int64_t n = r1 - r0;
  const int64_t per_block = block_values(type), strip_bytes = (int64_t)kQK / per_block * block_bytes(type);
  alignas(64) float vals[kQK];
#if defined(Q3_BF16_FAST)
  const __m512i where = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)n));
#endif
  for (int64_t k0 = 0; k0 < K; k0 += kQK) {
    const int64_t cnt = std::min<int64_t>(kQK, K - k0);  // < 256 only for 32-value blocks
    const uint8_t* src = w + r0 * row_bytes + k0 / kQK * strip_bytes;
    for (int64_t j = 0; j < n; ++j, src += row_bytes) {
      uint32_t* dst = reinterpret_cast<uint32_t*>(out) + (k0 / 2) * n + j;  // pair k0 / 2 of row j
#if defined(Q3_BF16_FAST)
      if (per_block == kQK && block_to_vnni(type, src, dst, n, where)) continue;
      dequant_row(type, src, cnt, vals);
      for (int i = 0; i < cnt; i += 32, dst += 16 * n) {
        const __m512bh pairs = _mm512_cvtne2ps_pbh(_mm512_load_ps(vals + i + 16), _mm512_load_ps(vals + i));
        _mm512_i32scatter_epi32(dst, where, (__m512i)pairs, 4);
      }
#else
      dequant_row(type, src, cnt, vals);
      for (int i = 0; i < cnt; i += 2, dst += n) {
        const uint32_t lo = bf16(vals[i]).x, hi = bf16(vals[i + 1]).x;
        *dst = lo | (hi << 16);
      }
#endif
    }
  }
}

// Float rows to bf16 (round to nearest even, as c10::BFloat16 and the GEMM's own conversions do): M rows of K
// values (K a multiple of 32), the source rows ld_x apart.
inline void rows_to_bf16(const float* x, int64_t M, int64_t K, int64_t ld_x, bf16* out) {
  for (int64_t m = 0; m < M; ++m) {
    const float* src = x + m * ld_x;
    bf16* dst = out + m * K;
#if defined(Q3_BF16_FAST)
    for (int64_t k = 0; k < K; k += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + k + 16), _mm512_loadu_ps(src + k));
      _mm512_storeu_si512(dst + k, (__m512i)v);
    }
#else
    for (int64_t k = 0; k < K; ++k) dst[k] = bf16(src[k]);
#endif
  }
}

// A grow-only scratch buffer of T (uninitialised): a step's activations reuse the last step's pages instead of
// faulting in fresh ones.
template <typename T>
struct Scratch {
  std::unique_ptr<T[]> data;
  size_t size = 0;
  T* get(size_t n) {
    if (n > size) data.reset(new T[n]), size = n;
    return data.get();
  }
};

// C[M, n] = A[M, K] (bf16 rows) x B (VNNI-packed [K, n]), C's rows ld_c apart: micro-kernel calls of
// kBfMChunk rows. The caller releases the hardware context (release_bf16) when its job is done.
inline void gemm_bf16(const bf16* A, int64_t M, int64_t K, const bf16* B, int64_t n, float* C, int64_t ld_c) {
  for (int64_t m = 0; m < M; m += kBfMChunk) {
    const int64_t mm = std::min(kBfMChunk, M - m);
    at::native::cpublas::brgemm(mm, n, K, K, n, ld_c, false, A + m * K, B, C + m * ld_c, true);
  }
}

inline void release_bf16() { at::native::cpublas::brgemm_release(true); }

}  // namespace q3
