// Native CPU decode kernels: one-row float32 matvecs over the transposed weight layout, one-token MoE steps.
//
// Built at first use by qwen3_api/kernels/cpu_native.py (torch.utils.cpp_extension, -O3 -march=native).
// Why: a decode step of one sequence is a chain of matvecs whose weights stream from DRAM once per token, plus
// a per-pair MoE loop of ~30 small torch ops per layer. MKL's gemv streams at the memory's speed on a Xeon, but
// on AMD it ran the one-row lm_head on one core whatever the thread count (benchmarks/RESULTS.md). These loops
// stream the [in, out] weight with the partial sums in registers or L1, split the work over torch's own
// OpenMP threads (at::parallel_for: no second thread pool) and run a token's whole MoE step in one call.
//
// Portable C++: GCC/Clang vector extensions compile to AVX-512, AVX2 or NEON, whatever -march=native offers.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "cpu_attention.h"
#include "cpu_common.h"

namespace {

// y[c0:c0+V*kLanes] = x @ wt[:, c0:...] for a tile of V vectors of columns: the partial sums stay in
// registers while the tile's rows stream through (each row a contiguous run of V*kLanes floats).
template <int V>
inline void gemv_tile(const float* x, const float* wt, int64_t in, int64_t out, int64_t c0, float* y) {
  vec acc[V] = {};
  const float* col = wt + c0;
  for (int64_t i = 0; i < in; ++i, col += out) {
    const float xi = x[i];
    for (int v = 0; v < V; ++v) acc[v] += load(col + v * kLanes) * xi;
  }
  for (int v = 0; v < V; ++v) store(y + c0 + v * kLanes, acc[v]);
}

// Columns that do not fill a vector (out % kLanes): plain loops.
inline void gemv_tail(const float* x, const float* wt, int64_t in, int64_t out, int64_t c0, float* y) {
  for (int64_t c = c0; c < out; ++c) y[c] = 0.f;
  for (int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    const float* row = wt + i * out;
    for (int64_t c = c0; c < out; ++c) y[c] += row[c] * xi;
  }
}

// p [out] = sum over rows i in [r0, r1) of x[i] * wt[i, :], four rows per pass over p.
inline void axpy_rows(const float* x, const float* wt, int64_t r0, int64_t r1, int64_t out, float* p) {
  const int64_t vecs = out / kLanes;
  for (int64_t o = 0; o < out; ++o) p[o] = 0.f;
  int64_t i = r0;
  for (; i + 4 <= r1; i += 4) {
    const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
    const float *w0 = wt + i * out, *w1 = w0 + out, *w2 = w1 + out, *w3 = w2 + out;
    for (int64_t v = 0; v < vecs * kLanes; v += kLanes) {
      store(p + v, load(p + v) + load(w0 + v) * x0 + load(w1 + v) * x1 + load(w2 + v) * x2 + load(w3 + v) * x3);
    }
    for (int64_t o = vecs * kLanes; o < out; ++o) p[o] += w0[o] * x0 + w1[o] * x1 + w2[o] * x2 + w3[o] * x3;
  }
  for (; i < r1; ++i) {
    const float xi = x[i];
    const float* row = wt + i * out;
    for (int64_t o = 0; o < out; ++o) p[o] += row[o] * xi;
  }
}

#if defined(__AVX512F__)
constexpr int kTileVecs = 16;  // 256 columns a tile: 16 independent accumulators hide the FMA latency
#else
constexpr int kTileVecs = 8;  // AVX2 / NEON have 16 (or 32) registers: half the tile, no spills
#endif

// Up to this many outputs a thread's partial sum fits in L1 next to the streamed rows (32 KB).
constexpr int64_t kNarrowMax = 8192;

// y [out] = x [in] @ wt [in, out] (wt row-major, i.e. the transpose of a weight [out, in]).
void gemv_t_raw(const float* x, const float* wt, int64_t in, int64_t out, float* y) {
  const int64_t threads = at::get_num_threads();
  const int64_t tile = kTileVecs * kLanes;
  const int64_t vecs = out / kLanes;
  if (out > kNarrowMax) {  // wide (lm_head): full tiles, then the leftover vectors one by one
    const int64_t full = out / tile;
    at::parallel_for(0, full + vecs - full * kTileVecs, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if (t < full) {
          gemv_tile<kTileVecs>(x, wt, in, out, t * tile, y);
        } else {
          gemv_tile<1>(x, wt, in, out, full * tile + (t - full) * kLanes, y);
        }
      }
    });
    if (vecs * kLanes < out) gemv_tail(x, wt, in, out, vecs * kLanes, y);
    return;
  }
  // narrow (projections, experts): a tile's rows would be short runs a few KB apart, which the prefetcher
  // follows badly (20 % slower than MKL on a 1024 x 512 weight), and there are few tiles to share. Each
  // thread instead streams a contiguous block of whole rows into its own partial sum (y += x[i] * wt[i],
  // which stays in L1); the partial sums are added at the end.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads, in / 64));
  std::vector<float> scratch(chunks > 1 ? chunks * out : 0);
  float* partial = chunks > 1 ? scratch.data() : y;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      axpy_rows(x, wt, c * in / chunks, (c + 1) * in / chunks, out, partial + c * out);
    }
  });
  if (chunks == 1) return;
  for (int64_t o = 0; o < out; ++o) {
    float sum = partial[o];
    for (int64_t c = 1; c < chunks; ++c) sum += partial[c * out + o];
    y[o] = sum;
  }
}


// F.linear for one row over a transposed weight: x [..., in] holding one row, weight [out, in] whose transpose
// is contiguous (kernels.transposed_weights), bias [out] or none -> [..., out].
at::Tensor linear_t(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(weight.dim() == 2, "weight must be [out, in]");
  const at::Tensor wt = weight.t();
  check_float_cpu(wt, "weight.t()");
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() >= 1,
              "x must be float32 on the CPU");
  TORCH_CHECK(x.size(-1) == wt.size(0) && x.numel() == wt.size(0), "linear_t: x ", x.sizes(),
              " is not one row of ", wt.size(0), " values");
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = wt.size(1);
  at::Tensor y = at::empty(shape, x.options());
  const at::Tensor xc = x.contiguous();
  float* out = y.data_ptr<float>();
  gemv_t_raw(xc.data_ptr<float>(), wt.data_ptr<float>(), wt.size(0), wt.size(1), out);
  if (bias.has_value() && bias->defined()) {
    const at::Tensor b = bias->contiguous();
    TORCH_CHECK(b.scalar_type() == at::kFloat && b.numel() == wt.size(1), "bias must be float32 [out]");
    const float* bp = b.data_ptr<float>();
    for (int64_t o = 0; o < wt.size(1); ++o) out[o] += bp[o];
  }
  return y;
}

// Tokens through their top-k experts, pair by pair: out[t] = sum_k weights[t, k] * w2[e] @ (silu(gate) * up)
// with [gate | up] = w13[e] @ x[t], e = ids[t, k]. w13t [E, H, 2I] and w2t [E, I, H] are the contiguous
// transposes of w13 [E, 2I, H] and w2 [E, H, I]; x [T, H] float32; ids, weights [T, K] -> [T, H],
// accumulated in float32. Meant for decode steps of a few tokens: every pair reads its expert's weights.
at::Tensor moe_decode(const at::Tensor& x_in, const at::Tensor& w13t, const at::Tensor& w2t,
                      const at::Tensor& ids_in, const at::Tensor& weights_in) {
  // the router's outputs are contiguous int64 / float32 already: these are no-ops then, done here rather than
  // as three more Python-level calls per layer and token
  const at::Tensor x = x_in.contiguous();
  const at::Tensor ids = ids_in.to(at::kLong).contiguous();
  const at::Tensor weights = weights_in.to(at::kFloat).contiguous();
  check_float_cpu(x, "x");
  check_float_cpu(w13t, "w13t");
  check_float_cpu(w2t, "w2t");
  TORCH_CHECK(ids.device().is_cpu() && weights.device().is_cpu(), "ids and weights must be CPU tensors");
  TORCH_CHECK(w13t.dim() == 3 && w2t.dim() == 3 && w13t.size(0) == w2t.size(0), "w13t, w2t must be [E, ., .]");
  const int64_t experts = w13t.size(0), hidden = w13t.size(1), inter = w2t.size(1);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == hidden && w13t.size(2) == 2 * inter && w2t.size(2) == hidden,
              "moe_decode: shapes of x, w13t, w2t disagree");
  TORCH_CHECK(ids.dim() == 2 && ids.sizes() == weights.sizes() && ids.size(0) == x.size(0),
              "ids and weights must be [T, K] for x [T, H]");
  const int64_t tokens = ids.size(0), top_k = ids.size(1);
  at::Tensor out = at::zeros({tokens, hidden}, x.options());
  at::Tensor scratch = at::empty({3 * inter + hidden}, x.options());
  float* gu = scratch.data_ptr<float>();  // [gate | up] of one pair, then its activation and its output
  float* act = gu + 2 * inter;
  float* ys = act + inter;
  const int64_t* id = ids.data_ptr<int64_t>();
  const float* w = weights.data_ptr<float>();
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data_ptr<float>() + t * hidden;
    float* ot = out.data_ptr<float>() + t * hidden;
    for (int64_t k = 0; k < top_k; ++k) {
      const int64_t e = id[t * top_k + k];
      TORCH_CHECK(0 <= e && e < experts, "expert id ", e, " out of range [0, ", experts, ")");
      gemv_t_raw(xt, w13t.data_ptr<float>() + e * hidden * 2 * inter, hidden, 2 * inter, gu);
      for (int64_t i = 0; i < inter; ++i) {
        const float g = gu[i];
        act[i] = g / (1.f + std::exp(-g)) * gu[inter + i];  // silu(gate) * up
      }
      gemv_t_raw(act, w2t.data_ptr<float>() + e * inter * hidden, inter, hidden, ys);
      const float wk = w[t * top_k + k];
      for (int64_t h = 0; h < hidden; ++h) ot[h] += wk * ys[h];
    }
  }
  return out;
}

// RMSNorm over the last dim of float32 x [..., D]: weight * (x / sqrt(mean(x^2) + eps)), one pass per row (the
// torch expression is six ops, four of them per q / k head and per layer in a decode step).
at::Tensor rms_norm(const at::Tensor& x_in, const at::Tensor& weight, double eps) {
  const at::Tensor x = x_in.contiguous();
  check_float_cpu(x, "x");
  check_float_cpu(weight, "weight");
  const int64_t D = x.size(-1), rows = D ? x.numel() / D : 0;
  TORCH_CHECK(weight.numel() == D && weight.is_contiguous(), "rms_norm: weight must be [", D, "]");
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t Dv = D / kLanes * kLanes;
  at::parallel_for(0, rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = xp + r * D;
      float* o = op + r * D;
      vec acc = {};
      for (int64_t d = 0; d < Dv; d += kLanes) acc += load(xr + d) * load(xr + d);
      float ss = 0.f;
      for (int64_t l = 0; l < kLanes; ++l) ss += acc[l];
      for (int64_t d = Dv; d < D; ++d) ss += xr[d] * xr[d];
      const float inv = 1.f / std::sqrt(ss / (float)D + (float)eps);
      for (int64_t d = 0; d < D; ++d) o[d] = wp[d] * (xr[d] * inv);
    }
  });
  return out;
}

// Rotary embedding (rotate_half layout) of float32 x [T, heads, D] with cos, sin [T, D]: x * cos +
// rotate_half(x) * sin, rotate_half(x) = [-x[D/2:], x[:D/2]] (the torch expression is seven ops).
at::Tensor rotary(const at::Tensor& x_in, const at::Tensor& cos_in, const at::Tensor& sin_in) {
  const at::Tensor x = x_in.contiguous(), cs = cos_in.contiguous(), sn = sin_in.contiguous();
  check_float_cpu(x, "x");
  check_float_cpu(cs, "cos");
  check_float_cpu(sn, "sin");
  TORCH_CHECK(x.dim() == 3 && x.size(2) % 2 == 0, "rotary: x must be [T, heads, even D]");
  const int64_t T = x.size(0), H = x.size(1), D = x.size(2), half = D / 2;
  TORCH_CHECK(cs.dim() == 2 && cs.size(0) == T && cs.size(1) == D && sn.sizes() == cs.sizes(),
              "rotary: cos and sin must be [T, D]");
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* cp = cs.data_ptr<float>();
  const float* sp = sn.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, T * H, 64, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t t = j / H;
      const float* xr = xp + j * D;
      const float* c = cp + t * D;
      const float* sn_t = sp + t * D;
      float* o = op + j * D;
      for (int64_t d = 0; d < half; ++d) {
        o[d] = xr[d] * c[d] + -xr[d + half] * sn_t[d];
        o[d + half] = xr[d + half] * c[d + half] + xr[d] * sn_t[d + half];
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(qwen3_api_cpu, m) {
  m.def("linear_t(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor", &linear_t);
  m.def("moe_decode(Tensor x, Tensor w13t, Tensor w2t, Tensor ids, Tensor weights) -> Tensor", &moe_decode);
  m.def("paged_decode(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, "
        "float scale) -> Tensor", &paged_decode);
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor", &rms_norm);
  m.def("rotary(Tensor x, Tensor cos, Tensor sin) -> Tensor", &rotary);
}
