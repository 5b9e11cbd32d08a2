// Private copies of the few libstdc++ / glibc entry points newer than the manylinux_2_28 baseline that
// GCC 11+ headers make the extension import (what the manylinux images' toolchains take from their
// libstdc++_nonshared.a): each is defined here and kept local to the shared object by the version script
// (csrc/core/exports.map), so the loader never asks the system libstdc++ / glibc for it.
//   GLIBCXX_3.4.26: the default constructors of std::ostringstream and std::stringstream (torch's
//                   headers and ours build error messages with them);
//   GLIBCXX_3.4.29: std::stringbuf::str() const& and str()&&, std::__throw_bad_array_new_length (every
//                   std::allocator<T>::allocate);
//   GLIBC_2.32:     __libc_single_threaded, read by libstdc++'s reference counts to skip atomics in a
//                   single-threaded process. Ours stays 0 ("maybe multi-threaded"), so they are always
//                   atomic: correct, and what a build against an older glibc does.
// exp and log (GLIBC_2.29) are bound to their older versions by glibc_compat.h.
#include <new>
#include <sstream>
#include <string>

#if defined(__GLIBCXX__) && defined(_GLIBCXX_RELEASE)
#if _GLIBCXX_USE_CXX11_ABI
template std::ostringstream::basic_ostringstream();
template std::stringstream::basic_stringstream();
#if _GLIBCXX_RELEASE >= 11
template std::string std::stringbuf::str() const&;
template std::string std::stringbuf::str() &&;
#endif
#endif

#if _GLIBCXX_RELEASE >= 11
namespace std {
[[noreturn]] void __throw_bad_array_new_length() { throw std::bad_array_new_length(); }
}  // namespace std
#endif

#if defined(__GLIBC__) && __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
extern "C" {
char __libc_single_threaded = 0;
}
#endif
#endif
