// facekernels._C: importing it registers every op (the STABLE_TORCH_LIBRARY blocks of the linked
// sources run at load time); build_info() reports how this binary was built and what it dispatches to.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "core/cpu_capability.h"
#include "core/memory.h"
#include "core/parallel.h"

namespace py = pybind11;

namespace {

std::string target_version_string() {
  const uint64_t v = TORCH_TARGET_VERSION;
  std::ostringstream s;
  s << ((v >> 56) & 0xff) << "." << ((v >> 48) & 0xff);
  return s.str();
}

py::list split(const std::string& csv) {
  py::list out;
  std::stringstream s(csv);
  std::string item;
  while (std::getline(s, item, ',')) {
    if (!item.empty()) out.append(item);
  }
  return out;
}

py::dict build_info() {
  py::dict info;
  info["version"] = FK_VERSION;
  info["torch_target_version"] = target_version_string();
#ifdef FK_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = split(FK_CUDA_ARCHS);
#else
  info["cuda"] = false;
  info["cuda_archs"] = py::list();
#endif
  info["num_threads"] = facekernels::num_threads();
  info["cpu_capabilities_compiled"] = split(FK_CPU_CAPABILITY_LIST);
  const char* level = facekernels::cpu_capability_name(facekernels::cpu_capability());
  // Every family's CPU kernels are compiled for the same levels and dispatch through cpu_capability().
  py::dict per_kernel;
  for (const auto& family : split(FK_FAMILY_LIST)) per_kernel[family] = level;
  info["cpu_capability"] = level;
#if defined(FK_AVX512_EMULATION)
  info["avx512_emulation"] = true;  // a testing build: the AVX-512 level runs AVX2 instructions
#else
  info["avx512_emulation"] = false;
#endif
#if defined(FK_SANITIZE)
  info["sanitize"] = true;  // a testing build: ASan + UBSan (FACEKERNELS_SANITIZE), needs libasan preloaded
#else
  info["sanitize"] = false;
#endif
  info["cpu_kernels"] = per_kernel;
  info["families"] = split(FK_FAMILY_LIST);
  info["huge_page_min_bytes"] = facekernels::huge_page_min_bytes();  // 0: the hint is off (core/memory.h)
  return info;
}

// facekernels.set_huge_page_threshold: the new smallest hinted block in bytes (0: off); the previous one.
int64_t set_huge_page_min_bytes(int64_t bytes) {
  if (bytes < 0) throw py::value_error("set_huge_page_threshold: min_bytes must be >= 0, got " + std::to_string(bytes));
  return facekernels::huge_page_min_bytes_setting().exchange(bytes);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "facekernels native extension: registers the facekernels:: ops with torch";
  m.def("build_info", &build_info, "How this build was made and which SIMD level each CPU kernel runs");
  m.def("_set_huge_page_min_bytes", &set_huge_page_min_bytes, "Set the huge-page hint's smallest block (bytes)");
  m.def("_huge_page_min_bytes_from_env", &facekernels::huge_page_min_bytes_from_env,
        "The threshold FACEKERNELS_HUGE_PAGES asks for now (what the extension read at load), for tests");
}
