#!/usr/bin/env python3
"""Build the CUDA kernels of cuda/<family>/ as host C++ shared libraries for the emulation tests.

    tools/cudaemu/build.py MODE [FAMILY ...] [--src TREE] [--out DIR]

MODE: plain (-O2) | race (-O1; the kernel translation unit instrumented with -fsanitize=thread, whose
hooks are cudaemu's own race / initialisation checker in runtime.cpp, no libtsan) | asan (-O1, ASan +
UBSan on kernels, runtime and harness; run python with LD_PRELOAD of libasan and libubsan).
FAMILY: default every folder of cuda/ with a <family>.cu and a harness tests/cudaemu/<family>_capi.cpp.
--src: the tree holding cuda/ (default: this checkout; the negative controls point it at a mutated copy).
Output: DIR/lib<family>_emu.so (DIR default build/cudaemu/MODE): kernels + runtime + the C harness.
For the families of BINDINGS also DIR/lib<family>_binding_emu.so: the family's schema file, CUDA binding and
shared drivers (csrc/<family>/*.cpp but _cpu.cpp and _kernels.cpp, unmodified: binding_parts) compiled
against the CPU torch of the python running this script, with tools/cudaemu/binding/ shadowing csrc/core/cuda_binding.h and redirecting the
registrations to torch.ops.facekernels_emu (CPU key): the binding's orchestration runs on CPU tensors. Incremental: a step reruns when its
inputs (the compiler's dependency list) or its command line changed.

The CUDA toolkit is only used for its headers (cuda_runtime_api.h, and NVIDIA's own host code of __half /
__nv_bfloat16 in cuda_fp16.hpp / cuda_bf16.hpp): $CUDA_HOME, else /usr/local/cuda, else the toolkit of the
nvcc on PATH.
"""
import argparse
import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# Families whose CUDA binding is also built on CPU torch (tools/cudaemu/binding/). A family is covered by
# the stage when it has a C harness (tests/cudaemu/<family>_capi.cpp) or is listed here.
BINDINGS = ("alignment_energy", "circular_conv", "correlation", "diff_attention", "edge_conv", "local_stats",
            "selective_scan", "st_graph_conv", "triplet_attention")


def binding_parts(src, fams):
    """The torch-side sources (csrc/-relative, no .cpp) of the families' emulated CUDA bindings: every
    csrc/<family>/*.cpp but the CPU binding (_cpu.cpp) and the SIMD kernels (_kernels.cpp), i.e. the schema
    file, shared drivers and the CUDA binding, plus csrc/core/parallel.cpp (a shared driver's parallel_for)."""
    parts = ["core/parallel"]
    for f in fams:
        parts += sorted(f"{f}/{n[:-4]}" for n in os.listdir(os.path.join(src, "csrc", f))
                        if n.endswith(".cpp") and not n.endswith(("_cpu.cpp", "_kernels.cpp")))
    return parts


def torch_paths():
    import torch  # the CPU torch the binding is compiled and run against

    root = os.path.dirname(torch.__file__)
    return os.path.join(root, "include"), os.path.join(root, "lib")


def target_version():
    for line in open(os.path.join(ROOT, "CMakeLists.txt")):
        if "FACEKERNELS_TORCH_TARGET_VERSION" in line and line.strip().startswith("set("):
            return line.split('"')[1]
    sys.exit("cudaemu: FACEKERNELS_TORCH_TARGET_VERSION not found in CMakeLists.txt")


def cuda_include():
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "include"))
    candidates.append("/usr/local/cuda/include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
        candidates.append(os.path.join(os.path.dirname(os.path.dirname(nvcc)), "include"))
    for c in candidates:
        if os.path.exists(os.path.join(c, "cuda_fp16.h")) and os.path.exists(os.path.join(c, "cuda_runtime_api.h")):
            return c
    sys.exit("cudaemu: no CUDA toolkit headers found (set CUDA_HOME); looked in " + ", ".join(candidates))


def families(src):
    base = os.path.join(src, "cuda")
    return sorted(f for f in os.listdir(base) if os.path.exists(os.path.join(base, f, f + ".cu")))


def stale(target, cmd_key):
    """True when target is missing, its recorded command differs, or a dependency is newer."""
    stamp = target + ".cmd"
    if not os.path.exists(target) or not os.path.exists(stamp) or open(stamp).read() != cmd_key:
        return True
    dep = target + ".d"
    if not os.path.exists(dep):
        return True
    t = os.path.getmtime(target)
    text = open(dep).read().replace("\\\n", " ")
    for path in text.split(":", 1)[1].split():
        if not os.path.exists(path) or os.path.getmtime(path) > t:
            return True
    return False


def run(cmd, target=None, deps_key=None):
    if target is not None:
        key = hashlib.sha1(" ".join(cmd).encode()).hexdigest()
        if not stale(target, key):
            return None
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return f"$ {' '.join(cmd)}\n{p.stdout}{p.stderr}"
    if p.stderr.strip():
        sys.stderr.write(p.stderr)
    if target is not None:
        open(target + ".cmd", "w").write(key)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["plain", "race", "asan"])
    ap.add_argument("families", nargs="*")
    ap.add_argument("--src", default=ROOT)
    ap.add_argument("--out")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    src = os.path.abspath(a.src)
    out = os.path.abspath(a.out or os.path.join(ROOT, "build", "cudaemu", a.mode))
    has_capi = lambda f: os.path.exists(os.path.join(ROOT, "tests", "cudaemu", f + "_capi.cpp"))  # noqa: E731
    have = lambda f: has_capi(f) or f in BINDINGS  # noqa: E731
    fams = a.families or [f for f in families(src) if have(f)]
    for f in fams:
        if not have(f):
            sys.exit(f"cudaemu: cuda/{f} has no harness tests/cudaemu/{f}_capi.cpp (nor a binding build)")
    missing = [f for f in families(src) if not have(f)]
    if missing and not a.families:
        print(f"cudaemu: WARNING: no harness yet for {' '.join(missing)} (tests/cudaemu/test_coverage.py lists them)")
    os.makedirs(os.path.join(out, "gen"), exist_ok=True)
    cxx = os.environ.get("CXX", "g++")
    inc = cuda_include()
    common = ["-std=c++20", "-fPIC", "-g", "-Wall", "-Wno-unknown-pragmas", "-fno-strict-aliasing",
              "-I" + os.path.join(HERE, "include"), "-I" + src, "-I" + inc, "-I" + os.path.join(inc, "cccl")]
    opt = {"plain": ["-O2"], "race": ["-O1", "-fno-omit-frame-pointer"],
           # -fno-sanitize-recover=all: a UBSan report aborts the test process (GCC's UBSan runtime next to
           # ASan's ignores UBSAN_OPTIONS' log_path and writes to stderr, which pytest would capture and keep)
           "asan": ["-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all"]}[a.mode]
    kopt = ["-fsanitize=thread"] if a.mode == "race" else []
    link = ["-fsanitize=address,undefined"] if a.mode == "asan" else []
    t0 = time.time()
    # cu2cpp (fast, serial), then every compile in parallel, then the links.
    device_math = os.path.join(src, "cuda", "core", "device_math.cuh")
    for f in fams:
        gen = os.path.join(out, "gen", f + ".cpp")
        cu = os.path.join(src, "cuda", f, f + ".cu")
        p = subprocess.run([sys.executable, os.path.join(HERE, "cu2cpp.py"), cu, gen + ".new", device_math],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(p.stderr)
        if os.path.exists(gen) and open(gen).read() == open(gen + ".new").read():
            os.remove(gen + ".new")  # unchanged: keep the mtime, so the object is not rebuilt
        else:
            os.replace(gen + ".new", gen)
    jobs = []
    rt = os.path.join(out, "runtime.o")
    jobs.append(([cxx, *common, *opt, "-MMD", "-MF", rt + ".d", "-c", os.path.join(HERE, "runtime.cpp"), "-o", rt], rt))
    for f in fams:
        gen, obj, capi = (os.path.join(out, "gen", f + ".cpp"), os.path.join(out, f + ".o"),
                          os.path.join(out, f + "_capi.o"))
        jobs.append(([cxx, *common, *opt, *kopt, "-iquote", os.path.join(src, "cuda", f), "-include", "cudaemu/emu.hpp",
                      "-MMD", "-MF", obj + ".d", "-c", gen, "-o", obj], obj))
        if os.path.exists(os.path.join(ROOT, "tests", "cudaemu", f + "_capi.cpp")):
            jobs.append(([cxx, *common, *opt, "-MMD", "-MF", capi + ".d", "-c",
                          os.path.join(ROOT, "tests", "cudaemu", f + "_capi.cpp"), "-o", capi], capi))
    # A --src tree without csrc/ (the negative controls' mutated copies of cuda/) builds the C harnesses only.
    bind = [f for f in fams if f in BINDINGS and os.path.isdir(os.path.join(src, "csrc", f))]
    if bind:
        tinc, tlib = torch_paths()
        bflags = ["-std=c++20", "-fPIC", "-g", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-parameter",
                  "-DTORCH_TARGET_VERSION=" + target_version(), "-I" + os.path.join(HERE, "binding"),
                  "-I" + os.path.join(src, "csrc"), "-I" + src, "-I" + tinc, "-I" + inc,
                  "-include", os.path.join(HERE, "binding", "emu_binding.h")]
        for part in binding_parts(src, bind):
            o = os.path.join(out, f"{os.path.basename(part)}_binding.o")
            jobs.append(([cxx, *bflags, *opt, "-MMD", "-MF", o + ".d", "-c",
                          os.path.join(src, "csrc", part + ".cpp"), "-o", o], o))
    with concurrent.futures.ThreadPoolExecutor(a.j) as pool:
        errors = [e for e in pool.map(lambda j: run(*j), jobs) if e]
    if errors:
        sys.exit("\n".join(errors))
    libs = []
    for f in fams:
        if has_capi(f):
            libs.append((os.path.join(out, f"lib{f}_emu.so"),
                         [os.path.join(out, f + ".o"), rt, os.path.join(out, f + "_capi.o")], []))
        if f in bind:
            libs.append((os.path.join(out, f"lib{f}_binding_emu.so"),
                         [os.path.join(out, f + ".o"), rt] +
                         [os.path.join(out, f"{os.path.basename(p)}_binding.o") for p in binding_parts(src, [f])],
                         ["-L" + tlib, "-Wl,-rpath," + tlib, "-ltorch_cpu", "-lc10"]))
    for lib, objs, extra in libs:
        if not os.path.exists(lib) or any(os.path.getmtime(o) > os.path.getmtime(lib) for o in objs):
            err = run([cxx, "-shared", "-o", lib, *objs, *extra, *link, "-Wl,--no-undefined", "-Wl,-Bsymbolic",
                       "-lpthread", "-ldl"])
            if err:
                sys.exit(err)
    print(f"cudaemu: built {' '.join(fams)} ({a.mode}) in {out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
