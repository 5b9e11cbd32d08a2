// st_graph_conv (the spatio-temporal multi-graph convolution of ST-GCN): the contraction-order choice and
// the GEMM driver, shared by the CPU binding (st_graph_conv_cpu.cpp) and the CUDA binding
// (st_graph_conv_cuda.cpp), each of which hands it a backend for the elementwise steps.
//
//   out[n, c, t, w] = sum_k sum_v ( sum_i W[k, c, i] x[n, i, t, v] + b[k, c] ) A[(n,) k, v, w]
//
// Per sample the op is two chained products, a channel product (Cout x Cin per partition) and a graph
// aggregation (V x V per partition), and the order decides the cost:
//   AggregateFirst: Y[k] = X A_k  ([Cin T, V] x [V, V], K GEMMs), then out = Wcat Y with
//                   Wcat[c, (k, i)] = W[k, c, i]  (one GEMM [Cout, K Cin] x [K Cin, T V]);
//                   the bias adds sum_k b[k, c] colsum(A_k)[w] to every frame.
//   ChannelFirst:   Z = Wstack X with Wstack = W as [K Cout, Cin] (one GEMM), Z += b per row, then
//                   out = sum_k Z_k A_k  ([Cout T, V] x [V, V], K GEMMs).
// Both share K Cin Cout T V multiply-adds; aggregating first adds K Cin T V^2, channels first K Cout T V^2,
// so the smaller channel count goes through the graph. The backward picks its own order from the
// gradients asked for (st_graph_conv_backward_order):
//   AggregateFirst: dY = Wcat^T G, grad_x = sum_k dY_k A_k^T, grad_A[k] += X^T dY_k (+ the bias term),
//                   grad_Wcat += G Y^T (Y recomputed), grad_b[k, c] += sum_w (sum_t G)[c, w] colsum(A_k)[w].
//   ChannelFirst:   H_k = G A_k^T, grad_x = Wstack^T H, grad_Wstack += H X^T, grad_A[k] += Z_k^T G
//                   (Z with its bias recomputed), grad_b as above.
//
// Memory: nothing of size [N, K, C, T, V]. The samples are split into one contiguous chunk per worker
// (a thread of torch's pool); each worker reuses its own buffers of one sample's intermediates (a few
// K C T V each) and its own partial sums of the shared gradients (weight, shared adjacency, bias), which
// are added in worker order at the end: the result depends on the thread count only through that
// order. GEMMs go through torch's mm.out (aten::mm.out via the stable dispatcher call) into those
// buffers; inside the parallel region torch runs BLAS single-threaded, and with one worker (a batch of
// one, or CUDA) the GEMMs may use the library's own threads.
#include "st_graph_conv/st_graph_conv.h"

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

#include "core/blas.h"
#include "core/parallel.h"
#include "core/tensors.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

namespace {

// Per-sample multiply-adds of the pieces.
struct Costs {
  double channel, aggregate_in, aggregate_out;  // K Cin Cout TV, K Cin TV V, K Cout TV V
};

Costs costs_of(const StGraphConvProblem& p) {
  const double k = static_cast<double>(p.partitions), cin = static_cast<double>(p.in_channels);
  const double cout = static_cast<double>(p.out_channels);
  const double tv = static_cast<double>(p.frames) * static_cast<double>(p.nodes);
  const double v = static_cast<double>(p.nodes);
  return {k * cin * cout * tv, k * cin * tv * v, k * cout * tv * v};
}

}  // namespace

StGraphConvOrder st_graph_conv_forward_order(const StGraphConvProblem& p) {
  const Costs c = costs_of(p);
  const double aggregate_first = c.aggregate_in + c.channel;
  const double channel_first = c.channel + c.aggregate_out;
  return aggregate_first <= channel_first ? StGraphConvOrder::AggregateFirst : StGraphConvOrder::ChannelFirst;
}

StGraphConvOrder st_graph_conv_backward_order(const StGraphConvProblem& p, const StGraphConvMask& mask) {
  const Costs c = costs_of(p);
  const bool need_x = mask[0], need_w = mask[1], need_a = mask[2];
  double aggregate_first = 0, channel_first = 0;
  // AggregateFirst: dY (for x and A), dY A^T (x), X^T dY (A), Y and G Y^T (W).
  if (need_x || need_a) aggregate_first += c.channel;
  if (need_x) aggregate_first += c.aggregate_in;
  if (need_a) aggregate_first += c.aggregate_in;
  if (need_w) aggregate_first += c.aggregate_in + c.channel;
  // ChannelFirst: H (for x and W), Wstack^T H (x), H X^T (W), Z and Z^T G (A).
  if (need_x || need_w) channel_first += c.aggregate_out;
  if (need_x) channel_first += c.channel;
  if (need_w) channel_first += c.channel;
  if (need_a) channel_first += c.channel + c.aggregate_out;
  return aggregate_first <= channel_first ? StGraphConvOrder::AggregateFirst : StGraphConvOrder::ChannelFirst;
}

namespace {

// Carves one worker's buffers out of a flat allocation.
struct Carver {
  int64_t used = 0;
  int64_t take(int64_t n) {
    const int64_t at = used;
    used += (n + 15) / 16 * 16;  // 64-byte aligned starts for float
    return at;
  }
};

// Runs body(worker, first_sample, end_sample) for each worker's chunk of samples.
template <typename F>
void for_each_worker(int64_t batch, int64_t workers, const F& body) {
  auto chunk = [&](int64_t w) { body(w, batch * w / workers, batch * (w + 1) / workers); };
  if (workers <= 1) {
    chunk(0);
    return;
  }
  parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) chunk(w);
  });
}

}  // namespace

template <typename T>
Tensor st_graph_conv_run_forward(const Tensor& x, const Tensor& weight, const Tensor& adjacency,
                                 const std::optional<Tensor>& bias, const StGraphConvProblem& p,
                                 const StGraphConvBackend<T>& backend, int64_t workers) {
  const int64_t n_batch = p.batch, cin = p.in_channels, cout = p.out_channels, frames = p.frames;
  const int64_t nodes = p.nodes, parts = p.partitions, tv = frames * nodes, vv = nodes * nodes;
  // K = 0 (no partition) sums nothing: zeros.
  const std::array<int64_t, 4> out_sizes{n_batch, cout, frames, nodes};
  Tensor out = parts == 0 ? torch::stable::new_zeros(x, out_sizes) : new_cpu_output(x, out_sizes);
  if (out.numel() == 0 || parts == 0) return out;
  workers = std::max<int64_t>(1, std::min(workers, n_batch));
  const StGraphConvOrder order = st_graph_conv_forward_order(p);
  const bool aggregate_first = order == StGraphConvOrder::AggregateFirst;
  const torch::stable::Device device = x.device();
  const ScalarType dtype = x.scalar_type();
  const T* xp = data_of<const T>(x);
  const int64_t x_stride = x.stride(0);
  const T* ap = data_of<const T>(adjacency);
  const int64_t a_stride = p.per_sample ? parts * vv : 0;
  const T* bp = p.has_bias ? data_of<const T>(*bias) : nullptr;
  T* op = data_of<T>(out);

  // Wcat [Cout, K, Cin] for aggregating first; Wstack is weight itself.
  const Tensor wcat = aggregate_first ? torch::stable::contiguous(torch::stable::transpose(weight, 0, 1)) : weight;
  const T* wp = data_of<const T>(wcat);

  Carver carve;
  const int64_t at_main = carve.take(aggregate_first ? parts * cin * tv : parts * cout * tv);
  const int64_t at_tmp = carve.take(aggregate_first ? 0 : (parts > 1 ? cout * tv : 0));
  const bool bias_table = aggregate_first && p.has_bias;
  const int64_t at_colsum = carve.take(bias_table ? parts * nodes : 0);
  const int64_t at_table = carve.take(bias_table ? cout * nodes : 0);
  const int64_t per_worker = carve.used;
  Tensor scratch = torch::stable::new_empty(x, {workers * per_worker});
  T* scratch_p = data_of<T>(scratch);
  if (bias_table && !p.per_sample) {
    // One table for the whole batch, in worker 0's slot, read by every worker.
    backend.column_sums(ap, parts, nodes, scratch_p + at_colsum);
    backend.bias_table(bp, scratch_p + at_colsum, parts, cout, nodes, scratch_p + at_table);
  }

  for_each_worker(n_batch, workers, [&](int64_t w, int64_t first, int64_t end) {
    T* buf = scratch_p + w * per_worker;
    T* main = buf + at_main;
    for (int64_t n = first; n < end; ++n) {
      const T* xn = xp + n * x_stride;
      const T* an = ap + n * a_stride;
      T* outn = op + n * cout * tv;
      if (aggregate_first) {
        for (int64_t k = 0; k < parts; ++k) {
          gemm_into(MatrixView::row_major(main + k * cin * tv, cin * frames, nodes),
                    MatrixView::row_major(xn, cin * frames, nodes), MatrixView::row_major(an + k * vv, nodes, nodes),
                    device, dtype);
        }
        gemm_into(MatrixView::row_major(outn, cout, tv),
                  MatrixView::row_major(wp, cout, parts * cin), MatrixView::row_major(main, parts * cin, tv), device,
                  dtype);
        if (bias_table) {
          T* table = scratch_p + at_table;
          if (p.per_sample) {
            table = buf + at_table;
            backend.column_sums(an, parts, nodes, buf + at_colsum);
            backend.bias_table(bp, buf + at_colsum, parts, cout, nodes, table);
          }
          backend.add_over_time(outn, table, cout, frames, nodes);
        }
      } else {
        gemm_into(MatrixView::row_major(main, parts * cout, tv),
                  MatrixView::row_major(wp, parts * cout, cin), MatrixView::row_major(xn, cin, tv), device, dtype);
        if (bp != nullptr) backend.add_to_rows(main, bp, parts * cout, tv);
        gemm_into(MatrixView::row_major(outn, cout * frames, nodes),
                  MatrixView::row_major(main, cout * frames, nodes), MatrixView::row_major(an, nodes, nodes), device,
                  dtype);
        for (int64_t k = 1; k < parts; ++k) {
          gemm_into(MatrixView::row_major(buf + at_tmp, cout * frames, nodes),
                    MatrixView::row_major(main + k * cout * tv, cout * frames, nodes),
                    MatrixView::row_major(an + k * vv, nodes, nodes), device, dtype);
          backend.accumulate(outn, buf + at_tmp, cout * tv);
        }
      }
    }
  });
  return out;
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor> st_graph_conv_run_backward(
    const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& adjacency,
    const std::optional<Tensor>& bias, const StGraphConvProblem& p, const StGraphConvMask& mask,
    const StGraphConvBackend<T>& backend, int64_t workers) {
  const int64_t n_batch = p.batch, cin = p.in_channels, cout = p.out_channels, frames = p.frames;
  const int64_t nodes = p.nodes, parts = p.partitions, tv = frames * nodes, vv = nodes * nodes;
  const bool need_x = mask[0], need_w = mask[1], need_a = mask[2], need_b = mask[3] && p.has_bias;
  using torch::headeronly::IntHeaderOnlyArrayRef;
  const bool empty = n_batch == 0 || cout == 0 || tv == 0 || parts == 0;
  // Nothing to add up, or nothing to hold: zeros; else a GEMM writes every element.
  Tensor grad_x = empty || cin * tv == 0
                      ? torch::stable::new_zeros(x, need_x ? x.sizes() : IntHeaderOnlyArrayRef{0})
                      : new_cpu_output(x, need_x ? x.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_w = torch::stable::new_zeros(x, need_w ? weight.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_a = torch::stable::new_zeros(x, need_a ? adjacency.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_b = torch::stable::new_zeros(x, need_b ? IntHeaderOnlyArrayRef{parts, cout} : IntHeaderOnlyArrayRef{0});
  if (empty || !(need_x || need_w || need_a || need_b)) return {grad_x, grad_w, grad_a, grad_b};
  workers = std::max<int64_t>(1, std::min(workers, n_batch));
  const bool aggregate_first = st_graph_conv_backward_order(p, mask) == StGraphConvOrder::AggregateFirst;
  const torch::stable::Device device = x.device();
  const ScalarType dtype = x.scalar_type();
  const T* xp = data_of<const T>(x);
  const int64_t x_stride = x.stride(0);
  const T* gp = data_of<const T>(grad_out);
  const int64_t g_stride = grad_out.stride(0);
  const T* ap = data_of<const T>(adjacency);
  const int64_t a_stride = p.per_sample ? parts * vv : 0;
  const T* bp = p.has_bias ? data_of<const T>(*bias) : nullptr;
  const Tensor wcat = aggregate_first ? torch::stable::contiguous(torch::stable::transpose(weight, 0, 1)) : weight;
  const T* wp = data_of<const T>(wcat);
  T* gx = need_x ? data_of<T>(grad_x) : nullptr;
  T* ga = need_a ? data_of<T>(grad_a) : nullptr;
  const bool shared_a = need_a && !p.per_sample;
  const bool need_sums = need_b || (need_a && p.has_bias);

  Carver carve;
  const int64_t weight_size = parts * cout * cin;
  // AggregateFirst: main = dY [K Cin, TV], second = Y [K Cin, TV]; ChannelFirst: main = H [K Cout, TV],
  // second = Z [K Cout, TV].
  const int64_t main_size = aggregate_first ? ((need_x || need_a) ? parts * cin * tv : 0)
                                            : ((need_x || need_w) ? parts * cout * tv : 0);
  const int64_t second_size = aggregate_first ? (need_w ? parts * cin * tv : 0) : (need_a ? parts * cout * tv : 0);
  const int64_t at_main = carve.take(main_size);
  const int64_t at_second = carve.take(second_size);
  const int64_t at_tmp_x = carve.take(aggregate_first && need_x && parts > 1 ? cin * tv : 0);
  const int64_t at_tmp_w = carve.take(need_w ? weight_size : 0);
  const int64_t at_tmp_a = carve.take(shared_a ? vv : 0);
  const int64_t at_sums = carve.take(need_sums ? cout * nodes : 0);
  const int64_t at_colsum = carve.take(need_b ? parts * nodes : 0);
  const int64_t per_worker = carve.used;
  Carver carve_partial;
  const int64_t at_part_w = carve_partial.take(need_w ? weight_size : 0);
  const int64_t at_part_a = carve_partial.take(shared_a ? parts * vv : 0);
  const int64_t at_part_b = carve_partial.take(need_b ? parts * cout : 0);
  const int64_t per_partial = carve_partial.used;
  Tensor scratch = torch::stable::new_empty(x, {workers * per_worker});
  Tensor partials = torch::stable::new_zeros(x, {workers * per_partial});
  T* scratch_p = data_of<T>(scratch);
  T* partial_p = data_of<T>(partials);
  if (need_b && !p.per_sample) backend.column_sums(ap, parts, nodes, scratch_p + at_colsum);

  for_each_worker(n_batch, workers, [&](int64_t w, int64_t first, int64_t end) {
    T* buf = scratch_p + w * per_worker;
    T* part = partial_p + w * per_partial;
    T* main = buf + at_main;
    T* second = buf + at_second;
    for (int64_t n = first; n < end; ++n) {
      const T* xn = xp + n * x_stride;
      const T* gn = gp + n * g_stride;
      const T* an = ap + n * a_stride;
      // The shared adjacency's gradient goes to this worker's partial sum, a per-sample one straight out.
      T* gan = shared_a ? part + at_part_a : (need_a ? ga + n * parts * vv : nullptr);
      T* sums = buf + at_sums;
      if (need_sums) backend.sum_over_time(gn, cout, frames, nodes, sums);
      if (aggregate_first) {
        if (need_x || need_a) {
          gemm_into(MatrixView::row_major(main, parts * cin, tv),
                    MatrixView::row_major(wp, cout, parts * cin).t(), MatrixView::row_major(gn, cout, tv), device,
                    dtype);  // dY
        }
        if (need_x) {
          T* gxn = gx + n * cin * tv;
          for (int64_t k = 0; k < parts; ++k) {
            T* target = k == 0 ? gxn : buf + at_tmp_x;
            gemm_into(MatrixView::row_major(target, cin * frames, nodes),
                      MatrixView::row_major(main + k * cin * tv, cin * frames, nodes),
                      MatrixView::row_major(an + k * vv, nodes, nodes).t(), device, dtype);
            if (k > 0) backend.accumulate(gxn, target, cin * tv);
          }
        }
        if (need_a) {
          for (int64_t k = 0; k < parts; ++k) {
            T* target = shared_a ? buf + at_tmp_a : gan + k * vv;
            gemm_into(MatrixView::row_major(target, nodes, nodes),
                      MatrixView::row_major(xn, cin * frames, nodes).t(),
                      MatrixView::row_major(main + k * cin * tv, cin * frames, nodes), device, dtype);
            if (shared_a) backend.accumulate(gan + k * vv, target, vv);
          }
          if (p.has_bias) backend.adjacency_bias_gradient(sums, bp, parts, cout, nodes, gan);
        }
        if (need_w) {
          for (int64_t k = 0; k < parts; ++k) {
            gemm_into(MatrixView::row_major(second + k * cin * tv, cin * frames, nodes),
                      MatrixView::row_major(xn, cin * frames, nodes), MatrixView::row_major(an + k * vv, nodes, nodes),
                      device, dtype);  // Y_k
          }
          gemm_into(MatrixView::row_major(buf + at_tmp_w, cout, parts * cin),
                    MatrixView::row_major(gn, cout, tv), MatrixView::row_major(second, parts * cin, tv).t(), device,
                    dtype);
          backend.accumulate(part + at_part_w, buf + at_tmp_w, weight_size);
        }
      } else {
        if (need_x || need_w) {
          for (int64_t k = 0; k < parts; ++k) {
            gemm_into(MatrixView::row_major(main + k * cout * tv, cout * frames, nodes),
                      MatrixView::row_major(gn, cout * frames, nodes),
                      MatrixView::row_major(an + k * vv, nodes, nodes).t(), device, dtype);  // H_k
          }
        }
        if (need_x) {
          gemm_into(MatrixView::row_major(gx + n * cin * tv, cin, tv),
                    MatrixView::row_major(wp, parts * cout, cin).t(), MatrixView::row_major(main, parts * cout, tv),
                    device, dtype);
        }
        if (need_w) {
          gemm_into(MatrixView::row_major(buf + at_tmp_w, parts * cout, cin),
                    MatrixView::row_major(main, parts * cout, tv), MatrixView::row_major(xn, cin, tv).t(), device,
                    dtype);
          backend.accumulate(part + at_part_w, buf + at_tmp_w, weight_size);
        }
        if (need_a) {
          // Z
          gemm_into(MatrixView::row_major(second, parts * cout, tv),
                    MatrixView::row_major(wp, parts * cout, cin), MatrixView::row_major(xn, cin, tv), device, dtype);
          if (bp != nullptr) backend.add_to_rows(second, bp, parts * cout, tv);
          for (int64_t k = 0; k < parts; ++k) {
            T* target = shared_a ? buf + at_tmp_a : gan + k * vv;
            gemm_into(MatrixView::row_major(target, nodes, nodes),
                      MatrixView::row_major(second + k * cout * tv, cout * frames, nodes).t(),
                      MatrixView::row_major(gn, cout * frames, nodes), device, dtype);
            if (shared_a) backend.accumulate(gan + k * vv, target, vv);
          }
        }
      }
      if (need_b) {
        const T* colsum = scratch_p + at_colsum;
        if (p.per_sample) {
          backend.column_sums(an, parts, nodes, buf + at_colsum);
          colsum = buf + at_colsum;
        }
        backend.bias_gradient(sums, colsum, parts, cout, nodes, part + at_part_b);
      }
    }
  });

  // The workers' partial sums, added in worker order.
  auto reduce = [&](int64_t at, int64_t size, T* dst) {
    for (int64_t w = 0; w < workers; ++w) backend.accumulate(dst, partial_p + w * per_partial + at, size);
  };
  if (need_w) {
    if (aggregate_first) {
      Tensor cat = torch::stable::new_zeros(x, {cout, parts, cin});
      reduce(at_part_w, weight_size, data_of<T>(cat));
      grad_w = torch::stable::contiguous(torch::stable::transpose(cat, 0, 1));
    } else {
      reduce(at_part_w, weight_size, data_of<T>(grad_w));
    }
  }
  if (shared_a) reduce(at_part_a, parts * vv, ga);
  if (need_b) reduce(at_part_b, parts * cout, data_of<T>(grad_b));
  return {grad_x, grad_w, grad_a, grad_b};
}

template Tensor st_graph_conv_run_forward<float>(const Tensor&, const Tensor&, const Tensor&,
                                                 const std::optional<Tensor>&, const StGraphConvProblem&,
                                                 const StGraphConvBackend<float>&, int64_t);
template Tensor st_graph_conv_run_forward<double>(const Tensor&, const Tensor&, const Tensor&,
                                                  const std::optional<Tensor>&, const StGraphConvProblem&,
                                                  const StGraphConvBackend<double>&, int64_t);
template std::tuple<Tensor, Tensor, Tensor, Tensor> st_graph_conv_run_backward<float>(
    const Tensor&, const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&,
    const StGraphConvProblem&, const StGraphConvMask&, const StGraphConvBackend<float>&, int64_t);
template std::tuple<Tensor, Tensor, Tensor, Tensor> st_graph_conv_run_backward<double>(
    const Tensor&, const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&,
    const StGraphConvProblem&, const StGraphConvMask&, const StGraphConvBackend<double>&, int64_t);

}  // namespace facekernels
