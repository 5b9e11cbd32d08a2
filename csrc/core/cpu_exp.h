// The vectorised exponential of the CPU kernel sources (compiled once per SIMD level, like cpu_simd.h):
// float32 lanes by Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2, a degree-7 polynomial for e^r
// (relative error about 2 ulp) and 2^n added into the exponent bits, arguments below -87 giving 0;
// float64 lanes through the C library's exp (the reference dtype: exact rather than fast). Shared by
// diff_attention's softmax epilogues and selective_scan's state decay.
#pragma once

#include <cstdint>

#include "core/cpu_simd.h"

namespace facekernels::cpu {
namespace {

template <typename T>
inline Vec<T> vexp(Vec<T> x) {
  if constexpr (sizeof(T) == 4) {
    // Unsigned lanes: the exponent addition below overflows (and its lanes are discarded) where x is far
    // below -87; on int32 lanes that is signed overflow, undefined (UBSan reported it; issue 17).
    typedef uint32_t VI __attribute__((vector_size(kVectorBytes)));
    const Vec<float> magic = broadcast<float>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    const Vec<float> t = x * 1.44269504088896341f + magic;
    const Vec<float> n = t - magic;
    Vec<float> r = x - n * 0.693359375f;  // ln2 split in two: the high part is exact in float
    r = r - n * -2.12194440e-4f;
    Vec<float> p = broadcast<float>(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    VI ti, pi;
    __builtin_memcpy(&ti, &t, sizeof(ti));
    __builtin_memcpy(&pi, &p, sizeof(pi));
    pi += ti << 23;  // the low bits of t hold n (two's complement, wrapping): p * 2^n
    Vec<float> e;
    __builtin_memcpy(&e, &pi, sizeof(e));
    const Vec<float> zero = {};
    return x < -87.0f ? zero : e;
  } else {
    Vec<T> e;
    for (int i = 0; i < kLanes<T>; ++i) e[i] = __builtin_exp(x[i]);
    return e;
  }
}

}  // namespace
}  // namespace facekernels::cpu
