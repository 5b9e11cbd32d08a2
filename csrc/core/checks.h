// Argument checks shared by every op. Each failure throws std::runtime_error, which torch surfaces in
// Python as RuntimeError, with a message of the form "<op>: <argument> <expected>, got <actual>".
#pragma once

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>

namespace facekernels {

template <typename... Args>
[[noreturn]] inline void fail(const char* op, const Args&... parts) {
  std::ostringstream message;
  message << op << ": ";
  ((message << parts), ...);
  throw std::runtime_error(message.str());
}

#define FK_CHECK(cond, op, ...)            \
  do {                                     \
    if (!(cond)) {                         \
      ::facekernels::fail(op, __VA_ARGS__); \
    }                                      \
  } while (0)

inline std::string shape_string(torch::headeronly::IntHeaderOnlyArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    s << (i ? ", " : "") << sizes[i];
  }
  s << "]";
  return s.str();
}

inline std::string shape_string(const torch::stable::Tensor& t) {
  return shape_string(t.sizes());
}

inline const char* dtype_name(torch::headeronly::ScalarType t) {
  using torch::headeronly::ScalarType;
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Long: return "int64";
    case ScalarType::Int: return "int32";
    case ScalarType::Short: return "int16";
    case ScalarType::Char: return "int8";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Bool: return "bool";
    default: return torch::headeronly::toString(t);
  }
}

inline std::string device_string(const torch::stable::Tensor& t) {
  if (t.is_cpu()) return "cpu";
  std::ostringstream s;
  s << (t.is_cuda() ? "cuda:" : "device:") << t.get_device_index();
  return s.str();
}

inline void check_dim(const char* op, const char* arg, const torch::stable::Tensor& t, int64_t dim,
                      const char* layout) {
  FK_CHECK(t.dim() == dim, op, arg, " must be a ", dim, "-D tensor ", layout, ", got a ", t.dim(),
           "-D tensor of shape ", shape_string(t));
}

inline void check_same_device(const char* op, const char* arg, const torch::stable::Tensor& t,
                              const char* ref_arg, const torch::stable::Tensor& ref) {
  FK_CHECK(t.is_cpu() == ref.is_cpu() && t.get_device_index() == ref.get_device_index(), op, arg,
           " must be on the same device as ", ref_arg, " (", device_string(ref), "), got ",
           device_string(t));
}

inline void check_same_dtype(const char* op, const char* arg, const torch::stable::Tensor& t,
                             const char* ref_arg, const torch::stable::Tensor& ref) {
  FK_CHECK(t.scalar_type() == ref.scalar_type(), op, arg, " must have the same dtype as ", ref_arg, " (",
           dtype_name(ref.scalar_type()), "), got ", dtype_name(t.scalar_type()));
}

// `arg` must be a `rank`-D tensor (`layout`) with the shape, dtype and device of `ref` (named ref_arg): a
// gradient against its input, or an input that goes with another. Checked in that order.
inline void check_like(const char* op, const char* arg, const torch::stable::Tensor& t, const char* ref_arg,
                       const torch::stable::Tensor& ref, int64_t rank, const char* layout) {
  check_dim(op, arg, t, rank, layout);
  bool same = ref.dim() == rank;
  for (int64_t i = 0; same && i < rank; ++i) same = t.size(i) == ref.size(i);
  FK_CHECK(same, op, arg, " must have the shape of ", ref_arg, " ", shape_string(ref), ", got ", shape_string(t));
  check_same_dtype(op, arg, t, ref_arg, ref);
  check_same_device(op, arg, t, ref_arg, ref);
}

// Floating dtypes each backend computes in: float32/float64 on CPU; float16/bfloat16/float32 on CUDA.
// FK_CUDA_EMULATION is defined only by the CUDA emulation stage's binding builds (force-included
// tools/cudaemu/binding/emu_binding.h), which run a CUDA binding on CPU tensors: there every tensor is
// checked as a CUDA one, so the binding's float16/bfloat16 paths run. No build of the package defines it.
inline void check_floating_dtype(const char* op, const char* arg, const torch::stable::Tensor& t) {
  using torch::headeronly::ScalarType;
  const ScalarType s = t.scalar_type();
#if defined(FK_CUDA_EMULATION)
  const bool cpu = false;
#else
  const bool cpu = t.is_cpu();
#endif
  if (cpu) {
    FK_CHECK(s == ScalarType::Float || s == ScalarType::Double, op, arg,
             " must be float32 or float64 on CPU, got ", dtype_name(s));
  } else {
    FK_CHECK(s == ScalarType::Float || s == ScalarType::Half || s == ScalarType::BFloat16, op, arg,
             " must be float16, bfloat16 or float32 on CUDA, got ", dtype_name(s));
  }
}

}  // namespace facekernels
