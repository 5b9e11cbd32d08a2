// correlation: the CPU binding (checks shared with the CUDA binding, outputs allocated with torch, kernels
// from correlation_kernels.cpp at the CPU's SIMD level). Inputs are read in place through their strides.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "core/blas.h"
#include "core/parallel.h"
#include "core/tensors.h"
#include "correlation/correlation.h"
#include "correlation/correlation_kernels.h"

namespace facekernels {
namespace {

using torch::headeronly::IntHeaderOnlyArrayRef;
using torch::stable::Tensor;

template <typename Args>
void set_sizes(Args& a, const CorrelationProblem& p, const Tensor& x1, const Tensor& x2) {
  a.batch = p.batch;
  a.channels = p.channels;
  a.height = p.height;
  a.width = p.width;
  a.patch = p.patch;
  a.dilation = p.dilation;
  for (int64_t i = 0; i < 4; ++i) {
    a.x1_stride[i] = x1.stride(i);
    a.x2_stride[i] = x2.stride(i);
  }
}

cpu::CorrelationClasses classes_of(const CorrelationProblem& p) {
  return cpu::correlation_classes(p.batch, p.channels, p.height, p.width, p.patch, p.dilation);
}

std::array<int64_t, 4> strides_of(const Tensor& x) { return {x.stride(0), x.stride(1), x.stride(2), x.stride(3)}; }

// The whole-class plan's tasks (correlation_kernels.h): a sample each, or part of one (a group of its row
// classes, then of its column classes) when the batch alone gives fewer than two tasks per thread or a
// sample's matrices would pass 1 M elements of scratch. A task packs its classes into scratch memory of
// its own, runs its GEMMs on the BLAS (single-threaded inside the parallel region) and writes its own
// output elements, so its matrices stay in the core's L2 between the steps (MOL's shape: 4 classes of
// [256, 64] per operand, 1 MB for both) and a call is one parallel region. (The plan before this one ran
// every step over the whole batch, each step its own parallel region, and spent more time moving the
// matrices through memory than in the GEMMs: forward 0.76 ms at MOL's shape on 2 threads against 0.27 ms
// for its batched GEMM alone.)
struct ClassPlan {
  int64_t rh_group = 1, rw_group = 1, rh_groups = 1, rw_groups = 1, tasks = 0, workers = 1, per_class = 0;
  int64_t scratch_per_task() const { return rh_group * rw_group * per_class; }
  cpu::CorrelationTask task(const cpu::CorrelationClasses& k, int64_t t) const {
    const int64_t gw = t % rw_groups, gh = (t / rw_groups) % rh_groups, b = t / (rw_groups * rh_groups);
    const int64_t rh0 = gh * rh_group, rw0 = gw * rw_group;
    return {b, rh0, std::min(rh_group, k.residues_h - rh0), rw0, std::min(rw_group, k.residues_w - rw0)};
  }
};

// `matrices_per_class`: the [C, n] matrices a task keeps per class beside its [n, n] products.
ClassPlan plan_classes(const cpu::CorrelationClasses& k, int64_t matrices_per_class) {
  ClassPlan plan;
  const int64_t n = k.positions(), threads = num_threads();
  plan.per_class = std::max<int64_t>(1, matrices_per_class * k.channels * n + n * n);
  plan.rh_group = k.residues_h;
  plan.rw_group = k.residues_w;
  auto halve = [&] {
    if (plan.rh_group > 1) {
      plan.rh_group = (plan.rh_group + 1) / 2;
    } else {
      plan.rw_group = (plan.rw_group + 1) / 2;
    }
  };
  auto count = [&] {
    plan.rh_groups = (k.residues_h + plan.rh_group - 1) / plan.rh_group;
    plan.rw_groups = (k.residues_w + plan.rw_group - 1) / plan.rw_group;
    return k.batch * plan.rh_groups * plan.rw_groups;
  };
  const int64_t max_classes = std::max<int64_t>(1, (int64_t{1} << 20) / plan.per_class);
  while (plan.rh_group * plan.rw_group > max_classes) halve();
  while (count() < 2 * threads && (plan.rh_group > 1 || plan.rw_group > 1)) halve();
  plan.tasks = count();
  plan.workers = std::max<int64_t>(1, std::min(threads, plan.tasks));
  return plan;
}

// The task's [classes, C, n] operands and [classes, n, n] products as GEMM operands.
MatrixView class_operand(const void* data, const cpu::CorrelationClasses& k, int64_t classes) {
  return MatrixView::row_major(data, k.channels, k.positions()).batched(classes, k.channels * k.positions());
}
MatrixView class_products(const void* data, const cpu::CorrelationClasses& k, int64_t classes) {
  const int64_t n = k.positions();
  return MatrixView::row_major(data, n, n).batched(classes, n * n);
}

// Runs task_fn(task, scratch) for every task, worker w taking tasks w, w + workers, ... with its own slice
// of one scratch tensor.
template <typename T, typename F>
void run_tasks(const cpu::CorrelationClasses& k, const ClassPlan& plan, const Tensor& like, const F& task_fn) {
  const Tensor scratch = torch::stable::new_empty(like, {plan.workers, plan.scratch_per_task()});
  T* const base = data_of<T>(scratch);
  parallel_for(0, plan.workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w)
      for (int64_t t = w; t < plan.tasks; t += plan.workers) task_fn(plan.task(k, t), base + w * plan.scratch_per_task());
  });
}

// What the forward and the backward of one call share: the kernels, the plan, the inputs' strides, and
// the device and dtype the GEMM views are made with.
template <typename T>
struct ClassCall {
  const cpu::CorrelationKernels<T>& kernels = FK_CPU_KERNEL_TABLE(cpu::correlation_kernels, T);
  const ClassPlan plan;
  const int64_t operand;  // elements of a class's [C, n] matrix
  const std::array<int64_t, 4> s1, s2;
  const torch::stable::Device device;
  const torch::headeronly::ScalarType dtype;
  ClassCall(const cpu::CorrelationClasses& classes, const Tensor& x1, const Tensor& x2)
      : plan(plan_classes(classes, 2)),
        operand(classes.channels * classes.positions()),
        s1(strides_of(x1)),
        s2(strides_of(x2)),
        device(x1.device()),
        dtype(x1.scalar_type()) {}
};

// Forward: S = A^T B per class, scattered into out.
template <typename T>
void forward_by_classes(const cpu::CorrelationClasses& k, const Tensor& x1, const Tensor& x2, const Tensor& out) {
  const ClassCall<T> call(k, x1, x2);
  run_tasks<T>(k, call.plan, x1, [&](const cpu::CorrelationTask& task, T* scratch) {
    T* a = scratch;
    T* b = a + task.classes() * call.operand;
    T* products = b + task.classes() * call.operand;
    call.kernels.pack_classes(k, task, data_of<const T>(x1), call.s1.data(), a);
    call.kernels.pack_classes(k, task, data_of<const T>(x2), call.s2.data(), b);
    gemm_into(class_products(products, k, task.classes()), class_operand(a, k, task.classes()).t(),
              class_operand(b, k, task.classes()), call.device, call.dtype);
    call.kernels.scatter_products(k, task, products, data_of<T>(out));
  });
}

// Backward: dA = B dS^T and dB = A dS per class, dS gathered from grad_out.
template <typename T>
void backward_by_classes(const cpu::CorrelationClasses& k, const Tensor& grad_out, const Tensor& x1, const Tensor& x2,
                         Tensor& grad_x1, Tensor& grad_x2, bool need_x1, bool need_x2) {
  const ClassCall<T> call(k, x1, x2);
  const int64_t gs[5] = {grad_out.stride(0), grad_out.stride(1), grad_out.stride(2), grad_out.stride(3),
                         grad_out.stride(4)};
  run_tasks<T>(k, call.plan, x1, [&](const cpu::CorrelationTask& task, T* scratch) {
    T* packed = scratch;
    T* result = packed + task.classes() * call.operand;
    T* ds = result + task.classes() * call.operand;
    call.kernels.gather_products(k, task, data_of<const T>(grad_out), gs, ds);
    const MatrixView dsv = class_products(ds, k, task.classes());
    // side 0: grad_x1 = unpack(B dS^T); side 1: grad_x2 = unpack(A dS).
    for (int side = 0; side < 2; ++side) {
      if (!(side == 0 ? need_x1 : need_x2)) continue;
      call.kernels.pack_classes(k, task, data_of<const T>(side == 0 ? x2 : x1), (side == 0 ? call.s2 : call.s1).data(),
                                packed);
      gemm_into(class_operand(result, k, task.classes()), class_operand(packed, k, task.classes()),
                side == 0 ? dsv.t() : dsv, call.device, call.dtype);
      call.kernels.unpack_classes(k, task, result, data_of<T>(side == 0 ? grad_x1 : grad_x2));
    }
  });
}

Tensor correlation_cpu(const Tensor& x1, const Tensor& x2, int64_t patch_size, int64_t dilation_patch,
                       int64_t kernel_size) {
  const CorrelationProblem p = check_correlation("correlation", x1, x2, patch_size, dilation_patch, kernel_size);
  const int64_t sizes[5] = {p.batch, p.patch, p.patch, p.height, p.width};
  Tensor out = new_cpu_output(x1, IntHeaderOnlyArrayRef(sizes, 5));
  if (out.numel() == 0) return out;
  dispatch_cpu_dtype(x1.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    if (const cpu::CorrelationClasses k = classes_of(p); k.fits_window()) return forward_by_classes<T>(k, x1, x2, out);
    cpu::CorrelationForwardArgs<T> a{.x1 = data_of<const T>(x1), .x2 = data_of<const T>(x2), .out = data_of<T>(out)};
    set_sizes(a, p, x1, x2);
    FK_CPU_KERNEL_TABLE(cpu::correlation_kernels, T).forward(a);
  });
  return out;
}

std::tuple<Tensor, Tensor> correlation_backward_cpu(const Tensor& grad_out, const Tensor& x1, const Tensor& x2,
                                                    int64_t patch_size, int64_t dilation_patch, bool need_x1,
                                                    bool need_x2) {
  const CorrelationProblem p = check_correlation_backward(grad_out, x1, x2, patch_size, dilation_patch);
  Tensor grad_x1 = new_cpu_output(x1, need_x1 ? x1.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_x2 = new_cpu_output(x2, need_x2 ? x2.sizes() : IntHeaderOnlyArrayRef{0});
  if (!(need_x1 || need_x2) || x1.numel() == 0) return {grad_x1, grad_x2};
  dispatch_cpu_dtype(x1.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    if (const cpu::CorrelationClasses k = classes_of(p); k.fits_window())
      return backward_by_classes<T>(k, grad_out, x1, x2, grad_x1, grad_x2, need_x1, need_x2);
    cpu::CorrelationBackwardArgs<T> a{.grad_out = data_of<const T>(grad_out),
                                      .x1 = data_of<const T>(x1),
                                      .x2 = data_of<const T>(x2),
                                      .grad_x1 = need_x1 ? data_of<T>(grad_x1) : nullptr,
                                      .grad_x2 = need_x2 ? data_of<T>(grad_x2) : nullptr};
    set_sizes(a, p, x1, x2);
    for (int64_t i = 0; i < 5; ++i) a.grad_stride[i] = grad_out.stride(i);
    FK_CPU_KERNEL_TABLE(cpu::correlation_kernels, T).backward(a);
  });
  return {grad_x1, grad_x2};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("correlation", TORCH_BOX(&facekernels::correlation_cpu));
  m.impl("_correlation_backward", TORCH_BOX(&facekernels::correlation_backward_cpu));
}
