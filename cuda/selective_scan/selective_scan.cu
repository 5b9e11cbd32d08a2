// CUDA kernels of selective_scan (Mamba's selective state-space scan): float32, float16 and bfloat16
// storage, float32 state and arithmetic.
//
// A warp owns one sequence (b, d) at a time; lane i keeps the states n = i, i + 32, ... (up to 8 of
// them: N <= 256) in registers. The sequence is walked in chunks of 32 steps: each lane loads its step of
// the chunk's delta, u, z (coalesced) and computes dt, then the warp runs the 32 steps, broadcasting
// each step's dt and dt u with a shuffle; each lane updates its states (B and C of its states read from
// global memory, where consecutive steps share cache lines) and y is the warp's sum of C h. The lane
// whose step it is keeps y, and the chunk's outputs are written coalesced. Memory beyond the outputs:
// none in the forward.
//
// Backward: a warp slot (b, p) walks the channels d = p, p + P, ... (P = min(D, 32) slots per batch),
// each in two passes: the forward's states at every chunk start go to the slot's checkpoints in the
// workspace ([chunks, N] floats), then the chunks are walked backwards, each recomputing its 33 states
// per n into shared memory from its checkpoint and running the reverse recurrence
// gh[l] = gy[l] C[l] + exp(dt[l+1] A) gh[l+1] (the carry in registers across chunks). Each lane only
// ever touches its own states' entries (shared memory, checkpoints, gradient slots), so the warp needs no
// barrier. Gradients of B and C sum over the channels: each slot adds its channels' terms into its own
// [G, N, L] rows of the workspace, and a second kernel adds the P slots in order; A, D and delta_bias
// sum over the batch from per-(b, d) partials, added in batch order by the same kernel. Deterministic:
// no atomics, and the order depends only on the shape.
#include "selective_scan.h"

#include "cuda/core/device_math.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 128;            // 4 warps, each its own sequence
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kChunk = kWarpSize;        // steps per chunk: one per lane
constexpr int kStatesPerLane = 8;        // N <= 256
constexpr int64_t kMaxState = kWarpSize * kStatesPerLane;
constexpr int64_t kSlots = 32;           // backward warp slots per batch (at most D)
constexpr int kReduceThreads = 256;
constexpr int64_t kMaxSharedBytes = 48 * 1024;  // the default dynamic shared memory limit

__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// The read-only inputs of both directions, typed.
template <typename T>
struct Inputs {
  const T* u;
  const T* delta;
  const T* A;
  const T* B;
  const T* C;
  const T* D;
  const T* z;
  const T* delta_bias;
};

// One sequence's per-step data of a chunk, lane i holding step l0 + i (zero beyond L).
struct Step {
  float u, raw, dt, z;
  bool live;
};

template <typename T>
__device__ __forceinline__ Step load_step(const Inputs<T>& in, const SelectiveScanShape& s, int64_t row, int64_t l,
                                          float bias) {
  Step st{0.0f, 0.0f, 0.0f, 0.0f, l < s.length};
  if (st.live) {
    const int64_t i = row * s.length + l;
    st.u = to_float(in.u[i]);
    st.raw = to_float(in.delta[i]) + bias;
    st.dt = s.delta_softplus ? softplus(st.raw) : st.raw;
    st.z = in.z != nullptr ? to_float(in.z[i]) : 0.0f;
  }
  return st;
}

// The offsets of row (b, group of d, n = 0, l = 0) of B and C.
__device__ __forceinline__ int64_t matrix_base(const SelectiveScanShape& s, int64_t b, int64_t d, int64_t groups) {
  const int64_t g = d / (s.channels / groups);
  return (b * groups + g) * s.state * s.length;
}

// The lane's decay rates A[d, n] (n = lane + 32 k; 0 beyond N).
template <typename T>
__device__ __forceinline__ void load_rates(const T* A, int64_t d, int64_t N, int lane, float (&a)[kStatesPerLane]) {
#pragma unroll
  for (int k = 0; k < kStatesPerLane; ++k) {
    const int64_t n = lane + static_cast<int64_t>(k) * kWarpSize;
    a[k] = n < N ? to_float(A[d * N + n]) : 0.0f;
  }
}

// Runs the chunk's `steps` steps from l0 on the lane's states h, each step's dt and dt u broadcast from
// the lane holding it. With Cm, returns on lane j the y of step j (the warp's sum of C h); with `states`,
// keeps the state after step j in row j + 1 of the warp's [kChunk + 1][N] rows.
template <typename T>
__device__ __forceinline__ float scan_steps(const T* Bm, const T* Cm, const float (&a)[kStatesPerLane],
                                            float (&h)[kStatesPerLane], float dt_lane, float dtu_lane, int64_t N,
                                            int64_t L, int64_t l0, int steps, int lane, float* states) {
  float y_mine = 0.0f;
  for (int j = 0; j < steps; ++j) {
    const float dt = __shfl_sync(kFullWarpMask, dt_lane, j);
    const float x = __shfl_sync(kFullWarpMask, dtu_lane, j);
    const int64_t l = l0 + j;
    float part = 0.0f;
#pragma unroll
    for (int k = 0; k < kStatesPerLane; ++k) {
      const int64_t n = lane + static_cast<int64_t>(k) * kWarpSize;
      if (n < N) {
        h[k] = expf(dt * a[k]) * h[k] + x * to_float(Bm[n * L + l]);
        if (states != nullptr) states[(j + 1) * N + n] = h[k];
        if (Cm != nullptr) part += to_float(Cm[n * L + l]) * h[k];
      }
    }
    if (Cm != nullptr) {
      const float y = warp_sum(part);
      if (lane == j) y_mine = y;
    }
  }
  return y_mine;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Inputs<T> in, T* __restrict__ out, float* __restrict__ last_state, SelectiveScanShape s) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t N = s.state, L = s.length;
  for (int64_t row = grid_warp_index(); row < s.batch * s.channels; row += grid_warp_count()) {
    const int64_t b = row / s.channels, d = row % s.channels;
    const T* Bm = in.B + matrix_base(s, b, d, s.groups_b);
    const T* Cm = in.C + matrix_base(s, b, d, s.groups_c);
    const float bias = in.delta_bias != nullptr ? to_float(in.delta_bias[d]) : 0.0f;
    const float skip = in.D != nullptr ? to_float(in.D[d]) : 0.0f;
    float a[kStatesPerLane], h[kStatesPerLane] = {};
    load_rates(in.A, d, N, lane, a);
    for (int64_t l0 = 0; l0 < L; l0 += kChunk) {
      const Step st = load_step(in, s, row, l0 + lane, bias);
      const int steps = static_cast<int>(min64(kChunk, L - l0));
      const float y_mine = scan_steps(Bm, Cm, a, h, st.dt, st.dt * st.u, N, L, l0, steps, lane,
                                      static_cast<float*>(nullptr));
      if (st.live) {
        float v = y_mine + skip * st.u;
        if (in.z != nullptr) v *= st.z * sigmoid(st.z);
        out[row * L + l0 + lane] = from_float<T>(v);
      }
    }
#pragma unroll
    for (int k = 0; k < kStatesPerLane; ++k) {
      const int64_t n = lane + static_cast<int64_t>(k) * kWarpSize;
      if (n < N) last_state[row * N + n] = h[k];
    }
  }
}

// The workspace's parts, in floats from its start.
struct Workspace {
  int64_t slots_b, slots_c, checkpoints, part_a, part_d, part_bias, total;
};

__host__ __device__ inline int64_t slot_count(const SelectiveScanShape& s) { return min64(s.channels, kSlots); }

__host__ __device__ inline Workspace workspace_layout(const SelectiveScanShape& s) {
  const int64_t P = slot_count(s), N = s.state, L = s.length, chunks = ceil_div(L, kChunk);
  Workspace w{};
  w.slots_b = 0;
  w.slots_c = w.slots_b + s.batch * P * s.groups_b * N * L;
  w.checkpoints = w.slots_c + s.batch * P * s.groups_c * N * L;
  w.part_a = w.checkpoints + s.batch * P * chunks * N;
  w.part_d = w.part_a + s.batch * s.channels * N;
  w.part_bias = w.part_d + s.batch * s.channels;
  w.total = w.part_bias + s.batch * s.channels;
  return w;
}

template <typename T>
struct Gradients {
  const T* grad_out;
  const float* grad_last_state;
  T* grad_u;
  T* grad_delta;
  T* grad_z;
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Inputs<T> in, Gradients<T> g, float* __restrict__ workspace, SelectiveScanShape s) {
  extern __shared__ float shared_states[];
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp_in_block = threadIdx.x / kWarpSize;
  const int64_t N = s.state, L = s.length, D = s.channels, P = slot_count(s);
  const int64_t chunks = ceil_div(L, kChunk);
  const Workspace w = workspace_layout(s);
  // [kChunk + 1][N]: row 0 the chunk's starting state, row j + 1 the state after its step j
  float* states = shared_states + warp_in_block * (kChunk + 1) * N;
  for (int64_t slot = grid_warp_index(); slot < s.batch * P; slot += grid_warp_count()) {
    const int64_t b = slot / P, p = slot % P;
    float* slot_b = workspace + w.slots_b + slot * s.groups_b * N * L;
    float* slot_c = workspace + w.slots_c + slot * s.groups_c * N * L;
    float* checkpoints = workspace + w.checkpoints + slot * chunks * N;
    for (int64_t n = lane; n < N; n += kWarpSize) {
      for (int64_t gi = 0; gi < s.groups_b; ++gi)
        for (int64_t l = 0; l < L; ++l) slot_b[(gi * N + n) * L + l] = 0.0f;
      for (int64_t gi = 0; gi < s.groups_c; ++gi)
        for (int64_t l = 0; l < L; ++l) slot_c[(gi * N + n) * L + l] = 0.0f;
    }
    for (int64_t d = p; d < D; d += P) {
      const int64_t row = b * D + d;
      const int64_t off_b = matrix_base(s, b, d, s.groups_b), off_c = matrix_base(s, b, d, s.groups_c);
      const T* Bm = in.B + off_b;
      const T* Cm = in.C + off_c;
      float* gB = slot_b + (off_b - b * s.groups_b * N * L);
      float* gC = slot_c + (off_c - b * s.groups_c * N * L);
      const float bias = in.delta_bias != nullptr ? to_float(in.delta_bias[d]) : 0.0f;
      const float skip = in.D != nullptr ? to_float(in.D[d]) : 0.0f;
      float a[kStatesPerLane], h[kStatesPerLane] = {}, carry[kStatesPerLane], grad_a[kStatesPerLane] = {};
      load_rates(in.A, d, N, lane, a);
#pragma unroll
      for (int k = 0; k < kStatesPerLane; ++k) {
        const int64_t n = lane + static_cast<int64_t>(k) * kWarpSize;
        carry[k] = n < N && g.grad_last_state != nullptr ? g.grad_last_state[row * N + n] : 0.0f;
      }
      // Pass 1: the state at every chunk start.
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t l0 = c * kChunk;
#pragma unroll
        for (int k = 0; k < kStatesPerLane; ++k) {
          const int64_t n = lane + static_cast<int64_t>(k) * kWarpSize;
          if (n < N) checkpoints[c * N + n] = h[k];
        }
        const Step st = load_step(in, s, row, l0 + lane, bias);
        const int steps = static_cast<int>(min64(kChunk, L - l0));
        scan_steps(Bm, static_cast<const T*>(nullptr), a, h, st.dt, st.dt * st.u, N, L, l0, steps, lane,
                   static_cast<float*>(nullptr));
      }
      // Pass 2: the chunks backwards.
      float grad_skip = 0.0f, grad_bias = 0.0f;
      for (int64_t c = chunks - 1; c >= 0; --c) {
        const int64_t l0 = c * kChunk;
        const Step st = load_step(in, s, row, l0 + lane, bias);
        const int steps = static_cast<int>(min64(kChunk, L - l0));
#pragma unroll
        for (int k = 0; k < kStatesPerLane; ++k) {
          const int64_t n = lane + static_cast<int64_t>(k) * kWarpSize;
          if (n < N) {
            h[k] = checkpoints[c * N + n];
            states[n] = h[k];
          }
        }
        const float y_mine = scan_steps(Bm, Cm, a, h, st.dt, st.dt * st.u, N, L, l0, steps, lane, states);
        // Through out = (y + D u) * silu(z).
        const float go = st.live ? to_float(g.grad_out[row * L + l0 + lane]) : 0.0f;
        float gy = go;
        if (in.z != nullptr && st.live) {
          const float sz = sigmoid(st.z);
          gy = go * st.z * sz;
          g.grad_z[row * L + l0 + lane] = from_float<T>(go * (y_mine + skip * st.u) * sz * (1.0f + st.z * (1.0f - sz)));
        }
        grad_skip += gy * st.u;
        float gu = gy * skip, gdt = 0.0f;
        for (int j = steps - 1; j >= 0; --j) {
          const float dt = __shfl_sync(kFullWarpMask, st.dt, j);
          const float u = __shfl_sync(kFullWarpMask, st.u, j);
          const float gyj = __shfl_sync(kFullWarpMask, gy, j);
          const int64_t l = l0 + j;
          float part_u = 0.0f, part_dt = 0.0f;
#pragma unroll
          for (int k = 0; k < kStatesPerLane; ++k) {
            const int64_t n = lane + static_cast<int64_t>(k) * kWarpSize;
            if (n < N) {
              const float bv = to_float(Bm[n * L + l]);
              const float da = expf(dt * a[k]);
              const float gh = gyj * to_float(Cm[n * L + l]) + carry[k];
              const float through_decay = gh * states[j * N + n] * da;
              gC[n * L + l] += gyj * states[(j + 1) * N + n];
              gB[n * L + l] += gh * dt * u;
              part_u += gh * dt * bv;
              part_dt += gh * bv * u + through_decay * a[k];
              grad_a[k] += through_decay * dt;
              carry[k] = da * gh;
            }
          }
          const float su = warp_sum(part_u), sdt = warp_sum(part_dt);
          if (lane == j) {
            gu += su;
            gdt += sdt;
          }
        }
        if (st.live) {
          if (s.delta_softplus && st.raw <= 20.0f) gdt *= sigmoid(st.raw);
          g.grad_u[row * L + l0 + lane] = from_float<T>(gu);
          g.grad_delta[row * L + l0 + lane] = from_float<T>(gdt);
          grad_bias += gdt;
        }
      }
#pragma unroll
      for (int k = 0; k < kStatesPerLane; ++k) {
        const int64_t n = lane + static_cast<int64_t>(k) * kWarpSize;
        if (n < N) workspace[w.part_a + row * N + n] = grad_a[k];
      }
      grad_skip = warp_sum(grad_skip);
      grad_bias = warp_sum(grad_bias);
      if (lane == 0) {
        workspace[w.part_d + row] = grad_skip;
        workspace[w.part_bias + row] = grad_bias;
      }
    }
  }
}

// out[o, j] = sum_{k < K} in[(o K + k) inner + j] for o < outer, j < inner, added in k order.
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    sum_partials_kernel(const float* __restrict__ in, T* __restrict__ out, int64_t outer, int64_t parts,
                        int64_t inner) {
  for (int64_t i = grid_thread_index(); i < outer * inner; i += grid_thread_count()) {
    const int64_t o = i / inner, j = i % inner;
    float acc = 0.0f;
    for (int64_t k = 0; k < parts; ++k) acc += in[(o * parts + k) * inner + j];
    out[i] = from_float<T>(acc);
  }
}

template <typename T>
cudaError_t sum_partials(const float* in, void* out, int64_t outer, int64_t parts, int64_t inner,
                         cudaStream_t stream) {
  if (out == nullptr || outer * inner == 0) return cudaSuccess;
  sum_partials_kernel<T><<<grid_blocks(outer * inner, kReduceThreads), kReduceThreads, 0, stream>>>(
      in, static_cast<T*>(out), outer, parts, inner);
  return cudaGetLastError();
}

bool valid_shape(const SelectiveScanShape& s) {
  if (s.batch < 0 || s.channels < 0 || s.length < 0 || s.state < 1 || s.state > kMaxState) return false;
  if (s.groups_b < 1 || s.groups_c < 1) return false;
  return s.channels % s.groups_b == 0 && s.channels % s.groups_c == 0;
}

template <typename T>
Inputs<T> typed_inputs(const SelectiveScanInputs& in) {
  return {static_cast<const T*>(in.u), static_cast<const T*>(in.delta),      static_cast<const T*>(in.A),
          static_cast<const T*>(in.B), static_cast<const T*>(in.C),          static_cast<const T*>(in.D),
          static_cast<const T*>(in.z), static_cast<const T*>(in.delta_bias)};
}

}  // namespace

cudaError_t selective_scan_forward(const SelectiveScanForwardParams& p, cudaStream_t stream) {
  const SelectiveScanShape& s = p.shape;
  if (!valid_shape(s)) return cudaErrorInvalidValue;
  const int64_t rows = s.batch * s.channels;
  if (rows == 0) return cudaSuccess;
  if (s.length == 0) return cudaMemsetAsync(p.last_state, 0, sizeof(float) * rows * s.state, stream);
  return dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const Inputs<T> in = typed_inputs<T>(p.in);
    forward_kernel<T><<<grid_blocks(rows, kWarps), kThreads, 0, stream>>>(in, static_cast<T*>(p.out), p.last_state,
                                                                         s);
    return cudaGetLastError();
  });
}

int64_t selective_scan_backward_workspace_size(const SelectiveScanShape& shape) {
  return workspace_layout(shape).total;
}

cudaError_t selective_scan_backward(const SelectiveScanBackwardParams& p, cudaStream_t stream) {
  const SelectiveScanShape& s = p.shape;
  if (!valid_shape(s)) return cudaErrorInvalidValue;
  const Workspace w = workspace_layout(s);
  if (w.total > 0 && p.workspace == nullptr) return cudaErrorInvalidValue;
  return dispatch_dtype(p.dtype, [&](auto* tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    const int64_t N = s.state, L = s.length, D = s.channels, P = slot_count(s);
    if (s.batch * D * L > 0) {
      const Inputs<T> in = typed_inputs<T>(p.in);
      const Gradients<T> g{static_cast<const T*>(p.grad_out), p.grad_last_state, static_cast<T*>(p.grad_u),
                           static_cast<T*>(p.grad_delta), static_cast<T*>(p.grad_z)};
      // Fewer warps a block for large N, so the states fit the default 48 KiB of shared memory.
      const int64_t per_warp = static_cast<int64_t>(sizeof(float)) * (kChunk + 1) * N;
      // (one warp's 33 x 256 floats, the most, fit)
      const bool four = per_warp * kWarps <= kMaxSharedBytes, two = per_warp * 2 <= kMaxSharedBytes;
      const int64_t warps = four ? kWarps : two ? 2 : 1;
      const unsigned threads = four ? kThreads : two ? 2 * kWarpSize : kWarpSize;
      backward_kernel<T><<<grid_blocks(s.batch * P, warps), threads, static_cast<size_t>(warps * per_warp), stream>>>(
          in, g, p.workspace, s);
      cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
      err = sum_partials<T>(p.workspace + w.slots_b, p.grad_B, s.batch, P, s.groups_b * N * L, stream);
      if (err != cudaSuccess) return err;
      err = sum_partials<T>(p.workspace + w.slots_c, p.grad_C, s.batch, P, s.groups_c * N * L, stream);
      if (err != cudaSuccess) return err;
      err = sum_partials<T>(p.workspace + w.part_a, p.grad_A, 1, s.batch, D * N, stream);
      if (err != cudaSuccess) return err;
      err = sum_partials<T>(p.workspace + w.part_d, p.grad_D, 1, s.batch, D, stream);
      if (err != cudaSuccess) return err;
      return sum_partials<T>(p.workspace + w.part_bias, p.grad_delta_bias, 1, s.batch, D, stream);
    }
    // Empty sequences: every gradient is a sum over nothing (the [B, D, L] ones are empty too, or L = 0).
    const int64_t bytes = p.dtype == DType::Float32 ? 4 : 2;
    const void* targets[] = {p.grad_A, p.grad_B, p.grad_C, p.grad_D, p.grad_delta_bias};
    const int64_t counts[] = {D * N, s.batch * s.groups_b * N * L, s.batch * s.groups_c * N * L, D, D};
    for (int i = 0; i < 5; ++i) {
      if (targets[i] == nullptr || counts[i] == 0) continue;
      const cudaError_t err = cudaMemsetAsync(const_cast<void*>(targets[i]), 0, bytes * counts[i], stream);
      if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
  });
}

}  // namespace facekernels::cuda
