// cudaemu's shadow of csrc/core/cuda_binding.h, for compiling a family's CUDA binding
// (csrc/<family>/<family>_cuda.cpp, unmodified) against the CPU torch so that its orchestration (tile loops,
// workspace sizing, multi-launch sequences, host synchronisation) runs on CPU tensors with the kernels
// under the emulator (tools/cudaemu/build.py, mode "binding"). Found before csrc/core/ on the include path.
// Differences from the real header: the "current stream" is the emulator's default stream (nullptr: the
// emulator runs launches in order, synchronously), and cuda_dtype maps exactly float32/float16/bfloat16
// (anything else is refused, where the real one never sees it: the CUDA checks keep it out).
#pragma once

#include <cuda_runtime_api.h>

#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/core/dtype.h"

namespace facekernels {

inline cudaStream_t current_cuda_stream(int32_t /*device_index*/) { return nullptr; }

inline cuda::DType cuda_dtype(const torch::stable::Tensor& t) {
  using torch::headeronly::ScalarType;
  switch (t.scalar_type()) {
    case ScalarType::Half: return cuda::DType::Float16;
    case ScalarType::BFloat16: return cuda::DType::BFloat16;
    case ScalarType::Float: return cuda::DType::Float32;
    default: throw std::runtime_error("cudaemu binding: a CUDA binding was given a dtype its launchers do not take");
  }
}

inline void check_launch(cudaError_t err, const char* op) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": CUDA error " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

}  // namespace facekernels
