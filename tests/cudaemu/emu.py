"""ctypes access to a family's CUDA launchers built as host C++ by tools/cudaemu/build.py.

CUDAEMU_BUILD names the build folder (build/cudaemu/plain, .../race, .../asan). Each family's library
holds its kernels, the emulator runtime and its harness (tests/cudaemu/<family>_capi.cpp: thin C entry
points over cuda/<family>/<family>.h that take device pointers). "Device" buffers are cudaMalloc'ed by
the emulator at exactly their size (ASan sees their end) and start NaN-filled, so an output element a
kernel never writes shows up as NaN.
"""

import ctypes
import os

import torch

import facekernels  # noqa: F401  (registers torch.ops.facekernels, the CPU reference)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("CUDAEMU_BUILD", os.path.join(ROOT, "build", "cudaemu", "plain"))
DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_libs = {}


class Dev:
    """A device buffer holding a tensor's elements (contiguous)."""

    def __init__(self, lib, shape, dtype, ptr):
        self.lib, self.shape, self.dtype, self.ptr = lib, tuple(shape), dtype, ptr

    @property
    def nbytes(self):
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()

    def host(self):
        out = torch.empty(self.shape, dtype=self.dtype)
        if self.nbytes:
            err = self.lib.lib.cudaMemcpy(ctypes.c_void_p(out.data_ptr()), self.ptr, ctypes.c_size_t(self.nbytes), 2)
            assert err == 0, f"cudaMemcpy D2H: {err}"
        return out


class Family:
    def __init__(self, name, path=None):
        path = path or os.path.join(BUILD, f"lib{name}_emu.so")
        self.lib = ctypes.CDLL(path)
        self.lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        self.lib.cudaFree.argtypes = [ctypes.c_void_p]
        self.lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.lib.cudaemu_capped_launches.restype = ctypes.c_ulonglong
        self.lib.cudaemu_launches.restype = ctypes.c_ulonglong
        self.live = []

    # ---- memory ----
    def empty(self, shape, dtype):
        d = Dev(self, shape, dtype, None)
        p = ctypes.c_void_p()
        assert self.lib.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(d.nbytes)) == 0
        d.ptr = p
        self.live.append(p)
        return d

    def dev(self, t):
        if t is None:
            return None
        t = t.contiguous()
        d = self.empty(t.shape, t.dtype)
        if d.nbytes:
            assert self.lib.cudaMemcpy(d.ptr, ctypes.c_void_p(t.data_ptr()), ctypes.c_size_t(d.nbytes), 1) == 0
        return d

    def free_all(self):
        for p in self.live:
            self.lib.cudaFree(p)
        self.live = []

    # ---- calls: Dev/None -> pointer, bool/int -> int64_t, float -> double ----
    def __call__(self, name, *args):
        conv = []
        for a in args:
            if a is None:
                conv.append(ctypes.c_void_p(None))
            elif isinstance(a, Dev):
                conv.append(a.ptr)
            elif isinstance(a, torch.dtype):
                conv.append(ctypes.c_int64(DTYPE_CODE[a]))
            elif isinstance(a, (bool, int)):
                conv.append(ctypes.c_int64(int(a)))
            elif isinstance(a, float):
                conv.append(ctypes.c_double(a))
            else:
                raise TypeError(f"{name}: argument {a!r}")
        fn = getattr(self.lib, name)
        fn.restype = ctypes.c_int64 if name.endswith("_size") or "workspace" in name else ctypes.c_int
        return fn(*conv)

    # ---- emulator control ----
    def reset(self):
        self.lib.cudaemu_reset()

    def errors(self):
        return self.lib.cudaemu_error_count()

    def racecheck(self):
        return bool(self.lib.cudaemu_racecheck())


def family(name):
    if name not in _libs:
        _libs[name] = Family(name)
    return _libs[name]


def binding(name):
    """The family's CUDA binding (csrc/<family>/<family>_cuda.cpp, unmodified) built on the CPU torch by
    tools/cudaemu/build.py with its kernels in the emulator: registers torch.ops.facekernels_emu.<op>, which
    take CPU tensors (the binding's torch allocations stand for device memory). Returns the op namespace;
    the library's emulator counters are checked after every test like a family's."""
    key = name + "_binding"
    if key not in _libs:
        path = os.path.join(BUILD, f"lib{name}_binding_emu.so")
        torch.ops.load_library(path)
        f = Family(key, path)  # the same loaded object (dlopen of the same path)
        f.lib.cudaemu_allow_unregistered_device_memory(1)
        _libs[key] = f
    return torch.ops.facekernels_emu


def loaded():
    return list(_libs.values())


def build_mode():
    return os.path.basename(os.path.normpath(BUILD))


def grid_capped():
    return bool(os.environ.get("CUDAEMU_GRID_CAP"))


def tol(dtype, scale=1.0, rtol=None):
    """The CUDA rows of tests/devices.py (atol scaled by the size of the sums' terms, as the CUDA tests do);
    rtol may be widened where a family's float32 statistics need it (said where used)."""
    from devices import TOLERANCES

    t = TOLERANCES[("cuda", dtype)]
    return {"atol": t["atol"] * scale, "rtol": rtol if rtol is not None and dtype == torch.float32 else t["rtol"]}


def check(actual, expected64, dtype, scale=1.0, rtol=None):
    assert not torch.isnan(actual).any(), "NaN in the output: an element was never written (buffers start NaN)"
    torch.testing.assert_close(actual.double(), expected64.double(), **tol(dtype, scale, rtol))
