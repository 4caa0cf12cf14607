// Decode attention over the paged KV cache (cpu_native.cpp registers paged_decode).
//
// Per (sequence, KV head) job: scores of the G query heads that share the KV head, a softmax, the weighted
// sum of V. Both products keep a query head (or its output) in registers while 64-row tiles of the history,
// read in place in the cache, stay in L1 across the G heads.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_common.h"

namespace {

// exp(x) lane by lane for x <= 0 (a softmax's shifted scores), to ~2 ulp: x = n ln2 + r with |r| <= ln2/2,
// exp(r) by its degree-6 Taylor polynomial, times 2^n built in the exponent bits; below -87 it is 0.
inline vec exp_nonpositive(vec x) {
  typedef int32_t ivec __attribute__((vector_size(kLanes * sizeof(int32_t))));
  const vec lo = splat(-87.f);
  x = x < lo ? lo : x;
  const vec n = __builtin_convertvector(__builtin_convertvector(x * 1.44269504f - 0.5f, ivec), vec);
  const vec r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln2 split in two for an exact first step
  vec p = splat(1.f / 720);
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  ivec bits = (__builtin_convertvector(n, ivec) + 127) << 23;
  vec scale;
  std::memcpy(&scale, &bits, sizeof(vec));
  const vec out = p * scale;
  return x <= lo ? vec{} : out;
}

// out[t] = scale * q . rows[t] for a head of NV vectors: q stays in registers while the rows stream by.
template <int NV>
inline void dot_rows(const float* q, const float* const* rows, int64_t n, float scale, float* out) {
  vec qv[NV];
  for (int i = 0; i < NV; ++i) qv[i] = load(q + i * kLanes);
  for (int64_t t = 0; t < n; ++t) {
    vec sum = qv[0] * load(rows[t]);
    for (int i = 1; i < NV; ++i) sum += qv[i] * load(rows[t] + i * kLanes);
    out[t] = hsum(sum) * scale;
  }
}

// acc += sum_t p[t] * rows[t] for a head of NV vectors, the sums in registers (not a load and a store of acc
// per row and head).
template <int NV>
inline void weighted_rows(const float* const* rows, int64_t n, const float* p, float* acc) {
  vec a[NV];
  for (int i = 0; i < NV; ++i) a[i] = load(acc + i * kLanes);
  for (int64_t t = 0; t < n; ++t) {
    const vec pt = splat(p[t]);
    for (int i = 0; i < NV; ++i) a[i] += pt * load(rows[t] + i * kLanes);
  }
  for (int i = 0; i < NV; ++i) store(acc + i * kLanes, a[i]);
}

// Any head size: the same two steps, vectorized over the head where it can be.
inline void dot_rows_any(const float* q, const float* const* rows, int64_t n, int64_t D, float scale, float* out) {
  const int64_t Dv = D / kLanes * kLanes;
  for (int64_t t = 0; t < n; ++t) {
    vec sum = {};
    for (int64_t d = 0; d < Dv; d += kLanes) sum += load(q + d) * load(rows[t] + d);
    float dot = hsum(sum);
    for (int64_t d = Dv; d < D; ++d) dot += q[d] * rows[t][d];
    out[t] = dot * scale;
  }
}

inline void weighted_rows_any(const float* const* rows, int64_t n, int64_t D, const float* p, float* acc) {
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t d = 0; d < D; ++d) acc[d] += p[t] * rows[t][d];
  }
}

// One query token per sequence against its paged history: q [B, Hq, D], k_cache / v_cache [blocks, bs, Hkv, D]
// float32, block_tables [B, max_blocks] int32, context_lens [B] int32 -> [B, Hq, D]. Each (sequence, KV head)
// job reads its K and V rows once, in place in the cache (the torch path gathers the history into a padded copy
// first and SDPA reads it again), for the Hq / Hkv query heads that share them: scores, softmax, weighted sum.
at::Tensor paged_decode(const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
                        const at::Tensor& block_tables_in, const at::Tensor& context_lens_in, double scale) {
  const at::Tensor q = q_in.contiguous();
  const at::Tensor tables = block_tables_in.to(at::kInt).contiguous();
  const at::Tensor lens = context_lens_in.to(at::kInt).contiguous();
  check_float_cpu(q, "q");
  check_float_cpu(k_cache, "k_cache");
  check_float_cpu(v_cache, "v_cache");
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes() && k_cache.is_contiguous() &&
              v_cache.is_contiguous(), "paged_decode: q [B, Hq, D], contiguous caches [blocks, bs, Hkv, D]");
  const int64_t B = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t num_blocks = k_cache.size(0), bs = k_cache.size(1), Hkv = k_cache.size(2);
  TORCH_CHECK(k_cache.size(3) == D && Hkv > 0 && Hq % Hkv == 0, "paged_decode: head sizes disagree");
  TORCH_CHECK(tables.dim() == 2 && tables.size(0) == B && lens.numel() == B, "paged_decode: tables / lens for B");
  const int64_t G = Hq / Hkv, width = tables.size(1);
  at::Tensor out = at::empty_like(q);
  const int32_t* tb = tables.data_ptr<int32_t>();
  const int32_t* ln = lens.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(ln[b] >= 1 && ln[b] <= width * bs, "context length ", ln[b], " out of range");
    for (int64_t i = 0; i < (ln[b] + bs - 1) / bs; ++i) {
      TORCH_CHECK(0 <= tb[b * width + i] && tb[b * width + i] < num_blocks, "block id out of range");
    }
  }
  const float* kc = k_cache.data_ptr<float>();
  const float* vc = v_cache.data_ptr<float>();
  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // a head of 1, 2, 4 or 8 vectors runs the register-blocked loops; other sizes the generic ones
  const int64_t NV = D % kLanes == 0 ? D / kLanes : 0;
  constexpr int64_t kTile = 64;  // history rows per pass: K / V rows stay in L1 across the G query heads
  const float fscale = (float)scale;
  at::parallel_for(0, B * Hkv, 1, [&](int64_t j0, int64_t j1) {
    std::vector<float> scores, acc(G * D);
    std::vector<const float*> krows, vrows;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t b = j / Hkv, h = j % Hkv, L = ln[b];
      scores.resize(G * L);
      krows.resize(L);
      vrows.resize(L);
      const float* qb = qp + (b * Hq + h * G) * D;
      const int32_t* table = tb + b * width;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = ((int64_t)table[t / bs] * bs + t % bs) * Hkv + h;
        krows[t] = kc + row * D;
        vrows[t] = vc + row * D;
      }
      for (int64_t t0 = 0; t0 < L; t0 += kTile) {  // scores[g, t] = scale * q_g . k_t
        const int64_t n = std::min(kTile, L - t0);
        for (int64_t g = 0; g < G; ++g) {
          const float* qg = qb + g * D;
          float* out_g = scores.data() + g * L + t0;
          switch (NV) {
            case 1: dot_rows<1>(qg, krows.data() + t0, n, fscale, out_g); break;
            case 2: dot_rows<2>(qg, krows.data() + t0, n, fscale, out_g); break;
            case 4: dot_rows<4>(qg, krows.data() + t0, n, fscale, out_g); break;
            case 8: dot_rows<8>(qg, krows.data() + t0, n, fscale, out_g); break;
            default: dot_rows_any(qg, krows.data() + t0, n, D, fscale, out_g);
          }
        }
      }
      const int64_t Lv = L / kLanes * kLanes;
      for (int64_t g = 0; g < G; ++g) {  // softmax over t, kLanes scores at a time
        float* sg = scores.data() + g * L;
        const float m = *std::max_element(sg, sg + L);
        vec vsum = {};
        for (int64_t t = 0; t < Lv; t += kLanes) {
          const vec e = exp_nonpositive(load(sg + t) - m);
          store(sg + t, e);
          vsum += e;
        }
        float sum = hsum(vsum);
        for (int64_t t = Lv; t < L; ++t) sum += (sg[t] = std::exp(sg[t] - m));
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < L; ++t) sg[t] *= inv;
      }
      std::fill(acc.begin(), acc.end(), 0.f);  // out_g = sum_t p[g, t] v_t
      for (int64_t t0 = 0; t0 < L; t0 += kTile) {
        const int64_t n = std::min(kTile, L - t0);
        for (int64_t g = 0; g < G; ++g) {
          const float* pg = scores.data() + g * L + t0;
          float* ag = acc.data() + g * D;
          switch (NV) {
            case 1: weighted_rows<1>(vrows.data() + t0, n, pg, ag); break;
            case 2: weighted_rows<2>(vrows.data() + t0, n, pg, ag); break;
            case 4: weighted_rows<4>(vrows.data() + t0, n, pg, ag); break;
            case 8: weighted_rows<8>(vrows.data() + t0, n, pg, ag); break;
            default: weighted_rows_any(vrows.data() + t0, n, D, pg, ag);
          }
        }
      }
      std::copy(acc.begin(), acc.end(), op + (b * Hq + h * G) * D);
    }
  });
  return out;
}

}  // namespace
