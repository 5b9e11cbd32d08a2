// The element types the torch-free CUDA launchers take (the bindings map torch's ScalarType onto it).
#pragma once

namespace facekernels::cuda {

enum class DType : int { Float32, Float16, BFloat16 };

}  // namespace facekernels::cuda
