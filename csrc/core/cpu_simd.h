// Building blocks of the CPU kernel sources, which are compiled once per SIMD level (FK_CPU_CAPABILITY):
// the vector width of that level, GCC/Clang vector types of it, loads and stores, and scratch memory.
//
// Everything here has internal linkage (an unnamed namespace) on purpose: each kernel source includes
// it under different -m flags, and an inline function with external linkage compiled with AVX-512 in
// one object could be the copy the linker keeps for all. For the same reason nothing here instantiates
// std:: templates.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define FK_CONCAT_(a, b) a##b
#define FK_CONCAT(a, b) FK_CONCAT_(a, b)

namespace facekernels::cpu {
namespace {

#if defined(FK_CPU_CAPABILITY_AVX512)
constexpr int kVectorBytes = 64;
#elif defined(FK_CPU_CAPABILITY_AVX2)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

// Cache-line aligned scratch memory, so that rows of a multiple of 16 floats never split a vector load.
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n)
      : data_(n > 0 ? static_cast<T*>(std::aligned_alloc(64, (sizeof(T) * n + 63) / 64 * 64)) : nullptr) {
    if (n > 0 && data_ == nullptr) throw std::bad_alloc();
  }
  ~Scratch() { std::free(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() { return data_; }
  T& operator[](int64_t i) { return data_[i]; }

 private:
  T* data_;
};

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

template <typename T>
constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));

// Vectors of the compiled width through GCC/Clang vector extensions: kernels hold their accumulators in
// explicitly named vector registers rather than relying on the compiler to registerise a 2-D array.
template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(kVectorBytes)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, Vec<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// A store that bypasses the caches (p aligned to the vector width): for output written once and not read
// again soon, it saves reading each line from memory before overwriting it. Call stream_fence() before
// the data is handed to another thread.
template <typename T>
inline void stream(T* p, Vec<T> v) {
#if defined(FK_CPU_CAPABILITY_AVX512) && defined(__AVX512F__)
  _mm512_stream_si512(reinterpret_cast<__m512i*>(p), reinterpret_cast<__m512i>(v));
#elif defined(FK_CPU_CAPABILITY_AVX2) && defined(__AVX__)
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), reinterpret_cast<__m256i>(v));
#elif !defined(FK_CPU_CAPABILITY_AVX512) && !defined(FK_CPU_CAPABILITY_AVX2) && defined(__SSE2__)
  _mm_stream_si128(reinterpret_cast<__m128i*>(p), reinterpret_cast<__m128i>(v));
#else
  store(p, v);  // the AVX-512 emulation build (64-byte vectors without AVX-512 instructions), other CPUs
#endif
}

inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// dst[k] = src[k] for k < n, the vectors of dst that are whole and aligned written by stream(); the
// rest (an unaligned head, a tail) by plain stores.
template <typename T>
inline void stream_copy(T* dst, const T* src, int64_t n) {
  constexpr int L = kLanes<T>;
  int64_t k = 0;
  while (k < n && reinterpret_cast<uintptr_t>(dst + k) % kVectorBytes != 0) {
    dst[k] = src[k];
    ++k;
  }
  for (; k + L <= n; k += L) stream<T>(dst + k, load<T>(src + k));
  for (; k < n; ++k) dst[k] = src[k];
}

// Every lane s: one vbroadcastss / vbroadcastsd (from memory when s is a load). The generic form
// `Vec<T>{} + s` costs a scalar addition and a shuffle-port broadcast, which starve the FMA ports of a
// register-blocked GEMM loop, and it turns -0.0 into +0.0.
template <typename T>
inline Vec<T> broadcast(T s) {
#if defined(FK_CPU_CAPABILITY_AVX512) && !defined(__AVX512F__)
  // FACEKERNELS_AVX512_EMULATION (a testing build): 64-byte vectors without AVX-512 instructions.
  Vec<T> v;
  for (int i = 0; i < kLanes<T>; ++i) v[i] = s;
  return v;
#else
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
  constexpr bool floating = static_cast<T>(0.5) != static_cast<T>(0);
  if constexpr (floating && sizeof(T) == 4) {
#if defined(FK_CPU_CAPABILITY_AVX512)
    return reinterpret_cast<Vec<T>>(_mm512_set1_ps(s));
#elif defined(FK_CPU_CAPABILITY_AVX2)
    return reinterpret_cast<Vec<T>>(_mm256_set1_ps(s));
#else
    return reinterpret_cast<Vec<T>>(_mm_set1_ps(s));
#endif
  } else if constexpr (floating && sizeof(T) == 8) {
#if defined(FK_CPU_CAPABILITY_AVX512)
    return reinterpret_cast<Vec<T>>(_mm512_set1_pd(s));
#elif defined(FK_CPU_CAPABILITY_AVX2)
    return reinterpret_cast<Vec<T>>(_mm256_set1_pd(s));
#else
    return reinterpret_cast<Vec<T>>(_mm_set1_pd(s));
#endif
  }
#endif
  Vec<T> v = {};
  return v + s;
#endif
}

// The sum of a vector's lanes in lane order, accumulated in Acc (T by default; double to sum float lanes
// without rounding between them).
template <typename T, typename Acc = T>
inline Acc horizontal_sum(Vec<T> v) {
  Acc s = 0;
  for (int i = 0; i < kLanes<T>; ++i) s += static_cast<Acc>(v[i]);
  return s;
}

// Lane-wise square root (the loop becomes one vsqrtps/vsqrtpd under -fno-math-errno).
template <typename T>
inline Vec<T> vsqrt(Vec<T> v) {
  Vec<T> r;
  for (int i = 0; i < kLanes<T>; ++i) {
    if constexpr (sizeof(T) == 4) r[i] = __builtin_sqrtf(v[i]);
    else r[i] = __builtin_sqrt(v[i]);
  }
  return r;
}

// The lanes of a comparison mask (a vector of all-ones / all-zeros integer lanes) as bits, lane i in
// bit i: one movemask on x86.
template <typename M>
inline uint32_t lane_bits(const M& m) {
  constexpr int lanes = static_cast<int>(sizeof(M) / sizeof(m[0]));
#if defined(__x86_64__)
  if constexpr (sizeof(M) == 32 && lanes == 8) {
    return static_cast<uint32_t>(_mm256_movemask_ps(reinterpret_cast<__m256>(m)));
  } else if constexpr (sizeof(M) == 32 && lanes == 4) {
    return static_cast<uint32_t>(_mm256_movemask_pd(reinterpret_cast<__m256d>(m)));
  } else if constexpr (sizeof(M) == 16 && lanes == 4) {
    return static_cast<uint32_t>(_mm_movemask_ps(reinterpret_cast<__m128>(m)));
  } else if constexpr (sizeof(M) == 16 && lanes == 2) {
    return static_cast<uint32_t>(_mm_movemask_pd(reinterpret_cast<__m128d>(m)));
  }
#endif
  // The lane's bit in a statement of its own, then the shift: GCC 12's C++ front end, with both
  // -fsanitize=shift and -fsanitize=bounds (both in -fsanitize=undefined), miscompiles
  // `bits |= (m[i] != 0 ? 1u : 0u) << i`: the bounds check saves the index `i` in a temporary that is
  // assigned only inside the shift check's (never taken) error branch, and the normal path then reads
  // m[<uninitialised>]. cosine_topk's AVX-512 level (64-byte masks take this loop) returned -1 / NaN for
  // most rows. Our code has no undefined behaviour here; tests/test_cpu_simd.py compiles this header with
  // those flags and checks the bits. See docs/design.md, "Sanitizers".
  uint32_t bits = 0;
  for (int i = 0; i < lanes; ++i) {
    const uint32_t lane = m[i] != 0 ? uint32_t{1} : uint32_t{0};
    bits |= lane << i;
  }
  return bits;
}

// Whether any lane of a comparison mask (a vector of all-ones / all-zeros integer lanes) is set.
template <typename M>
inline bool any_lane(const M& m) {
  uint64_t words[sizeof(M) / 8];
  __builtin_memcpy(words, &m, sizeof(M));
  uint64_t acc = 0;
  for (size_t i = 0; i < sizeof(M) / 8; ++i) acc |= words[i];
  return acc != 0;
}

}  // namespace
}  // namespace facekernels::cpu
