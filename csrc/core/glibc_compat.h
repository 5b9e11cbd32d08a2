// Force-included into every C++ source of the extension (CMakeLists.txt): keeps the shared object within
// the manylinux baseline torch's own wheels use (manylinux_2_28: glibc 2.28, libstdc++ GLIBCXX_3.4.24)
// when it is compiled with a newer toolchain (e.g. Debian 12's glibc 2.36 and GCC 12).
//
// glibc 2.29 gave exp and log new symbol versions (the same results; the old entry points also set errno
// through a wrapper). Binding the references to the x86-64 base version keeps the import at GLIBC_2.2.5.
// The libstdc++ side of the baseline is in glibc_compat.cpp; tools/ci/wheel.sh checks the result
// (auditwheel repair at torch's own platform tag fails on any newer symbol version).
#pragma once
#if defined(__x86_64__) && defined(__linux__)
__asm__(".symver exp,exp@GLIBC_2.2.5");
__asm__(".symver log,log@GLIBC_2.2.5");
#endif
