// CPU kernels of edge_conv_max around the GEMMs the driver (edge_conv_cpu.cpp) runs through torch's
// BLAS: the float64 forward's weight building and running max, and the backward by GEMMs (small k).
// Compiled once per SIMD level (FK_CPU_CAPABILITY); each runs on the calling thread.
//
// edge_conv_max. With X = x[b] as [C, N] rows, z_j = X W_j + bias with
// W_j[p, m] = (w_self - w_edge)[m, p] + sum_{n : idx[b, n, j] = p} w_edge[m, n]: the gather of the
// neighbours is folded into the weights (a scatter-add of rows of w_edge^T, O(N M) per neighbour), so each
// neighbour costs one [C, N] x [N, M] GEMM and the k of a group run as one GEMM against the weights
// laid side by side. The backward uses the same matrices: dX = sum_j dZ_j W_j^T and
// dW_j = X^T dZ_j, from which d(w_self - w_edge)^T = sum_j dW_j and d(w_edge)^T[n] = sum_j dW_j[idx[n, j]].
#include <cstdint>
#include <type_traits>

#include "core/cpu_simd.h"
#include "edge_conv/edge_conv_kernels.h"

namespace facekernels::cpu {
namespace {

// ---- edge_conv_max ------------------------------------------------------------------------------

template <typename T>
inline void add_row(T* __restrict dst, const T* __restrict src, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] += src[i];
}

template <typename T>
void build_weights(const EdgeWeights<T>& w, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj, T* wcat) {
  const int64_t n = w.n, m = w.m, width = kj * m;
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t jj = 0; jj < kj; ++jj) __builtin_memcpy(wcat + p * width + jj * m, w.self_minus_edge_t + p * m,
                                                         sizeof(T) * m);
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* src = w.edge_t + i * m;
    for (int64_t jj = 0; jj < kj; ++jj) {
      const int64_t p = idx_b[i * k + j0 + jj];
      add_row(wcat + p * width + jj * m, src, m);
    }
  }
}

template <typename T>
void max_group(const T* z, int64_t rows, int64_t m, int64_t j0, int64_t kj, const uint8_t* skip, bool first,
               T* best, int32_t* arg) {
  const int64_t width = kj * m;
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * width;
    T* __restrict b = best + r * m;
    int32_t* __restrict a = arg + r * m;
    int64_t jj = 0;
    if (first) {
      for (int64_t i = 0; i < m; ++i) {
        b[i] = zr[i];
        a[i] = static_cast<int32_t>(j0);
      }
      jj = 1;
    }
    for (; jj < kj; ++jj) {
      const int32_t j = static_cast<int32_t>(j0 + jj);
      if (skip[j]) continue;
      const T* __restrict zj = zr + jj * m;
      for (int64_t i = 0; i < m; ++i) {
        const bool greater = zj[i] > b[i];
        b[i] = greater ? zj[i] : b[i];
        a[i] = greater ? j : a[i];
      }
    }
  }
}

template <typename T>
void max_finish(T* best, int32_t* arg, const T* bias, int64_t rows, int64_t m) {
  for (int64_t r = 0; r < rows; ++r) {
    T* __restrict b = best + r * m;
    int32_t* __restrict a = arg + r * m;
    if (bias != nullptr) add_row(b, bias, m);
    for (int64_t i = 0; i < m; ++i) {
      const T v = b[i];
      const bool active = v > T(0);
      a[i] = active ? a[i] : -1;
      b[i] = (active || v != v) ? v : T(0);  // ReLU, NaN propagated
    }
  }
}

// ---- edge_conv_max: the backward by GEMMs (small k; the driver chooses) ----------------------------

template <typename T>
void route_gradient(const T* grad, const int32_t* winner, int64_t rows, int64_t m, int64_t j0, int64_t kj, T* dz,
                    double* bias_grad) {
  const int64_t width = kj * m;
  for (int64_t r = 0; r < rows; ++r) {
    const T* g = grad + r * m;
    const int32_t* w = winner + r * m;
    for (int64_t jj = 0; jj < kj; ++jj) {
      const int32_t j = static_cast<int32_t>(j0 + jj);
      T* __restrict d = dz + r * width + jj * m;
      for (int64_t i = 0; i < m; ++i) d[i] = w[i] == j ? g[i] : T(0);
    }
    if (bias_grad != nullptr) {
      for (int64_t i = 0; i < m; ++i) bias_grad[i] += w[i] >= 0 ? static_cast<double>(g[i]) : 0.0;
    }
  }
}

template <typename T>
void accumulate_weight_grads(const T* dwcat, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj, int64_t n,
                             int64_t m, T* grad_self_minus_edge_t, T* grad_edge_t) {
  const int64_t width = kj * m;
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t jj = 0; jj < kj; ++jj) add_row(grad_self_minus_edge_t + p * m, dwcat + p * width + jj * m, m);
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t jj = 0; jj < kj; ++jj) {
      const int64_t p = idx_b[i * k + j0 + jj];
      add_row(grad_edge_t + i * m, dwcat + p * width + jj * m, m);
    }
  }
}

template <typename T>
void add(T* dst, const T* src, int64_t count) {
  add_row(dst, src, count);
}

// In the unnamed namespace: each SIMD level has its own (an inline function of external linkage would
// be one definition for every level).
// max_group and max_finish serve the float64 forward only (float32 has the fused kernel): nullptr in the
// float table.
template <typename T>
constexpr EdgeGemmKernels<T> make_table() {
  constexpr bool f64 = std::is_same_v<T, double>;
  using Table = EdgeGemmKernels<T>;
  Table table{
      .build_weights = &build_weights<T>,
      .max_group = nullptr,
      .max_finish = nullptr,
      .route_gradient = &route_gradient<T>,
      .accumulate_weight_grads = &accumulate_weight_grads<T>,
      .add = &add<T>,
  };
  if constexpr (f64) {
    table.max_group = &max_group<T>;
    table.max_finish = &max_finish<T>;
  }
  return table;
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(EdgeGemmKernels, edge_gemm_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(EdgeGemmKernels, edge_gemm_kernels, make_table, double)

}  // namespace facekernels::cpu
