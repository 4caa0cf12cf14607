// Quantized (GGUF) matmuls and the MoE step on the CPU, over weights read in place from the memory-mapped file.
//
// Built at first use by qwen3_api/kernels/quant_native.py (torch.utils.cpp_extension). The torch ops:
//   qlinear(x [.., K], raws, types, rows) -> [.., sum(rows)]: x times several weights [rows_i, K] that share it
//       (q / k / v, gate / up, ...), the activations quantized once per format, the outputs side by side;
//   moe(x [T, H], ids [T, k], weights [T, k], gate, up, down raws + types, experts, inter) -> [T, H]: every
//       token through its top-k SwiGLU experts, tokens grouped by expert so each expert's weights are read once
//       per step however many tokens chose it;
//   embed(raw, type, rows, cols, ids) -> [T, cols]; dequant(raw, type, rows, cols) -> [rows, cols] (float32);
//   act_roundtrip(x, type) -> x as the kernels see it (quantized to type's activation format and back): tests.
// Work is split into jobs (row ranges of a weight, or of an expert) that torch's OpenMP threads take from a
// shared counter, so a thread slowed by another process does not hold the others back at the end of a step.
// A job with few activation rows runs the int8 dot products (quant_dot.h); one with many, where the CPU has
// native bf16 (set_bf16_gemm), dequantizes its weight rows to bf16 and runs a GEMM (quant_gemm_bf16.h).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "quant_dot.h"
#include "quant_gemm_bf16.h"

namespace {

using namespace q3;

constexpr int kTile = 4;  // activation rows per dot_rows call

struct Weight {
  const uint8_t* data = nullptr;
  int type = 0;
  int64_t rows = 0, cols = 0, row_bytes = 0;
  const uint8_t* row(int64_t r) const { return data + r * row_bytes; }
};

int64_t row_bytes_of(int type, int64_t cols) {
  const int per = block_values(type);
  TORCH_CHECK(per > 0, "unsupported GGUF tensor type ", type);
  TORCH_CHECK(cols % per == 0, "a row of ", cols, " values is not whole blocks of ", per, " (type ", type, ")");
  return cols / per * block_bytes(type);
}

// `count` matrices [rows, cols] of `type` stored back to back in raw (an expert stack when count > 1).
Weight weight_of(const at::Tensor& raw, int64_t type, int64_t rows, int64_t cols, int64_t count = 1) {
  TORCH_CHECK(raw.device().is_cpu() && raw.scalar_type() == at::kByte && raw.is_contiguous(),
              "quantized weights must be contiguous uint8 CPU tensors");
  Weight w{raw.data_ptr<uint8_t>(), (int)type, rows, cols, row_bytes_of((int)type, cols)};
  TORCH_CHECK(raw.numel() >= count * rows * w.row_bytes, "weight holds ", raw.numel(), " bytes, expected ",
              count * rows * w.row_bytes);
  return w;
}

// fn(job) for job in [0, n): torch's threads take jobs from a shared counter.
template <typename F>
void run_jobs(int64_t n, const F& fn) {
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
  if (threads <= 1 || at::in_parallel_region()) {
    for (int64_t j = 0; j < n; ++j) fn(j);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t j = next.fetch_add(1); j < n; j = next.fetch_add(1)) fn(j);
  });
}

// Rows per job: enough jobs for the threads to share (8 each) without making them too small to stream well.
int64_t rows_per_job(int64_t rows, int64_t tokens) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t floor_rows = tokens >= 16 ? 16 : 32;
  return std::max<int64_t>(std::min<int64_t>(floor_rows, rows), rows / (8 * threads));
}

// res[t] = w.row(r) . acts[t] for t < n (n <= kTile).
inline void dot_tile(const Weight& w, int64_t r, const uint8_t* const* acts, int64_t n, float* res) {
  switch (n) {
    case 4: dot_rows<4>(w.type, w.row(r), acts, w.cols, res); break;
    case 3: dot_rows<3>(w.type, w.row(r), acts, w.cols, res); break;
    case 2: dot_rows<2>(w.type, w.row(r), acts, w.cols, res); break;
    default: dot_rows<1>(w.type, w.row(r), acts, w.cols, res); break;
  }
}

// Rows ahead of the one being multiplied that are prefetched: the hardware prefetchers stop at each 4 KiB page,
// so streaming a decode's weights (one pass, nothing reused) waits on memory at every page without this. Two
// rows: 10-11 -> 12-18 GB/s for a one-row product over 150-250 MB of Q4_K / Q6_K on 2 threads (4: 11-16).
constexpr int64_t kPrefetchRows = 2;

inline void prefetch_row(const Weight& w, int64_t r, int64_t end) {
  if (r + kPrefetchRows >= end) return;
  const char* p = reinterpret_cast<const char*>(w.row(r + kPrefetchRows));
  for (int64_t off = 0; off < w.row_bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

// emit(m, r, value) for rows [r0, r1) of w and the activation rows acts[0..M): tiles of kTile activation rows
// inside, so a row's blocks are unpacked once per tile and stay in L1 while the next tile reuses them.
template <typename Emit>
void gemm_rows(const Weight& w, int64_t r0, int64_t r1, const uint8_t* const* acts, int64_t M, const Emit& emit) {
  float res[kTile];
  for (int64_t m0 = 0; m0 < M; m0 += kTile) {
    const int64_t n = std::min<int64_t>(kTile, M - m0);
    for (int64_t r = r0; r < r1; ++r) {
      prefetch_row(w, r, r1);
      dot_tile(w, r, acts + m0, n, res);
      for (int64_t t = 0; t < n; ++t) emit(m0 + t, r, res[t]);
    }
  }
}

// Activation rows of x [M, K] quantized to fmt: the buffer and a pointer to each row.
struct Acts {
  std::vector<uint8_t> buf;
  std::vector<const uint8_t*> rows;
};

Acts quantize_rows(ActFormat fmt, const float* x, int64_t M, int64_t K) {
  Acts a;
  const size_t rb = act_row_bytes(fmt, K);
  a.buf.resize(rb * M);
  a.rows.resize(M);
  for (int64_t m = 0; m < M; ++m) a.rows[m] = a.buf.data() + m * rb;
  const int64_t per_job = 16;
  run_jobs((M + per_job - 1) / per_job, [&](int64_t j) {
    for (int64_t m = j * per_job; m < std::min(M, (j + 1) * per_job); ++m) {
      quantize_act_row(fmt, x + m * K, K, a.buf.data() + m * rb);
    }
  });
  return a;
}

// x [M, K] to bf16 rows, in parallel jobs of 64 rows.
void to_bf16(const float* x, int64_t M, int64_t K, bf16* out) {
  run_jobs((M + 63) / 64, [&](int64_t j) {
    const int64_t m0 = 64 * j;
    rows_to_bf16(x + m0 * K, std::min<int64_t>(64, M - m0), K, K, out + m0 * K);
  });
}

void check_x(const at::Tensor& x, int64_t cols) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "x must be a float32 CPU tensor");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == cols, "x's last dimension ", x.size(-1), " != weight columns ", cols);
}

at::Tensor qlinear(const at::Tensor& x_in, at::TensorList raws, at::IntArrayRef types, at::IntArrayRef rows) {
  TORCH_CHECK(!raws.empty() && raws.size() == types.size() && raws.size() == rows.size(),
              "qlinear: raws, types and rows must have the same length");
  const at::Tensor x = x_in.contiguous();
  const int64_t K = x.size(-1);
  check_x(x, K);
  const int64_t M = K ? x.numel() / K : 0;
  std::vector<Weight> ws;
  std::vector<int64_t> col0;
  int64_t total = 0;
  for (size_t i = 0; i < raws.size(); ++i) {
    ws.push_back(weight_of(raws[i], types[i], rows[i], K));
    col0.push_back(total);
    total += rows[i];
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = total;
  at::Tensor out = at::empty(shape, x.options());
  if (M == 0) return out;
  Acts acts[3];
  bool have[3] = {false, false, false};
  thread_local Scratch<bf16> xb_buf;
  bf16* xb = nullptr;  // the activations in bf16, for the weights multiplied by the bf16 GEMM
  for (const Weight& w : ws) {
    if (use_bf16(w.type, M)) {
      if (!xb) xb = xb_buf.get(M * K), to_bf16(x.data_ptr<float>(), M, K, xb);
      continue;
    }
    const ActFormat f = act_format(w.type);
    if (!have[f]) acts[f] = quantize_rows(f, x.data_ptr<float>(), M, K), have[f] = true;
  }
  struct Job { int64_t w, r0, r1; };
  std::vector<Job> jobs;
  for (size_t i = 0; i < ws.size(); ++i) {
    const int64_t step = use_bf16(ws[i].type, M) ? kBfRows : rows_per_job(ws[i].rows, M);
    for (int64_t r = 0; r < ws[i].rows; r += step) jobs.push_back({(int64_t)i, r, std::min(ws[i].rows, r + step)});
  }
  float* o = out.data_ptr<float>();
  run_jobs((int64_t)jobs.size(), [&](int64_t j) {
    const Job& job = jobs[j];
    const Weight& w = ws[job.w];
    float* base = o + col0[job.w];
    if (use_bf16(w.type, M)) {
      thread_local std::vector<bf16> buf;
      buf.resize(K * (job.r1 - job.r0));
      dequant_vnni(w.type, w.data, w.row_bytes, job.r0, job.r1, K, buf.data());
      gemm_bf16(xb, M, K, buf.data(), job.r1 - job.r0, base + job.r0, total);
      release_bf16();
      return;
    }
    gemm_rows(w, job.r0, job.r1, acts[act_format(w.type)].rows.data(), M,
              [&](int64_t m, int64_t r, float v) { base[m * total + r] = v; });
  });
  return out;
}

at::Tensor moe(const at::Tensor& x_in, const at::Tensor& ids_in, const at::Tensor& weights_in,
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

at::Tensor embed(const at::Tensor& raw, int64_t type, int64_t rows, int64_t cols, const at::Tensor& ids_in) {
  const Weight w = weight_of(raw, type, rows, cols);
  const at::Tensor ids = ids_in.to(at::kLong).contiguous();
  std::vector<int64_t> shape(ids.sizes().begin(), ids.sizes().end());
  shape.push_back(cols);
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  const int64_t* id = ids.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    TORCH_CHECK(0 <= id[i] && id[i] < rows, "token id ", id[i], " out of range [0, ", rows, ")");
    dequant_row(w.type, w.row(id[i]), cols, o + i * cols);
  }
  return out;
}

at::Tensor dequant(const at::Tensor& raw, int64_t type, int64_t rows, int64_t cols) {
  const Weight w = weight_of(raw, type, rows, cols);
  at::Tensor out = at::empty({rows, cols}, at::TensorOptions().dtype(at::kFloat));
  float* o = out.data_ptr<float>();
  const int64_t per_job = 64;
  run_jobs((rows + per_job - 1) / per_job, [&](int64_t j) {
    for (int64_t r = j * per_job; r < std::min(rows, (j + 1) * per_job); ++r) dequant_row(w.type, w.row(r), cols, o + r * cols);
  });
  return out;
}

at::Tensor act_roundtrip(const at::Tensor& x_in, int64_t type) {
  const at::Tensor x = x_in.contiguous();
  const int64_t K = x.size(-1);
  check_x(x, K);
  row_bytes_of((int)type, K);
  const int64_t M = K ? x.numel() / K : 0;
  const ActFormat fmt = act_format((int)type);
  const Acts a = quantize_rows(fmt, x.data_ptr<float>(), M, K);
  at::Tensor out = at::empty_like(x);
  for (int64_t m = 0; m < M; ++m) act_to_float(fmt, a.rows[m], K, out.data_ptr<float>() + m * K);
  return out;
}

// Turn the bf16 GEMM path (quant_gemm_bf16.h) on or off for products of >= min_rows activation rows; returns
// whether it is on now. Python decides whether this CPU may run it (quant_native.py).
bool set_bf16_gemm(bool enabled, int64_t min_rows) {
  TORCH_CHECK(min_rows >= 1, "min_rows must be >= 1");
  bf16_gemm().min_rows.store(min_rows);
#if !defined(Q3_BF16_FAST)
  enabled = false;  // no vectorized packing in this build: the int8 path is faster
#endif
  bf16_gemm().enabled.store(enabled);
  return enabled;
}

bool bf16_gemm_enabled() { return bf16_gemm().enabled.load(); }

// Whether this build has the bf16 GEMM path (vectorized weight packing needs AVX-512 BF16 at compile time).
bool bf16_gemm_built() {
#if defined(Q3_BF16_FAST)
  return true;
#else
  return false;
#endif
}

// Whether this build uses the AVX2 kernels (else the portable C++ path).
bool simd() {
#if defined(Q3_AVX2)
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY(qwen3_api_quant, m) {
  m.def("qlinear(Tensor x, Tensor[] raws, int[] types, int[] rows) -> Tensor", &qlinear);
  m.def("moe(Tensor x, Tensor ids, Tensor weights, Tensor gate, int gate_type, Tensor up, int up_type, "
        "Tensor down, int down_type, int experts, int inter) -> Tensor", &moe);
  m.def("embed(Tensor raw, int type, int rows, int cols, Tensor ids) -> Tensor", &embed);
  m.def("dequant(Tensor raw, int type, int rows, int cols) -> Tensor", &dequant);
  m.def("act_roundtrip(Tensor x, int type) -> Tensor", &act_roundtrip);
  m.def("simd() -> bool", &simd);
  m.def("set_bf16_gemm(bool enabled, int min_rows) -> bool", &set_bf16_gemm);
  m.def("bf16_gemm_built() -> bool", &bf16_gemm_built);
  m.def("bf16_gemm_enabled() -> bool", &bf16_gemm_enabled);
}
