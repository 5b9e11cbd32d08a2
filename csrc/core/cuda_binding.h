// Shared pieces of the CUDA bindings (csrc/<family>/<family>_cuda.cpp): torch's current stream, the
// launcher dtype of a tensor, and launch-error reporting.
#pragma once

#include <cuda_runtime_api.h>

// aoti_torch_get_current_cuda_stream comes from the AOTInductor C shim (declared under USE_CUDA, with no
// TORCH_FEATURE_VERSION guard, so it is part of the 2.10 surface we target, exported by libtorch_cuda).
// The stable C++ alternative, torch::stable::accelerator::getCurrentStream(i).nativeHandle(), only
// exists from TORCH_TARGET_VERSION 2.13 on.
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/core/dtype.h"

namespace facekernels {

inline cudaStream_t current_cuda_stream(int32_t device_index) {
  void* stream = nullptr;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(device_index, &stream));
  return static_cast<cudaStream_t>(stream);
}

// The argument checks have already restricted CUDA tensors to float16, bfloat16 and float32.
inline cuda::DType cuda_dtype(const torch::stable::Tensor& t) {
  using torch::headeronly::ScalarType;
  switch (t.scalar_type()) {
    case ScalarType::Half: return cuda::DType::Float16;
    case ScalarType::BFloat16: return cuda::DType::BFloat16;
    default: return cuda::DType::Float32;
  }
}

inline void check_launch(cudaError_t err, const char* op) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": CUDA error " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

}  // namespace facekernels
