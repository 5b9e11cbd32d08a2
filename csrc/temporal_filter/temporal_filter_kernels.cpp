// CPU kernels of temporal_filter, compiled once per SIMD level. The recurrences are sequential in time
// and independent across channels: each work item is one sequence b and a block of channels, walked
// frame by frame with the channel loop innermost (contiguous, vectorised by the compiler), the state kept
// in the state output's rows (L1-resident for any realistic C).
#include <cstdint>

#include "core/parallel.h"
#include "temporal_filter/temporal_filter_kernels.h"

namespace facekernels::cpu {
namespace {

constexpr double kTwoPi = 6.283185307179586476925286766559;

// Channel blocks: whole sequences when there are at least as many as threads, otherwise each sequence's
// channels split in blocks of a multiple of 16 elements (whole 64-byte lines of float32) so the threads
// share no cache line of the output.
int64_t channel_block(int64_t batch, int64_t channels) {
  const int64_t threads = num_threads();
  if (batch >= threads || channels <= 16) return channels > 0 ? channels : 1;
  const int64_t splits = (threads + batch - 1) / batch;
  const int64_t block = (channels + splits - 1) / splits;
  return (block + 15) / 16 * 16;
}

// Below this many samples (about 0.25 ms of work at ~1 ns per sample) the calling thread runs
// everything: waking the pool costs more than it saves, and on a loaded machine a parallel region can
// wait a whole scheduler slice for a descheduled worker (measured on the shared 2-core VM: a 4096 x 52
// sequence took 11 ms split over two threads, 0.2 ms on one).
constexpr int64_t kSerialSamples = int64_t{1} << 18;

// Calls body(b, c0, c1) for every (sequence, channel block), in parallel for large problems.
template <typename F>
void for_each_block(int64_t batch, int64_t frames, int64_t channels, const F& body) {
  const bool serial = batch * frames * channels < kSerialSamples;
  const int64_t block = serial ? (channels > 0 ? channels : 1) : channel_block(batch, channels);
  const int64_t blocks = (channels + block - 1) / block;
  parallel_for(0, batch * blocks, serial ? batch * blocks + 1 : 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / blocks, c0 = (i % blocks) * block;
      body(b, c0, c0 + block < channels ? c0 + block : channels);
    }
  });
}

inline void copy_channels(double* __restrict dst, const double* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}
inline void copy_channels(float* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

// One frame of the One Euro filter for n channels (Casiez et al. 2012):
//   dx     = (x - ref) / Te,  ref = the previous output (Raw = false) or the previous raw sample (Raw = true)
//   dx_hat = alpha(d_cutoff) * dx + (1 - alpha(d_cutoff)) * dx_hat
//   x_hat  = a * x + (1 - a) * x_hat,  a = alpha(min_cutoff + beta * |dx_hat|),  alpha(f) = r / (1 + r), r = 2 pi f Te.
template <typename T, bool Raw>
inline void one_euro_frame(const T* __restrict x, T* __restrict y, T* __restrict x_hat, T* __restrict dx_hat,
                           T* __restrict x_prev, int64_t n, T freq, T two_pi_te, T alpha_d, T min_cutoff,
                           T beta) {
  for (int64_t c = 0; c < n; ++c) {
    const T v = x[c];
    const T ref = Raw ? x_prev[c] : x_hat[c];
    const T dx = (v - ref) * freq;
    const T d = alpha_d * dx + (T(1) - alpha_d) * dx_hat[c];
    const T speed = d < T(0) ? -d : d;
    const T r = two_pi_te * (min_cutoff + beta * speed);
    const T a = r / (r + T(1));
    const T h = a * v + (T(1) - a) * x_hat[c];
    dx_hat[c] = d;
    x_hat[c] = h;
    x_prev[c] = v;
    y[c] = h;
  }
}

template <typename T, bool Raw>
void one_euro_block(const OneEuroArgs<T>& a, int64_t b, int64_t c0, int64_t c1) {
  const int64_t C = a.channels, n = c1 - c0;
  const T* x = a.x + b * a.frames * C + c0;
  T* y = a.y + b * a.frames * C + c0;
  T* x_hat = a.state_out + b * 3 * C + c0;
  T* dx_hat = x_hat + C;
  T* x_prev = x_hat + 2 * C;
  int64_t t = 0;
  if (a.state_in != nullptr) {
    const T* s = a.state_in + b * 3 * C + c0;
    copy_channels(x_hat, s, n);
    copy_channels(dx_hat, s + C, n);
    copy_channels(x_prev, s + 2 * C, n);
  } else {
    copy_channels(x_hat, x, n);
    for (int64_t c = 0; c < n; ++c) dx_hat[c] = T(0);
    copy_channels(x_prev, x, n);
    copy_channels(y, x, n);
    t = 1;
  }
  const T min_cutoff = static_cast<T>(a.min_cutoff), beta = static_cast<T>(a.beta);
  for (; t < a.frames; ++t) {
    const T te = a.periods != nullptr ? a.periods[b * a.periods_stride_b + t * a.periods_stride_t]
                                      : static_cast<T>(1.0 / a.rate);
    const T freq = a.periods != nullptr ? T(1) / te : static_cast<T>(a.rate);
    const T two_pi_te = static_cast<T>(kTwoPi) * te;
    const T rd = two_pi_te * static_cast<T>(a.d_cutoff);
    one_euro_frame<T, Raw>(x + t * C, y + t * C, x_hat, dx_hat, x_prev, n, freq, two_pi_te, rd / (rd + T(1)),
                           min_cutoff, beta);
  }
}

template <typename T>
void one_euro(const OneEuroArgs<T>& a) {
  for_each_block(a.batch, a.frames, a.channels, [&](int64_t b, int64_t c0, int64_t c1) {
    if (a.raw_derivative) {
      one_euro_block<T, true>(a, b, c0, c1);
    } else {
      one_euro_block<T, false>(a, b, c0, c1);
    }
  });
}

template <typename T>
void exponential_smoothing(const ExponentialSmoothingArgs<T>& a) {
  const T alpha = static_cast<T>(a.alpha), keep = static_cast<T>(1.0 - a.alpha);
  const int64_t C = a.channels;
  for_each_block(a.batch, a.frames, C, [&](int64_t b, int64_t c0, int64_t c1) {
    const int64_t n = c1 - c0;
    const T* __restrict x = a.x + b * a.frames * C + c0;
    T* __restrict y = a.y + b * a.frames * C + c0;
    T* __restrict s = a.state_out + b * C + c0;
    int64_t t = 0;
    if (a.state_in != nullptr) {
      copy_channels(s, a.state_in + b * C + c0, n);
    } else {
      copy_channels(s, x, n);
      copy_channels(y, x, n);
      t = 1;
    }
    for (; t < a.frames; ++t) {
      const T* xt = x + t * C;
      T* yt = y + t * C;
      for (int64_t c = 0; c < n; ++c) {
        const T h = alpha * xt[c] + keep * s[c];  // alpha = 1 returns x exactly
        s[c] = h;
        yt[c] = h;
      }
    }
  });
}

template <typename T>
constexpr TemporalFilterKernels<T> make_table() {
  return {.one_euro = &one_euro<T>, .exponential_smoothing = &exponential_smoothing<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(TemporalFilterKernels, temporal_filter_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(TemporalFilterKernels, temporal_filter_kernels, make_table, double)

}  // namespace facekernels::cpu
