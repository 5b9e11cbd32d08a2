#!/usr/bin/env python3
"""cu2cpp: rewrite a .cu file into host C++ for cudaemu, keeping every line where it was (a #line directive
names the original file, so compiler messages, __LINE__ in reports and debug info point into the .cu).

Four rewrites, found on a copy with comments and string literals blanked out:
  KERNEL<<<grid, block[, shared[, stream]]>>>(args)
      -> ::cudaemu::launch(KERNEL, dim3(grid), dim3(block), shared, stream, __FILE__, __LINE__, "KERNEL")(args)
  extern __shared__ T name[];   -> T* const name = static_cast<T*>(::cudaemu::dynamic_shared(alignof(T)));
  __shared__ T name[N]...;      -> (unchanged: static thread_local) + ::cudaemu::static_shared(&name, sizeof(name));
  __global__ ... __launch_bounds__(N) kernel(...) {   -> { ::cudaemu::launch_bounds_check(N, "kernel");
  __global__ ... kernel(...) { (a grid-stride kernel)   -> { ::cudaemu::grid_stride_kernel("kernel");
      (grid-stride: its body reads gridDim.x, directly or through a helper or macro that does, and no
      blockIdx/gridDim .y/.z; the grid-capped run shrinks only these kernels' grids)
Everything else (keywords, built-ins, intrinsics) is handled by cudaemu/emu.hpp.

usage: cu2cpp.py IN.cu OUT.cpp [HEADER ...]   (headers scanned for grid-stride helpers, e.g.
       cuda/core/device_math.cuh)
"""
import re
import sys


def blank_comments_and_strings(src):
    out = list(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if src[k] != "\n":
                    out[k] = " "
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            for k in range(i + 1, min(j, n)):
                out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


def match_forward(s, i, open_c, close_c):
    """s[i] == open_c; index of the matching close_c."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == open_c:
            depth += 1
        elif s[j] == close_c:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {open_c} at {i}")


def split_top_level(s):
    parts, depth, cur = [], 0, ""
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def kernel_expr_start(m, end):
    """Start of the kernel expression ending just before m[end] (identifiers, ::, template arguments)."""
    i = end
    while i > 0 and m[i - 1].isspace():
        i -= 1
    while i > 0:
        c = m[i - 1]
        if c == ">":
            depth = 0
            j = i - 1
            while j >= 0:
                if m[j] == ">":
                    depth += 1
                elif m[j] == "<":
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
            i = j
        elif c.isalnum() or c == "_" or c == ":":
            i -= 1
        else:
            break
    return i


def grid_stride_names(m, extra_scan):
    """Names (functions, macros) whose definition mentions gridDim, directly or through another such name."""
    texts = [m] + [blank_comments_and_strings(t) for t in extra_scan]
    defs = {}
    for t in texts:
        for mo in re.finditer(r"#define\s+(\w+)((?:[^\n]*\\\n)*[^\n]*)", t):
            defs[mo.group(1)] = mo.group(2)
        for mo in re.finditer(r"\b(\w+)\s*\([^;{)]*\)\s*(?:const\s*)?\{", t):
            if mo.group(1) in ("if", "for", "while", "switch", "return"):
                continue
            try:
                end = match_forward(t, mo.end() - 1, "{", "}")
            except ValueError:
                continue
            defs.setdefault(mo.group(1), t[mo.end() - 1:end + 1])
    names = {"gridDim"}
    changed = True
    while changed:
        changed = False
        for n, text in defs.items():
            if n not in names and any(re.search(rf"\b{re.escape(x)}\b", text) for x in names):
                names.add(n)
                changed = True
    return names


def is_grid_stride(body, names):
    """A kernel whose work loop strides by the grid (it reads gridDim.x, or a helper that does, and no
    second grid dimension): running it with fewer blocks must give the same result."""
    if re.search(r"\b(blockIdx|gridDim)\s*\.\s*[yz]\b", body):
        return False
    return any(re.search(rf"\b{re.escape(n)}\b", body) for n in names)


def rewrite(src, extra_scan=()):
    m = blank_comments_and_strings(src)
    edits = []  # (start, end, replacement)

    # extern __shared__ T name[];
    for mo in re.finditer(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:<>, ]*?)\s+(\w+)\s*\[\s*\]\s*;", m):
        t, name = mo.group(1).strip(), mo.group(2)
        edits.append((mo.start(), mo.end(),
                      f"{t}* const {name} = static_cast<{t}*>(::cudaemu::dynamic_shared(alignof({t})));"))

    # static __shared__ declarations inside functions
    for mo in re.finditer(r"(?<!extern )__shared__\s+[^;]*?\b(\w+)\s*(\[[^;]*\])?\s*;", m):
        if m[max(0, mo.start() - 7):mo.start()].strip() == "extern":
            continue
        name = mo.group(1)
        edits.append((mo.end(), mo.end(), f" ::cudaemu::static_shared(&{name}, sizeof({name}));"))

    # __global__ definitions: at entry, check __launch_bounds__ and mark grid-stride kernels
    stride_names = grid_stride_names(m, extra_scan)
    for mo in re.finditer(r"\b__global__\b", m):
        k = mo.end()
        bounds = None
        name_mo = None
        while True:
            lb = re.compile(r"\s*(?:template\s*<[^>]*>\s*)?(?:static\s+|inline\s+)*").match(m, k)
            k = lb.end()
            if m.startswith("__launch_bounds__", k):
                open_paren = m.index("(", k)
                close = match_forward(m, open_paren, "(", ")")
                bounds = split_top_level(src[open_paren + 1:close])[0].strip()
                k = close + 1
                continue
            word = re.compile(r"(\w+)\s*").match(m, k)
            if not word:
                break
            if m[word.end():word.end() + 1] == "(":
                name_mo = word
                break
            k = word.end()
        if not name_mo:
            continue
        name = name_mo.group(1)
        params_close = match_forward(m, name_mo.end(), "(", ")")
        rest = re.compile(r"\s*([{;])").match(m, params_close + 1)
        if not rest or rest.group(1) != "{":
            continue  # a declaration
        brace = rest.end() - 1
        body = m[brace:match_forward(m, brace, "{", "}") + 1]
        inject = ""
        if bounds is not None:
            inject += f" ::cudaemu::launch_bounds_check({bounds}, \"{name}\");"
        if is_grid_stride(body, stride_names):
            inject += f" ::cudaemu::grid_stride_kernel(\"{name}\");"
        if inject:
            edits.append((brace + 1, brace + 1, inject))

    # kernel launches
    for mo in re.finditer(r"<<<", m):
        close = m.index(">>>", mo.end())
        cfg = split_top_level(src[mo.end():close])
        cfg = [c.strip() for c in cfg]
        if len(cfg) < 2 or len(cfg) > 4:
            raise ValueError(f"launch configuration with {len(cfg)} parts at offset {mo.start()}")
        while len(cfg) < 4:
            cfg.append("0")
        start = kernel_expr_start(m, mo.start())
        kernel = src[start:mo.start()].strip()
        nl = src[mo.start():close + 3].count("\n")
        edits.append((start, close + 3,
                      f"::cudaemu::launch({kernel}, dim3({cfg[0]}), dim3({cfg[1]}), {cfg[2]}, {cfg[3]}, __FILE__, __LINE__, "
                      f"\"{kernel}\")" + "\n" * nl))

    edits.sort(key=lambda e: (e[0], e[1]))
    out, pos = [], 0
    for s, e, r in edits:
        if s < pos:
            raise ValueError(f"overlapping rewrites at {s}")
        out.append(src[pos:s])
        out.append(r)
        pos = e
    out.append(src[pos:])
    return "".join(out), edits


def main():
    src_path, out_path = sys.argv[1], sys.argv[2]
    src = open(src_path).read()
    extra = [open(p).read() for p in sys.argv[3:]]
    text, edits = rewrite(src, extra)
    with open(out_path, "w") as f:
        f.write(f'#line 1 "{src_path}"\n')
        f.write(text)
    kinds = {}
    for _, _, r in edits:
        k = r.split("(")[0].strip().split()[-1] if "::cudaemu::" in r else "?"
        kinds[k] = kinds.get(k, 0) + 1
    print(f"cu2cpp: {src_path}: {len(edits)} rewrites {kinds}", file=sys.stderr)


if __name__ == "__main__":
    main()
