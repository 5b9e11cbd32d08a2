// Run-time choice of the SIMD level the CPU kernels were compiled for. Kernel sources are compiled once
// per level (see CMakeLists.txt); the binding layer asks for the best level this CPU supports.
#pragma once

namespace facekernels {

enum class CpuCapability { Default = 0, Avx2 = 1, Avx512 = 2 };

// The level kernels dispatch to: the best this CPU supports among those compiled in, lowered (never
// raised) by the environment variable FACEKERNELS_CPU_CAPABILITY=default|avx2|avx512.
CpuCapability cpu_capability();
const char* cpu_capability_name(CpuCapability c);

}  // namespace facekernels

// Kernel tables. A family's kernels header declares a struct template of named function pointers, one
// instance per dtype, and the table getters of every level:
//
//   template <typename T> struct FooKernels { void (*forward)(const FooArgs<T>&); ... };
//   FK_DECLARE_CPU_KERNEL_TABLE(FooKernels, foo_kernels)
//
// Its kernel source (compiled once per level) fills the tables by name, for each dtype it supports:
//
//   namespace {  // internal linkage: every level's object defines its own make_table
//   template <typename T> constexpr FooKernels<T> make_table() { return {.forward = &forward<T>, ...}; }
//   }  // namespace
//   FK_DEFINE_CPU_KERNEL_TABLE(FooKernels, foo_kernels, make_table, float)
//   FK_DEFINE_CPU_KERNEL_TABLE(FooKernels, foo_kernels, make_table, double)
//
// and the driver asks for the current level's: `const auto& k = FK_CPU_KERNEL_TABLE(cpu::foo_kernels, T);`.
// Designated initializers name every entry, so a reordered struct cannot silently swap two kernels of the
// same signature (the compiler rejects designators out of declaration order).
#define FK_DECLARE_CPU_KERNEL_TABLE(Table, name) \
  template <typename T>                          \
  const Table<T>& name##_DEFAULT();              \
  template <typename T>                          \
  const Table<T>& name##_AVX2();                 \
  template <typename T>                          \
  const Table<T>& name##_AVX512();

#define FK_DEFINE_CPU_KERNEL_TABLE(Table, name, make, T)                   \
  template <>                                                              \
  const Table<T>& FK_CPU_TABLE_NAME_(name, FK_CPU_CAPABILITY)<T>() {       \
    static const Table<T> table = make<T>();                               \
    return table;                                                          \
  }
#define FK_CPU_TABLE_NAME_(name, level) FK_CPU_TABLE_NAME2_(name, level)
#define FK_CPU_TABLE_NAME2_(name, level) name##_##level

#if defined(__x86_64__) || defined(_M_X64)
#define FK_CPU_KERNEL_TABLE(name, T)                                       \
  ([]() -> decltype(name##_DEFAULT<T>()) {                                 \
    switch (::facekernels::cpu_capability()) {                             \
      case ::facekernels::CpuCapability::Avx512: return name##_AVX512<T>(); \
      case ::facekernels::CpuCapability::Avx2: return name##_AVX2<T>();     \
      default: return name##_DEFAULT<T>();                                 \
    }                                                                      \
  }())
#else
#define FK_CPU_KERNEL_TABLE(name, T) (name##_DEFAULT<T>())
#endif
