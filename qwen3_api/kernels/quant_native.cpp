// Quantized (GGUF) matmuls and the MoE step on the CPU, over weights read in place from the memory-mapped file.
//
// Built at first use by qwen3_api/kernels/quant_native.py (torch.utils.cpp_extension). The torch ops:
//   qlinear(x [.., K], raws, types, rows) -> [.., sum(rows)]: x times several weights [rows_i, K] that share it
//       (q / k / v, gate / up, ...), the activations quantized once per format, the outputs side by side;
//   moe(x [T, H], ids [T, k], weights [T, k], gate, up, down raws + types, experts, inter) -> [T, H]: every
//       token through its top-k SwiGLU experts, tokens grouped by expert (quant_moe.h);
//   embed(raw, type, rows, cols, ids) -> [T, cols]; dequant(raw, type, rows, cols) -> [rows, cols] (float32);
//   act_roundtrip(x, type) -> x as the kernels see it (quantized to type's activation format and back): tests.
// Work is split into jobs (row ranges of a weight, or of an expert: quant_jobs.h) that torch's OpenMP threads
// take from a shared counter, so a thread slowed by another process does not hold the others back.
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

#include "quant_jobs.h"
#include "quant_moe.h"

namespace {

using namespace q3;

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
