// cudaemu: execute CUDA kernels as host C++. Force-included (-include cudaemu/emu.hpp) before every .cu
// translated by tools/cu2cpp.py. Each CUDA thread is a fiber; a block's fibers run on one OS thread and
// switch only at __syncthreads, __syncwarp and the warp collectives, which have their CUDA (sm_70+)
// semantics: a collective waits for exactly the lanes named in its mask.
//
// The toolkit's own headers provide the types (cudaError_t, dim3, float4, __half, __nv_bfloat16 with
// NVIDIA's host conversion code); this file provides the keywords, built-in variables, intrinsics and
// the launch, and src/runtime.cpp the runtime API the kernels' host code calls.
#pragma once
#ifndef CUDAEMU_EMU_HPP
#define CUDAEMU_EMU_HPP

// Must precede the toolkit's host_defines.h, which keeps an existing definition.
#define __shared__ static thread_local
#define __constant__ static

#include <cuda_runtime_api.h>
#include <vector_functions.h>
#include <vector_types.h>

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#define __CUDAEMU__ 1

namespace cudaemu {

struct ThreadCtx {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern thread_local ThreadCtx t_ctx;

// ---- runtime entry points (src/runtime.cpp, never instrumented) --------------------------------------
void syncthreads(const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
enum class Coll : int { Idx = 0, Up, Down, Xor, Ballot, SyncWarp };
// Every lane of `mask` (the caller's warp) contributes `size` bytes at `value` and an int parameter;
// returns, in `result`, the value this lane receives (for Ballot: the 32-bit vote).
void warp_collective(Coll kind, unsigned mask, const void* value, std::size_t size, int param, int width,
                     void* result, const char* file, int line);
void* dynamic_shared(std::size_t align);
void static_shared(void* p, std::size_t bytes);
void launch_bounds_check(int max_threads, const char* kernel);
void grid_stride_kernel(const char* kernel);
void threadfence();

struct LaunchConfig {
  dim3 grid, block;
  std::size_t shared_bytes;
  cudaStream_t stream;
  const char* file;
  int line;
  const char* kernel;
  const void* func;
};
// Validates the configuration (sets the sticky last error and returns false when CUDA would refuse it),
// then runs every block; invoke(obj) runs one thread's body.
void run_grid(const LaunchConfig& cfg, void (*invoke)(const void*), const void* obj);

template <typename... P>
struct Launch {
  void (*kernel)(P...);
  LaunchConfig cfg;
  template <typename... A>
  void operator()(A&&... args) const {
    // CUDA converts the arguments to the parameter types at the launch and each thread gets a copy.
    const std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
    struct Obj {
      void (*kernel)(P...);
      const std::tuple<std::decay_t<P>...>* params;
    } obj{kernel, &params};
    run_grid(cfg, [](const void* o) {
      const Obj* p = static_cast<const Obj*>(o);
      std::apply(p->kernel, *p->params);
    }, &obj);
  }
};

template <typename... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream,
                    const char* file, int line, const char* name) {
  return Launch<P...>{kernel, LaunchConfig{grid, block, shared_bytes, stream, file, line, name,
                                           reinterpret_cast<const void*>(kernel)}};
}

template <typename T>
inline T collective(Coll kind, unsigned mask, T v, int param, int width, const char* file, int line) {
  static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "warp collective on this type");
  T r;
  warp_collective(kind, mask, &v, sizeof(T), param, width, &r, file, line);
  return r;
}

// Atomics run out of line in the runtime (never instrumented), which also tells the race checker.
enum class AOp : int { Add, Sub, Min, Max, Exch, And, Or, Xor, FAdd };
uint64_t atomic_rmw(void* p, std::size_t size, bool is_signed, AOp op, uint64_t v);  // returns the old bits
uint64_t atomic_cas(void* p, std::size_t size, uint64_t compare, uint64_t v);
template <typename T>
inline uint64_t bits_of(T v) {
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <typename T>
inline T atomic_op(T* p, AOp op, T v) {
  return from_bits<T>(atomic_rmw(p, sizeof(T), std::is_signed<T>::value, op, bits_of(v)));
}

}  // namespace cudaemu

// ---- built-in variables ---------------------------------------------------------------------------------
#define threadIdx (static_cast<const uint3&>(::cudaemu::t_ctx.thread_idx))
#define blockIdx (static_cast<const uint3&>(::cudaemu::t_ctx.block_idx))
#define blockDim (static_cast<const dim3&>(::cudaemu::t_ctx.block_dim))
#define gridDim (static_cast<const dim3&>(::cudaemu::t_ctx.grid_dim))
#define warpSize 32

// ---- synchronisation and warp intrinsics ----------------------------------------------------------------
#define __syncthreads() ::cudaemu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::cudaemu::syncwarp_(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(...) ::cudaemu::shfl_(::cudaemu::Coll::Idx, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::cudaemu::shfl_(::cudaemu::Coll::Up, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::cudaemu::shfl_(::cudaemu::Coll::Down, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::cudaemu::shfl_(::cudaemu::Coll::Xor, __FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::cudaemu::ballot_(__FILE__, __LINE__, (mask), (pred))
#define __any_sync(mask, pred) (::cudaemu::ballot_(__FILE__, __LINE__, (mask), (pred)) != 0u)
#define __all_sync(mask, pred) (::cudaemu::ballot_(__FILE__, __LINE__, (mask), (pred)) == (mask))

namespace cudaemu {
inline void syncwarp_(const char* file, int line, unsigned mask = 0xffffffffu) { syncwarp(mask, file, line); }
template <typename T>
inline T shfl_(Coll kind, const char* file, int line, unsigned mask, T v, int param, int width = 32) {
  return collective(kind, mask, v, param, width, file, line);
}
inline unsigned ballot_(const char* file, int line, unsigned mask, int pred) {
  unsigned r;
  const int p = pred != 0;
  warp_collective(Coll::Ballot, mask, &p, sizeof p, 0, 32, &r, file, line);
  return r;
}
}  // namespace cudaemu

inline void __threadfence() { ::cudaemu::threadfence(); }
inline void __threadfence_block() { ::cudaemu::threadfence(); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

// ---- atomics --------------------------------------------------------------------------------------------
#define CUDAEMU_INT_ATOMICS(T)                                                                          \
  inline T atomicAdd(T* p, T v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::Add, v); }           \
  inline T atomicSub(T* p, T v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::Sub, v); }           \
  inline T atomicMin(T* p, T v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::Min, v); }           \
  inline T atomicMax(T* p, T v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::Max, v); }           \
  inline T atomicExch(T* p, T v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::Exch, v); }         \
  inline T atomicAnd(T* p, T v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::And, v); }           \
  inline T atomicOr(T* p, T v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::Or, v); }             \
  inline T atomicXor(T* p, T v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::Xor, v); }           \
  inline T atomicCAS(T* p, T c, T v) {                                                                  \
    return ::cudaemu::from_bits<T>(::cudaemu::atomic_cas(p, sizeof(T), ::cudaemu::bits_of(c), ::cudaemu::bits_of(v))); \
  }
CUDAEMU_INT_ATOMICS(int)
CUDAEMU_INT_ATOMICS(unsigned int)
CUDAEMU_INT_ATOMICS(unsigned long long int)
CUDAEMU_INT_ATOMICS(long long int)
#undef CUDAEMU_INT_ATOMICS
inline float atomicAdd(float* p, float v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::FAdd, v); }
inline double atomicAdd(double* p, double v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::FAdd, v); }
inline float atomicExch(float* p, float v) { return ::cudaemu::atomic_op(p, ::cudaemu::AOp::Exch, v); }

// ---- integer and math intrinsics --------------------------------------------------------------------------
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
// The correctly rounded product that CUDA never fuses into a multiply-add: kept apart from the operation
// that consumes it here too, should the emulator be compiled with FMA instructions enabled.
inline float __fmul_rn(float a, float b) {
  const float p = a * b;
#if defined(__has_builtin)
#if __has_builtin(__builtin_assoc_barrier)
  return __builtin_assoc_barrier(p);
#endif
#endif
  return p;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
inline double __longlong_as_double(long long x) {
  double d;
  std::memcpy(&d, &x, 8);
  return d;
}
inline long long __double_as_longlong(double x) {
  long long i;
  std::memcpy(&i, &x, 8);
  return i;
}
inline float __uint_as_float(unsigned x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline int __float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, 4);
  return i;
}
// CUDA's device min/max overloads (the host ones of math_functions.hpp), for the integer types.
#define CUDAEMU_MINMAX(T)                       \
  inline T min(T a, T b) { return a < b ? a : b; } \
  inline T max(T a, T b) { return a > b ? a : b; }
CUDAEMU_MINMAX(int)
CUDAEMU_MINMAX(unsigned int)
CUDAEMU_MINMAX(long long int)
CUDAEMU_MINMAX(unsigned long long int)
CUDAEMU_MINMAX(long int)
CUDAEMU_MINMAX(unsigned long int)
#undef CUDAEMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
using std::isfinite;
using std::isinf;
using std::isnan;

#endif  // CUDAEMU_EMU_HPP
