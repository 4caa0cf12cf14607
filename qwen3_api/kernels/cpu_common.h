// Shared by the native CPU kernels (cpu_native.cpp): the vector type, its loads, stores and lane sum, and
// the float32-CPU check. GCC/Clang vector extensions: AVX-512, AVX2 or NEON, whatever -march=native offers.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstring>

namespace {

constexpr int64_t kLanes = 16;  // floats per vector (one AVX-512 register, two AVX2 ones)
typedef float vec __attribute__((vector_size(kLanes * sizeof(float))));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof(vec));  // an unaligned vector load
  return v;
}

inline void store(float* p, vec v) { std::memcpy(p, &v, sizeof(vec)); }

inline vec splat(float x) { return vec{} + x; }

// The sum of a vector's lanes as a tree (4 adds for 16 lanes instead of a chain of 15).
inline float hsum(vec v) {
  typedef float half __attribute__((vector_size(kLanes / 2 * sizeof(float))));
  half a, b;
  std::memcpy(&a, &v, sizeof(half));
  std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof(half), sizeof(half));
  a += b;
  float lanes[kLanes / 2];
  std::memcpy(lanes, &a, sizeof(half));
  for (int64_t w = kLanes / 4; w >= 1; w /= 2) {
    for (int64_t l = 0; l < w; ++l) lanes[l] += lanes[l + w];
  }
  return lanes[0];
}

void check_float_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}
}  // namespace
