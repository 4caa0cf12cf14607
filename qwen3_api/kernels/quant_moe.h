// The MoE step over quantized expert stacks (the moe op of quant_native.cpp): every token through its top-k
// SwiGLU experts, tokens grouped by expert so each expert's weights are read once per step however many tokens
// chose it; an expert with many tokens runs its products as bf16 GEMMs (quant_gemm_bf16.h), one with few the
// int8 dot products.

#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <vector>

#include "quant_jobs.h"

namespace q3 {

inline at::Tensor moe(const at::Tensor& x_in, const at::Tensor& ids_in, const at::Tensor& weights_in,
               const at::Tensor& gate_raw, int64_t gate_type, const at::Tensor& up_raw, int64_t up_type,
               const at::Tensor& down_raw, int64_t down_type, int64_t experts, int64_t inter) {
  const at::Tensor x = x_in.contiguous();
  const at::Tensor ids = ids_in.to(at::kLong).contiguous();
  const at::Tensor topw = weights_in.to(at::kFloat).contiguous();
  TORCH_CHECK(x.dim() == 2, "moe: x must be [T, H]");
  const int64_t T = x.size(0), H = x.size(1);
  check_x(x, H);
  TORCH_CHECK(ids.dim() == 2 && ids.size(0) == T && ids.sizes() == topw.sizes(), "moe: ids, weights must be [T, k]");
  const Weight gate = weight_of(gate_raw, gate_type, inter, H, experts);
  const Weight up = weight_of(up_raw, up_type, inter, H, experts);
  const Weight down = weight_of(down_raw, down_type, H, inter, experts);
  const int64_t K = ids.size(1), P = T * K;
  at::Tensor out = at::zeros({T, H}, x.options());
  if (P == 0) return out;
  // pairs (token t, slot k) -> p = t * K + k, grouped by expert (counting sort)
  const int64_t* id = ids.data_ptr<int64_t>();
  std::vector<int64_t> start(experts + 1, 0), order(P);
  for (int64_t p = 0; p < P; ++p) {
    TORCH_CHECK(0 <= id[p] && id[p] < experts, "expert id ", id[p], " out of range [0, ", experts, ")");
    ++start[id[p] + 1];
  }
  for (int64_t e = 0; e < experts; ++e) start[e + 1] += start[e];
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t p = 0; p < P; ++p) order[fill[id[p]]++] = p;
  }
  const float* xp = x.data_ptr<float>();
  const Acts xg = quantize_rows(act_format(gate.type), xp, T, H);
  const Acts xu = act_format(up.type) == act_format(gate.type) ? Acts{} : quantize_rows(act_format(up.type), xp, T, H);
  const Acts& xup = act_format(up.type) == act_format(gate.type) ? xg : xu;
  // each sorted pair's activation rows (its token's)
  std::vector<const uint8_t*> ag(P), au(P);
  for (int64_t s = 0; s < P; ++s) ag[s] = xg.rows[order[s] / K], au[s] = xup.rows[order[s] / K];

  // experts with enough tokens multiply in bf16 (quant_gemm_bf16.h): their pairs' rows, in sorted order
  auto big_up = [&](int64_t e) { const int64_t n = start[e + 1] - start[e]; return use_bf16(gate.type, n) && use_bf16(up.type, n); };
  auto big_down = [&](int64_t e) { return use_bf16(down.type, start[e + 1] - start[e]); };
  bool any_big_up = false, any_big_down = false, any_small_down = false;
  for (int64_t e = 0; e < experts; ++e) {
    if (start[e + 1] == start[e]) continue;
    any_big_up |= big_up(e);
    (big_down(e) ? any_big_down : any_small_down) = true;
  }
  thread_local Scratch<bf16> xs_buf, hb_buf;
  thread_local Scratch<float> h_buf;
  bf16* xs = nullptr;
  if (any_big_up) {
    xs = xs_buf.get(P * H);
    run_jobs((P + 63) / 64, [&](int64_t j) {
      for (int64_t s = 64 * j; s < std::min(P, 64 * j + 64); ++s) rows_to_bf16(xp + (order[s] / K) * H, 1, H, H, xs + s * H);
    });
  }

  // phase 1: h[s] = silu(gate_e x) * (up_e x) for sorted pair s of expert e, by (expert, row range) jobs
  float* h = h_buf.get(P * inter);
  struct Job { int64_t e, r0, r1; };
  std::vector<Job> jobs;
  int64_t max_tokens = 1;
  for (int64_t e = 0; e < experts; ++e) max_tokens = std::max(max_tokens, start[e + 1] - start[e]);
  const int64_t step1 = rows_per_job(inter, max_tokens);
  for (int64_t e = 0; e < experts; ++e) {
    if (start[e + 1] == start[e]) continue;
    const int64_t step = big_up(e) ? kBfRows : step1;
    for (int64_t r = 0; r < inter; r += step) jobs.push_back({e, r, std::min(inter, r + step)});
  }
  run_jobs((int64_t)jobs.size(), [&](int64_t j) {
    const Job& job = jobs[j];
    const int64_t s0 = start[job.e], n = start[job.e + 1] - s0;
    if (big_up(job.e)) {
      const int64_t nr = job.r1 - job.r0;
      thread_local std::vector<bf16> bg, bu;
      thread_local std::vector<float> cg, cu;
      bg.resize(H * nr), bu.resize(H * nr), cg.resize(n * nr), cu.resize(n * nr);
      dequant_vnni(gate.type, gate.data + job.e * inter * gate.row_bytes, gate.row_bytes, job.r0, job.r1, H, bg.data());
      dequant_vnni(up.type, up.data + job.e * inter * up.row_bytes, up.row_bytes, job.r0, job.r1, H, bu.data());
      gemm_bf16(xs + s0 * H, n, H, bg.data(), nr, cg.data(), nr);
      gemm_bf16(xs + s0 * H, n, H, bu.data(), nr, cu.data(), nr);
      release_bf16();
      for (int64_t m = 0; m < n; ++m) {
        for (int64_t c = 0; c < nr; ++c) {
          const float gv = cg[m * nr + c];
          h[(s0 + m) * inter + job.r0 + c] = gv / (1.f + std::exp(-gv)) * cu[m * nr + c];
        }
      }
      return;
    }
    Weight g = gate, u = up;
    g.data += job.e * inter * gate.row_bytes;
    u.data += job.e * inter * up.row_bytes;
    float gv[kTile], uv[kTile];
    for (int64_t m0 = 0; m0 < n; m0 += kTile) {
      const int64_t cnt = std::min<int64_t>(kTile, n - m0);
      for (int64_t r = job.r0; r < job.r1; ++r) {
        prefetch_row(g, r, job.r1);
        prefetch_row(u, r, job.r1);
        dot_tile(g, r, ag.data() + s0 + m0, cnt, gv);
        dot_tile(u, r, au.data() + s0 + m0, cnt, uv);
        for (int64_t t = 0; t < cnt; ++t) h[(s0 + m0 + t) * inter + r] = gv[t] / (1.f + std::exp(-gv[t])) * uv[t];
      }
    }
  });
  // phase 2: the activations of the down projections (int8 blocks, or bf16 for the big experts)
  const Acts hq = any_small_down ? quantize_rows(act_format(down.type), h, P, inter) : Acts{};
  bf16* hb = any_big_down ? hb_buf.get(P * inter) : nullptr;
  if (hb) to_bf16(h, P, inter, hb);
  // phase 3: out[t] += w[t, k] * down_e h[s], by jobs over ranges of output rows (disjoint: no two threads
  // write the same value), each walking every expert with tokens
  const float* tw = topw.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t step3 = rows_per_job(H, max_tokens);
  run_jobs((H + step3 - 1) / step3, [&](int64_t j) {
    const int64_t r0 = j * step3, r1 = std::min(H, r0 + step3);
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t s0 = start[e], n = start[e + 1] - s0;
      if (n == 0) continue;
      if (big_down(e)) {
        const int64_t nr = r1 - r0;
        thread_local std::vector<bf16> bd;
        thread_local std::vector<float> cd;
        bd.resize(inter * nr), cd.resize(n * nr);
        dequant_vnni(down.type, down.data + e * H * down.row_bytes, down.row_bytes, r0, r1, inter, bd.data());
        gemm_bf16(hb + s0 * inter, n, inter, bd.data(), nr, cd.data(), nr);
        for (int64_t m = 0; m < n; ++m) {
          const int64_t p = order[s0 + m];
          float* orow = o + (p / K) * H + r0;
          for (int64_t c = 0; c < nr; ++c) orow[c] += tw[p] * cd[m * nr + c];
        }
        continue;
      }
      Weight d = down;
      d.data += e * H * down.row_bytes;
      gemm_rows(d, r0, r1, hq.rows.data() + s0, n, [&](int64_t m, int64_t r, float v) {
        const int64_t p = order[s0 + m];
        o[(p / K) * H + r] += tw[p] * v;
      });
    }
    if (any_big_down) release_bf16();
  });
  return out;
}

}  // namespace q3
