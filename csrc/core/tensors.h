// Tensor helpers of the binding layer (csrc/<family>/<family>{,_cpu,_cuda}.cpp): typed data pointers that
// check the dtype, and fresh CPU outputs with the huge-page hint. Never included by kernel sources.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstddef>
#include <optional>
#include <type_traits>

#include "core/memory.h"

namespace facekernels {

// The typed data of `t`: data_of<const float>(t) for reading, data_of<float>(t) for writing. Both throw
// if t's dtype is not T's (torch::stable's const_data_ptr / mutable_data_ptr check it), so a dispatch
// mistake is an error instead of a reinterpretation of the bytes.
template <typename T>
T* data_of(const torch::stable::Tensor& t) {
  if constexpr (std::is_const_v<T>) {
    return t.const_data_ptr<std::remove_const_t<T>>();
  } else {
    return t.mutable_data_ptr<T>();
  }
}

// The same for an optional tensor: nullptr when absent.
template <typename T>
T* data_of(const std::optional<torch::stable::Tensor>& t) {
  return t.has_value() ? data_of<T>(*t) : nullptr;
}

// A new uninitialised output on `like`'s device, of `like`'s dtype or `dtype`. On CPU, large blocks ask
// for transparent huge pages before their first touch (core/memory.h says why).
inline torch::stable::Tensor new_cpu_output(const torch::stable::Tensor& like,
                                            torch::headeronly::IntHeaderOnlyArrayRef sizes,
                                            std::optional<torch::headeronly::ScalarType> dtype = std::nullopt) {
  torch::stable::Tensor t = torch::stable::new_empty(like, sizes, dtype);
  if (t.is_cpu()) advise_huge_pages(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  return t;
}

// Calls f(float{}) or f(double{}) for a CPU dtype the checks accepted (float32 or float64).
template <typename F>
decltype(auto) dispatch_cpu_dtype(torch::headeronly::ScalarType dtype, F&& f) {
  return dtype == torch::headeronly::ScalarType::Float ? f(float{}) : f(double{});
}

// A [B, C, H, W] tensor as the plane kernels read it: any strides over B and C as long as each [H, W]
// plane is contiguous (channel slices such as torch.chunk(x, 2, 1) need no copy); anything else is made
// contiguous first.
inline torch::stable::Tensor planes_contiguous(const torch::stable::Tensor& t) {
  const int64_t h = t.size(2), w = t.size(3);
  const bool ok = (w == 1 || t.stride(3) == 1) && (h == 1 || t.stride(2) == w);
  return ok ? t : torch::stable::contiguous(t);
}

// An optional tensor argument made contiguous (the kernels take raw pointers), or none.
inline std::optional<torch::stable::Tensor> contiguous_or_none(const std::optional<torch::stable::Tensor>& t) {
  return t.has_value() ? std::optional<torch::stable::Tensor>(torch::stable::contiguous(*t)) : std::nullopt;
}

}  // namespace facekernels
