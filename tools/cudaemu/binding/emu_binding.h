// Force-included (-include) into every torch-facing source of an emulated binding build (mode "binding" of
// tools/cudaemu/build.py): the family's schema file (csrc/<family>/<family>.cpp) and its CUDA binding
// (csrc/<family>/<family>_cuda.cpp), both unmodified. Their registrations are redirected so that they do
// not collide with the installed facekernels library loaded in the same process:
//   STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m)    -> namespace facekernels_emu
//   STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m)  -> facekernels_emu, CPU
// so torch.ops.facekernels_emu.<op>(cpu tensors...) runs the CUDA binding on CPU tensors, its kernels in the
// emulator. torch's DeviceGuard is replaced by a no-op (a CPU tensor has no device to select).
// FK_CUDA_EMULATION makes csrc/core/checks.h's check_floating_dtype check every tensor as a CUDA one
// (float16/bfloat16/float32; float64 refused), so the bindings' half paths run on CPU tensors; the CPU
// torch then runs their GEMMs (mm.out / bmm.out) in float16/bfloat16 with float32 accumulation.
#pragma once

#define FK_CUDA_EMULATION 1

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>

#undef STABLE_TORCH_LIBRARY_FRAGMENT
#define STABLE_TORCH_LIBRARY_FRAGMENT(ns, m) _STABLE_TORCH_LIBRARY_FRAGMENT(facekernels_emu, m, C10_UID)
#undef STABLE_TORCH_LIBRARY_IMPL
#define STABLE_TORCH_LIBRARY_IMPL(ns, k, m) _STABLE_TORCH_LIBRARY_IMPL(facekernels_emu, CPU, m, C10_UID)

namespace cudaemu_binding {
struct NoDeviceGuard {
  template <typename I>
  explicit NoDeviceGuard(I) {}
};
}  // namespace cudaemu_binding
// The bindings spell it torch::stable::accelerator::DeviceGuard; a macro cannot rename a qualified name,
// so the one token DeviceGuard is redirected after torch's header has been read.
#define DeviceGuard NoDeviceGuard
namespace torch::stable::accelerator {
using cudaemu_binding::NoDeviceGuard;
}
