// The work-splitting pieces the quantized ops share (quant_native.cpp, quant_moe.h): a weight's rows in the
// mapped file, jobs that torch's OpenMP threads take from a shared counter, the int8 tile loop over a row range,
// and the activations quantized (int8 blocks) or rounded (bf16) once per call.

#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "quant_dot.h"
#include "quant_gemm_bf16.h"

namespace q3 {

constexpr int kTile = 4;  // activation rows per dot_rows call

struct Weight {
  const uint8_t* data = nullptr;
  int type = 0;
  int64_t rows = 0, cols = 0, row_bytes = 0;
  const uint8_t* row(int64_t r) const { return data + r * row_bytes; }
};

inline int64_t row_bytes_of(int type, int64_t cols) {
  const int per = block_values(type);
  TORCH_CHECK(per > 0, "unsupported GGUF tensor type ", type);
  TORCH_CHECK(cols % per == 0, "a row of ", cols, " values is not whole blocks of ", per, " (type ", type, ")");
  return cols / per * block_bytes(type);
}

// `count` matrices [rows, cols] of `type` stored back to back in raw (an expert stack when count > 1).
inline Weight weight_of(const at::Tensor& raw, int64_t type, int64_t rows, int64_t cols, int64_t count = 1) {
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
inline int64_t rows_per_job(int64_t rows, int64_t tokens) {
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

inline Acts quantize_rows(ActFormat fmt, const float* x, int64_t M, int64_t K) {
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
inline void to_bf16(const float* x, int64_t M, int64_t K, bf16* out) {
  run_jobs((M + 63) / 64, [&](int64_t j) {
    const int64_t m0 = 64 * j;
    rows_to_bf16(x + m0 * K, std::min<int64_t>(64, M - m0), K, K, out + m0 * K);
  });
}

inline void check_x(const at::Tensor& x, int64_t cols) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "x must be a float32 CPU tensor");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == cols, "x's last dimension ", x.size(-1), " != weight columns ", cols);
}

}  // namespace q3
