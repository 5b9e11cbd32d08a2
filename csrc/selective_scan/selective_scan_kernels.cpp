// CPU kernels of selective_scan, compiled once per SIMD level.
//
// Per channel d and state n the scan is h[l] = exp(dt[l] A[d, n]) h[l-1] + dt[l] B[l, n] u[l], with
// y[l] = sum_n C[l, n] h[l]: sequential in l, independent across (b, d, n). A work item is a batch b and
// a tile of W = one vector's lanes of channels, one channel per lane; the sequence is walked in chunks of
// kChunk steps whose inputs are first transposed into lane-major scratch ([step][lane], B and C as
// [n][step][lane], each lane reading its own group's row), so the recurrence runs on whole vectors with
// the state of one n in a register and the exponential vectorised. The state lives in N vectors of the
// item: memory beyond the outputs is O(threads * N * kChunk), never O(B D N L).
//
// Backward: a forward pass keeps the state at each chunk start (N vectors per chunk of the item), then
// the chunks are walked backwards: each recomputes its states (and exponentials) from its checkpoint and
// runs the reverse recurrence gh[l] = gy[l] C[l] + exp(dt[l+1] A) gh[l+1], whose carry crosses chunks.
// The gradients of B and C sum over the channels of a group: each item adds its lanes into a slot of
// its own (one per (b, slice of channel tiles), the slices fixed by the shape), and the slots are added
// in order at the end; A, D and delta_bias sum over the batch from per-(b, d) partials, in order. The
// results do not depend on the thread count.
#include <cmath>
#include <cstdint>

#include "core/cpu_exp.h"
#include "core/cpu_simd.h"
#include "core/parallel.h"
#include "selective_scan/selective_scan_kernels.h"

namespace facekernels::cpu {
namespace {

constexpr int64_t kChunk = 32;

// Below this many state updates the calling thread runs everything (waking the pool costs more).
constexpr int64_t kSerialUpdates = int64_t{1} << 16;

template <typename T>
constexpr int64_t W = kLanes<T>;

// Natural log of positive normal float32 lanes: u = m 2^k with m in [sqrt(1/2), sqrt(2)), and
// log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, by its series to s^9 (the next term is below
// 2e-9 relative); k ln2 with ln2 split in two as in vexp.
inline Vec<float> vlog(Vec<float> u) {
  typedef int32_t VI __attribute__((vector_size(kVectorBytes)));
  VI bits;
  __builtin_memcpy(&bits, &u, sizeof(bits));
  VI k = (bits >> 23) - 127;
  const VI mantissa = (bits & 0x007fffff) | 0x3f800000;  // m in [1, 2)
  Vec<float> m;
  __builtin_memcpy(&m, &mantissa, sizeof(m));
  const Vec<float> half = broadcast<float>(0.5f), one = broadcast<float>(1.0f);
  const auto high = m > 1.41421356f;
  m = high ? m * half : m;
  k = high ? k + 1 : k;
  const Vec<float> s = (m - one) / (m + one), s2 = s * s;
  Vec<float> p = broadcast<float>(2.0f / 9.0f);
  p = p * s2 + 2.0f / 7.0f;
  p = p * s2 + 2.0f / 5.0f;
  p = p * s2 + 2.0f / 3.0f;
  p = p * s2 + 2.0f;
  const Vec<float> kf = __builtin_convertvector(k, Vec<float>);
  return s * p + kf * -2.12194440e-4f + kf * 0.693359375f;
}

// softplus with torch.nn.functional.softplus's default threshold (x itself above 20):
// log1p(e^x) as log(u) e / (u - 1), u = 1 + e^x, exact where u rounds to 1.
template <typename T>
inline Vec<T> vsoftplus(Vec<T> x) {
  const Vec<T> threshold = broadcast<T>(T(20));
  if constexpr (sizeof(T) == 4) {
    const Vec<float> e = vexp<float>(x > threshold ? threshold : x), one = broadcast<float>(1.0f);
    const Vec<float> u = one + e, d = u - one;
    const Vec<float> r = d == 0.0f ? e : vlog(u) * e / (d == 0.0f ? one : d);
    return x > threshold ? x : r;
  } else {
    Vec<T> r;
    for (int i = 0; i < kLanes<T>; ++i) r[i] = x[i] > T(20) ? x[i] : std::log1p(std::exp(x[i]));
    return r;
  }
}

// 1 / (1 + e^-x), the exponent's argument capped where float32's exp would overflow.
template <typename T>
inline Vec<T> vsigmoid(Vec<T> x) {
  const Vec<T> one = broadcast<T>(T(1)), cap = broadcast<T>(T(88));
  const Vec<T> minus = -x;
  return one / (one + vexp<T>(minus > cap ? cap : minus));
}

// The decay exp(dt * a); the argument is capped where float32's exp would overflow (A > 0 only).
template <typename T>
inline Vec<T> decay(Vec<T> dt, Vec<T> a) {
  Vec<T> x = dt * a;
  const Vec<T> cap = broadcast<T>(T(88));
  x = x > cap ? cap : x;
  return vexp<T>(x);
}

// The sizes of one problem and the item's place in it.
struct Tile {
  int64_t b, d0, lanes;  // channels d0 .. d0 + lanes - 1
};

// One tile's per-lane constants and one chunk's inputs in lane-major scratch: dt, u and z as
// [step][lane], B and C as [n][step][lane].
template <typename T>
struct ChunkBuffers {
  explicit ChunkBuffers(int64_t state)
      : a(state * W<T>), skip(W<T>), bias(W<T>), live(W<T>), raw(kChunk * W<T>), dt(kChunk * W<T>),
        u(kChunk * W<T>), dtu(kChunk * W<T>), z(kChunk * W<T>), y(kChunk * W<T>), bm(state * kChunk * W<T>),
        cm(state * kChunk * W<T>) {}
  Scratch<T> a, skip, bias, live, raw, dt, u, dtu, z, y, bm, cm;
};

// Copies rows src[lane * row_stride + step] (step < steps) into dst[step * W + lane]; lanes beyond
// `lanes` and steps beyond `steps` are zero.
template <typename T>
inline void gather_rows(T* __restrict dst, const T* __restrict src, int64_t row_stride, int64_t lanes,
                        int64_t steps) {
  for (int64_t i = 0; i < kChunk * W<T>; ++i) dst[i] = T(0);
  for (int64_t j = 0; j < lanes; ++j) {
    const T* row = src + j * row_stride;
    for (int64_t l = 0; l < steps; ++l) dst[l * W<T> + j] = row[l];
  }
}

// B or C of the chunk: lane j reads its group's row [b, g(d0 + j), n, l0 ..]. When the tile's channels
// are all in one group (always for the [B, N, L] form), each step's value is broadcast to every lane:
// one vector store per (n, step) instead of a scalar store per lane.
template <typename T>
void gather_matrix(T* __restrict dst, const T* m, int64_t groups, const SelectiveScanSizes& s, const Tile& t,
                   int64_t l0, int64_t steps) {
  const int64_t per_group = s.channels / groups, N = s.state, L = s.length;
  const int64_t first = t.d0 / per_group;
  if ((t.d0 + t.lanes - 1) / per_group == first) {
    const T* base = m + ((t.b * groups + first) * N) * L + l0;
    for (int64_t n = 0; n < N; ++n) {
      const T* row = base + n * L;
      T* out = dst + n * kChunk * W<T>;
      for (int64_t l = 0; l < steps; ++l) store(out + l * W<T>, broadcast<T>(row[l]));
    }
    return;
  }
  for (int64_t i = 0; i < N * kChunk * W<T>; ++i) dst[i] = T(0);
  for (int64_t j = 0; j < t.lanes; ++j) {
    const int64_t g = (t.d0 + j) / per_group;
    const T* base = m + ((t.b * groups + g) * N) * L + l0;
    for (int64_t n = 0; n < N; ++n) {
      const T* row = base + n * L;
      T* out = dst + n * kChunk * W<T> + j;
      for (int64_t l = 0; l < steps; ++l) out[l * W<T>] = row[l];
    }
  }
}

// The tile's per-lane constants: A's rows, D and delta_bias (0 where absent), and 1 in the tile's lanes
// (0 beyond it).
template <typename T>
void start_tile(ChunkBuffers<T>& buf, const SelectiveScanInputs<T>& in, int64_t N, const Tile& t) {
  for (int64_t j = 0; j < W<T>; ++j) {
    const bool inside = j < t.lanes;
    const int64_t d = t.d0 + j;
    for (int64_t n = 0; n < N; ++n) buf.a[n * W<T> + j] = inside ? in.A[d * N + n] : T(0);
    buf.skip[j] = inside && in.D != nullptr ? in.D[d] : T(0);
    buf.bias[j] = inside && in.delta_bias != nullptr ? in.delta_bias[d] : T(0);
    buf.live[j] = inside ? T(1) : T(0);
  }
}

// Fills raw (delta + delta_bias), dt, u, dt * u and z of the chunk at l0; dt is zero in lanes beyond
// the tile, so they neither decay nor take input.
template <typename T>
void load_steps(ChunkBuffers<T>& buf, const SelectiveScanInputs<T>& in, const SelectiveScanSizes& s, const Tile& t,
                int64_t l0, int64_t steps) {
  const int64_t row0 = (t.b * s.channels + t.d0) * s.length + l0;
  gather_rows(buf.raw.data(), in.delta + row0, s.length, t.lanes, steps);
  gather_rows(buf.u.data(), in.u + row0, s.length, t.lanes, steps);
  if (in.z != nullptr) gather_rows(buf.z.data(), in.z + row0, s.length, t.lanes, steps);
  const Vec<T> bias = load(buf.bias.data()), live = load(buf.live.data());
  for (int64_t l = 0; l < steps; ++l) {
    const int64_t i = l * W<T>;
    const Vec<T> raw = load(buf.raw.data() + i) + bias;
    store(buf.raw.data() + i, raw);
    const Vec<T> dt = (s.delta_softplus ? vsoftplus<T>(raw) : raw) * live;
    store(buf.dt.data() + i, dt);
    store(buf.dtu.data() + i, dt * load(buf.u.data() + i));
  }
}

// Writes the [step][lane] values src of the tile's lanes to their rows of a [B, D, L] tensor.
template <typename T>
inline void scatter_rows(T* __restrict dst, const T* __restrict src, int64_t row_stride, int64_t lanes,
                         int64_t steps) {
  for (int64_t j = 0; j < lanes; ++j) {
    T* row = dst + j * row_stride;
    for (int64_t l = 0; l < steps; ++l) row[l] = src[l * W<T> + j];
  }
}

// Runs the recurrence over one chunk from the states h (N vectors, updated in place), adding each
// step's C h into y when `cm` is given, and keeping every state and decay when `hs` is given.
template <typename T>
void scan_chunk(ChunkBuffers<T>& buf, T* h, int64_t N, int64_t steps, bool with_y, T* hs, T* decays) {
  const T* a = buf.a.data();
  const T* dt = buf.dt.data();
  const T* dtu = buf.dtu.data();
  T* y = buf.y.data();
  if (with_y) {
    for (int64_t i = 0; i < kChunk * W<T>; ++i) y[i] = T(0);
  }
  for (int64_t n = 0; n < N; ++n) {
    const Vec<T> an = load(a + n * W<T>);
    const T* bn = buf.bm.data() + n * kChunk * W<T>;
    const T* cn = buf.cm.data() + n * kChunk * W<T>;
    Vec<T> state = load(h + n * W<T>);
    for (int64_t l = 0; l < steps; ++l) {
      const int64_t i = l * W<T>;
      const Vec<T> da = decay<T>(load(dt + i), an);
      state = da * state + load(dtu + i) * load(bn + i);
      if (with_y) store(y + i, load(y + i) + load(cn + i) * state);
      if (hs != nullptr) {
        store(hs + n * kChunk * W<T> + i, state);
        store(decays + n * kChunk * W<T> + i, da);
      }
    }
    store(h + n * W<T>, state);
  }
}

inline int64_t tiles_of(int64_t channels, int64_t lanes) { return (channels + lanes - 1) / lanes; }

template <typename T>
void forward(const SelectiveScanForwardArgs<T>& a) {
  const SelectiveScanSizes& s = a.sizes;
  const int64_t N = s.state, L = s.length, D = s.channels;
  const int64_t tiles = tiles_of(D, W<T>);
  const int64_t items = s.batch * tiles;
  const bool serial = s.batch * D * L * N < kSerialUpdates;
  parallel_for(0, items, serial ? items : 1, [&](int64_t begin, int64_t end) {
    ChunkBuffers<T> buf(N);
    Scratch<T> h(N * W<T>);
    for (int64_t item = begin; item < end; ++item) {
      const Tile t{item / tiles, (item % tiles) * W<T>, min64(W<T>, D - (item % tiles) * W<T>)};
      start_tile(buf, a.in, N, t);
      for (int64_t i = 0; i < N * W<T>; ++i) h[i] = T(0);
      const Vec<T> skip = load(buf.skip.data());
      for (int64_t l0 = 0; l0 < L; l0 += kChunk) {
        const int64_t steps = min64(kChunk, L - l0);
        load_steps(buf, a.in, s, t, l0, steps);
        gather_matrix(buf.bm.data(), a.in.B, s.groups_b, s, t, l0, steps);
        gather_matrix(buf.cm.data(), a.in.C, s.groups_c, s, t, l0, steps);
        scan_chunk(buf, h.data(), N, steps, true, static_cast<T*>(nullptr), static_cast<T*>(nullptr));
        for (int64_t l = 0; l < steps; ++l) {  // out = (y + D u) silu(z), over y in place
          const int64_t i = l * W<T>;
          Vec<T> v = load(buf.y.data() + i) + skip * load(buf.u.data() + i);
          if (a.in.z != nullptr) {
            const Vec<T> zz = load(buf.z.data() + i);
            v *= zz * vsigmoid<T>(zz);
          }
          store(buf.y.data() + i, v);
        }
        scatter_rows(a.out + (t.b * D + t.d0) * L + l0, buf.y.data(), L, t.lanes, steps);
      }
      for (int64_t j = 0; j < t.lanes; ++j) {
        for (int64_t n = 0; n < N; ++n) a.last_state[(t.b * D + t.d0 + j) * N + n] = h[n * W<T> + j];
      }
    }
  });
}

// Adds the lanes of a [n][step][lane] chunk gradient into a [G, N, L] slot, each lane into its group
// (lanes beyond the tile hold zeros: their gradients of y and of the last state are zero).
template <typename T>
void scatter_matrix(T* slot, const T* src, int64_t groups, const SelectiveScanSizes& s, const Tile& t, int64_t l0,
                    int64_t steps) {
  const int64_t per_group = s.channels / groups, N = s.state, L = s.length;
  const int64_t first = t.d0 / per_group;
  if ((t.d0 + t.lanes - 1) / per_group == first) {
    for (int64_t n = 0; n < N; ++n) {
      T* row = slot + (first * N + n) * L + l0;
      const T* in = src + n * kChunk * W<T>;
      for (int64_t l = 0; l < steps; ++l) row[l] += horizontal_sum<T>(load(in + l * W<T>));
    }
    return;
  }
  for (int64_t j = 0; j < t.lanes; ++j) {
    const int64_t g = (t.d0 + j) / per_group;
    for (int64_t n = 0; n < N; ++n) {
      T* row = slot + (g * N + n) * L + l0;
      const T* in = src + n * kChunk * W<T> + j;
      for (int64_t l = 0; l < steps; ++l) row[l] += in[l * W<T>];
    }
  }
}

// Lane-wise sums of the B or C gradient of one (batch, slice) over its tiles whose lanes all fall in
// one group, [G, N, L][lane]: a vector add per (n, step), the lanes added once when the slice is done
// instead of once per tile. Used while they stay under kLaneSumElements (else the lanes of each
// chunk are added as it is done).
constexpr int64_t kLaneSumElements = int64_t{1} << 22;

template <typename T>
int64_t lane_sum_size(int64_t groups, int64_t state, int64_t length) {
  const int64_t n = groups * state * length * W<T>;
  return n <= kLaneSumElements ? n : 0;
}

// Scratch of one backward worker.
template <typename T>
struct BackwardScratch {
  BackwardScratch(int64_t state, int64_t chunks, int64_t lane_sum_b, int64_t lane_sum_c)
      : lanes_b(lane_sum_b), lanes_c(lane_sum_c), buf(state), h(state * W<T>), carry(state * W<T>), grad_a(state * W<T>), checkpoints(chunks * state * W<T>),
        hs(state * kChunk * W<T>), decays(state * kChunk * W<T>), grad_bm(state * kChunk * W<T>),
        grad_cm(state * kChunk * W<T>), gout(kChunk * W<T>), gy(kChunk * W<T>), gu(kChunk * W<T>),
        gdt(kChunk * W<T>), gz(kChunk * W<T>), grad_d(W<T>), grad_bias(W<T>) {}
  Scratch<T> lanes_b, lanes_c;  // empty when over kLaneSumElements
  ChunkBuffers<T> buf;
  Scratch<T> h, carry, grad_a, checkpoints, hs, decays, grad_bm, grad_cm, gout, gy, gu, gdt, gz, grad_d, grad_bias;
};

// Where a chunk's B or C gradient goes: [n][step][lane] rows at `base` (n rows `stride` apart) that are
// the worker's lane sums (added to) or its chunk scratch (overwritten, then scattered to the slot).
template <typename T>
struct GradientRows {
  T* base;
  int64_t stride;
  bool lane_sums;
};

template <typename T>
GradientRows<T> gradient_rows(T* lane_sums, T* scratch, int64_t groups, const SelectiveScanSizes& s, const Tile& t,
                              int64_t l0) {
  const int64_t per_group = s.channels / groups, g = t.d0 / per_group;
  if (lane_sums != nullptr && (t.d0 + t.lanes - 1) / per_group == g) {
    return {lane_sums + (g * s.state * s.length + l0) * W<T>, s.length * W<T>, true};
  }
  return {scratch, kChunk * W<T>, false};
}

template <typename T>
inline void put(T* p, Vec<T> v, bool add) {
  store(p, add ? load(p) + v : v);
}

// The backward of one tile, its B and C gradients added into the [G, N, L] slots slot_b and slot_c (or
// the worker's lane sums).
template <typename T>
void backward_tile(const SelectiveScanBackwardArgs<T>& a, BackwardScratch<T>& w, const Tile& t, T* slot_b,
                   T* slot_c) {
  const SelectiveScanSizes& s = a.sizes;
  const int64_t N = s.state, L = s.length, D = s.channels;
  T* lanes_b = w.lanes_b.data();
  T* lanes_c = w.lanes_c.data();
  const int64_t chunks = (L + kChunk - 1) / kChunk;
  ChunkBuffers<T>& buf = w.buf;
  start_tile(buf, a.in, N, t);
  // Forward: the state at each chunk start.
  for (int64_t i = 0; i < N * W<T>; ++i) w.h[i] = T(0);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t l0 = c * kChunk, steps = min64(kChunk, L - l0);
    for (int64_t i = 0; i < N * W<T>; ++i) w.checkpoints[c * N * W<T> + i] = w.h[i];
    if (c + 1 == chunks) break;  // the last chunk's end state is not needed
    load_steps(buf, a.in, s, t, l0, steps);
    gather_matrix(buf.bm.data(), a.in.B, s.groups_b, s, t, l0, steps);
    scan_chunk(buf, w.h.data(), N, steps, false, static_cast<T*>(nullptr), static_cast<T*>(nullptr));
  }
  // The reverse recurrence's carry starts at the last state's gradient.
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < W<T>; ++j) {
      const bool given = a.grad_last_state != nullptr && j < t.lanes;
      w.carry[n * W<T> + j] = given ? a.grad_last_state[(t.b * D + t.d0 + j) * N + n] : T(0);
    }
  }
  for (int64_t i = 0; i < N * W<T>; ++i) w.grad_a[i] = T(0);
  const Vec<T> skip = load(buf.skip.data()), one = broadcast<T>(T(1));
  Vec<T> grad_skip = {}, grad_bias = {};
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t l0 = c * kChunk, steps = min64(kChunk, L - l0);
    const int64_t row0 = (t.b * D + t.d0) * L + l0;
    load_steps(buf, a.in, s, t, l0, steps);
    gather_matrix(buf.bm.data(), a.in.B, s.groups_b, s, t, l0, steps);
    gather_matrix(buf.cm.data(), a.in.C, s.groups_c, s, t, l0, steps);
    gather_rows(w.gout.data(), a.grad_out + row0, L, t.lanes, steps);
    T* checkpoint = w.checkpoints.data() + c * N * W<T>;
    for (int64_t i = 0; i < N * W<T>; ++i) w.h[i] = checkpoint[i];
    scan_chunk(buf, w.h.data(), N, steps, true, w.hs.data(), w.decays.data());
    const GradientRows<T> rows_b = gradient_rows(lanes_b, w.grad_bm.data(), s.groups_b, s, t, l0);
    const GradientRows<T> rows_c = gradient_rows(lanes_c, w.grad_cm.data(), s.groups_c, s, t, l0);
    // Through out = (y + D u) * silu(z): the gradients of y, z and D, and D's part of u's.
    for (int64_t l = 0; l < steps; ++l) {
      const int64_t i = l * W<T>;
      const Vec<T> g = load(w.gout.data() + i), uu = load(buf.u.data() + i);
      Vec<T> gy = g;
      if (a.in.z != nullptr) {
        const Vec<T> zz = load(buf.z.data() + i), sz = vsigmoid<T>(zz);
        gy = g * zz * sz;
        store(w.gz.data() + i, g * (load(buf.y.data() + i) + skip * uu) * sz * (one + zz * (one - sz)));
      }
      store(w.gy.data() + i, gy);
      store(w.gu.data() + i, gy * skip);
      store(w.gdt.data() + i, Vec<T>{});
      grad_skip += gy * uu;
    }
    // The reverse recurrence, one state n at a time.
    for (int64_t n = 0; n < N; ++n) {
      const int64_t base = n * kChunk * W<T>;
      const Vec<T> an = load(buf.a.data() + n * W<T>);
      const T* bn = buf.bm.data() + base;
      const T* cn = buf.cm.data() + base;
      const T* hn = w.hs.data() + base;
      const T* dn = w.decays.data() + base;
      T* gbn = rows_b.base + n * rows_b.stride;
      T* gcn = rows_c.base + n * rows_c.stride;
      Vec<T> carry = load(w.carry.data() + n * W<T>);
      Vec<T> grad_a = load(w.grad_a.data() + n * W<T>);
      for (int64_t l = steps - 1; l >= 0; --l) {
        const int64_t i = l * W<T>;
        const Vec<T> gy = load(w.gy.data() + i), dt = load(buf.dt.data() + i);
        const Vec<T> b = load(bn + i), da = load(dn + i);
        const Vec<T> prev = l > 0 ? load(hn + i - W<T>) : load(checkpoint + n * W<T>);
        const Vec<T> gh = gy * load(cn + i) + carry;
        put(gcn + i, gy * load(hn + i), rows_c.lane_sums);
        put(gbn + i, gh * load(buf.dtu.data() + i), rows_b.lane_sums);
        store(w.gu.data() + i, load(w.gu.data() + i) + gh * dt * b);
        const Vec<T> through_decay = gh * prev * da;
        store(w.gdt.data() + i, load(w.gdt.data() + i) + gh * b * load(buf.u.data() + i) + through_decay * an);
        grad_a += through_decay * dt;
        carry = da * gh;
      }
      store(w.carry.data() + n * W<T>, carry);
      store(w.grad_a.data() + n * W<T>, grad_a);
    }
    if (!rows_b.lane_sums) scatter_matrix(slot_b, w.grad_bm.data(), s.groups_b, s, t, l0, steps);
    if (!rows_c.lane_sums) scatter_matrix(slot_c, w.grad_cm.data(), s.groups_c, s, t, l0, steps);
    // ddelta = ddt * softplus'(raw) = ddt * sigmoid(raw) below the threshold; dt is zero beyond the tile
    const Vec<T> threshold = broadcast<T>(T(20));
    for (int64_t l = 0; l < steps; ++l) {
      const int64_t i = l * W<T>;
      Vec<T> gdt = load(w.gdt.data() + i);
      if (s.delta_softplus) {
        const Vec<T> raw = load(buf.raw.data() + i);
        gdt = raw > threshold ? gdt : gdt * vsigmoid<T>(raw);
      }
      gdt *= load(buf.live.data());
      store(w.gdt.data() + i, gdt);
      grad_bias += gdt;
    }
    scatter_rows(a.grad_u + row0, w.gu.data(), L, t.lanes, steps);
    scatter_rows(a.grad_delta + row0, w.gdt.data(), L, t.lanes, steps);
    if (a.in.z != nullptr) scatter_rows(a.grad_z + row0, w.gz.data(), L, t.lanes, steps);
  }
  store(w.grad_d.data(), grad_skip);
  store(w.grad_bias.data(), grad_bias);
}

// With `add`, adds each element's lane sums into the slot; then (or without `add`) zeroes them.
template <typename T>
void add_lane_sums(T* lane_sums, T* slot, int64_t size, bool add) {
  if (lane_sums == nullptr) return;
  for (int64_t i = 0; i < size; ++i) {
    if (add) slot[i] += horizontal_sum<T>(load(lane_sums + i * W<T>));
    store(lane_sums + i * W<T>, Vec<T>{});
  }
}

template <typename T>
void backward(const SelectiveScanBackwardArgs<T>& a) {
  const SelectiveScanSizes& s = a.sizes;
  const int64_t N = s.state, L = s.length, D = s.channels, batch = s.batch;
  const int64_t tiles = tiles_of(D, W<T>);
  const int64_t chunks = (L + kChunk - 1) / kChunk;
  // Each batch's tiles in `slices` fixed slices (by the shape alone), so that small batches still
  // spread over the threads; each (b, slice) owns a slot for the B and C gradients.
  const int64_t slices = min64(tiles, max64(1, (8 + batch - 1) / batch));
  const int64_t per_slice = (tiles + slices - 1) / slices;
  const int64_t size_b = s.groups_b * N * L, size_c = s.groups_c * N * L;
  const bool partial = slices > 1;
  Scratch<T> slots_b(partial ? batch * slices * size_b : 0), slots_c(partial ? batch * slices * size_c : 0);
  Scratch<T> part_a(batch * D * N), part_d(batch * D), part_bias(batch * D);
  const bool serial = batch * D * L * N < kSerialUpdates;
  parallel_for(0, batch * slices, serial ? batch * slices : 1, [&](int64_t begin, int64_t end) {
    BackwardScratch<T> w(N, chunks, lane_sum_size<T>(s.groups_b, N, L), lane_sum_size<T>(s.groups_c, N, L));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / slices, slice = item % slices;
      T* slot_b = partial ? slots_b.data() + item * size_b : a.grad_B + b * size_b;
      T* slot_c = partial ? slots_c.data() + item * size_c : a.grad_C + b * size_c;
      for (int64_t i = 0; i < size_b; ++i) slot_b[i] = T(0);
      for (int64_t i = 0; i < size_c; ++i) slot_c[i] = T(0);
      add_lane_sums(w.lanes_b.data(), slot_b, size_b, false);
      add_lane_sums(w.lanes_c.data(), slot_c, size_c, false);
      for (int64_t tile = slice * per_slice; tile < min64(tiles, (slice + 1) * per_slice); ++tile) {
        const Tile t{b, tile * W<T>, min64(W<T>, D - tile * W<T>)};
        backward_tile(a, w, t, slot_b, slot_c);
        for (int64_t j = 0; j < t.lanes; ++j) {
          const int64_t bd = b * D + t.d0 + j;
          for (int64_t n = 0; n < N; ++n) part_a[bd * N + n] = w.grad_a[n * W<T> + j];
          part_d[bd] = w.grad_d[j];
          part_bias[bd] = w.grad_bias[j];
        }
      }
      add_lane_sums(w.lanes_b.data(), slot_b, size_b, true);
      add_lane_sums(w.lanes_c.data(), slot_c, size_c, true);
    }
  });
  // The sums over the slices and the batch, in a fixed order.
  if (partial) {
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < size_b; ++i) {
        T acc = T(0);
        for (int64_t sl = 0; sl < slices; ++sl) acc += slots_b[(b * slices + sl) * size_b + i];
        a.grad_B[b * size_b + i] = acc;
      }
      for (int64_t i = 0; i < size_c; ++i) {
        T acc = T(0);
        for (int64_t sl = 0; sl < slices; ++sl) acc += slots_c[(b * slices + sl) * size_c + i];
        a.grad_C[b * size_c + i] = acc;
      }
    }
  }
  for (int64_t i = 0; i < D * N; ++i) {
    T acc = T(0);
    for (int64_t b = 0; b < batch; ++b) acc += part_a[b * D * N + i];
    a.grad_A[i] = acc;
  }
  for (int64_t d = 0; d < D; ++d) {
    T acc_d = T(0), acc_bias = T(0);
    for (int64_t b = 0; b < batch; ++b) {
      acc_d += part_d[b * D + d];
      acc_bias += part_bias[b * D + d];
    }
    if (a.grad_D != nullptr) a.grad_D[d] = acc_d;
    if (a.grad_delta_bias != nullptr) a.grad_delta_bias[d] = acc_bias;
  }
}

template <typename T>
constexpr SelectiveScanKernels<T> make_table() {
  return {.forward = &forward<T>, .backward = &backward<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(SelectiveScanKernels, selective_scan_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(SelectiveScanKernels, selective_scan_kernels, make_table, double)

}  // namespace facekernels::cpu
