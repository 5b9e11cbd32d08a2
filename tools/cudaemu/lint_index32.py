#!/usr/bin/env python3
"""Static check over cuda/ for 32-bit index arithmetic on sizes that can exceed 2^31 (what the emulation
stage cannot reach: its inputs are small). Sizes reach the kernels as int64_t; a product or sum of them,
or a global thread index, formed in 32 bits silently wraps on large tensors.

Rules (on the source with comments and strings blanked):
  R1  blockIdx.* * blockDim.* (or the reverse) with neither operand widened first: an unsigned 32-bit
      product (write static_cast<int64_t>(blockIdx.x) * blockDim.x, or grid_thread_index()).
  R2  a narrowing cast, static_cast<int|unsigned|...>(expr) or (int)(expr), of an expression that
      multiplies or adds: an index or size computed in 64 bits and cut to 32.
  R3  an int/unsigned variable initialised from a product of two non-constant operands.
A line reviewed as safe (a value bounded by a block or tile size, a grid clamped to 2^31 - 1, ...) is
listed in index32_allowlist.txt as "path: the stripped line" followed by " # why"; the list is matched
by text, so it follows code moves; an entry that no longer matches is reported as stale.

usage: lint_index32.py [ROOT]   exit status 1 on any finding or stale entry
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cu2cpp import blank_comments_and_strings  # noqa: E402

NARROW = r"(?:int|unsigned|unsigned int|int32_t|uint32_t|short)"
R1 = re.compile(r"(?<!\))\b(blockIdx|blockDim)\.[xyz]\s*\*\s*(blockIdx|blockDim)\.[xyz]")
R2 = re.compile(rf"(static_cast<\s*{NARROW}\s*>|\(\s*{NARROW}\s*\))\s*\(")
R3 = re.compile(rf"^\s*(?:const\s+)?{NARROW}\s+\w+\s*=\s*([^;]*);")
CONST = re.compile(r"^\s*(\d+[uUlL]*|k[A-Z]\w*|sizeof\s*\(.*\)|warpSize)\s*$")


def balanced(s, i):
    depth = 0
    for j in range(i, len(s)):
        depth += s[j] == "("
        depth -= s[j] == ")"
        if depth == 0:
            return s[i + 1:j]
    return s[i + 1:]


def findings(path, text):
    blank = blank_comments_and_strings(text)
    lines, src_lines = blank.split("\n"), text.split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        why = []
        if R1.search(line):
            why.append("R1 32-bit blockIdx*blockDim product")
        for mo in R2.finditer(line):
            arg = balanced(line, mo.end() - 1)
            if re.search(r"[*+]", arg) and not CONST.match(arg):
                why.append("R2 narrowing cast of computed " + arg.strip()[:40])
        mo = R3.match(line)
        if mo:
            rhs = mo.group(1)
            if "*" in rhs and "static_cast<int64_t>" not in rhs and "int64_t{" not in rhs:
                ops = [o.strip() for o in re.split(r"\*", re.sub(r"[()]", " ", rhs))]
                if sum(1 for o in ops if o and not CONST.match(o.split()[-1] if o.split() else o)) >= 2:
                    why.append("R3 int variable from a product")
        if why:
            out.append((path, n, src_lines[n - 1].strip(), why))
    return out


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", ".."))
    allow = {}
    for raw in open(os.path.join(HERE, "index32_allowlist.txt")):
        raw = raw.rstrip("\n")
        if not raw.strip() or raw.startswith("#"):
            continue
        entry = raw.split(" # ", 1)[0].rstrip()
        allow[entry] = False
    bad = []
    for dirpath, _, files in os.walk(os.path.join(root, "cuda")):
        for f in sorted(files):
            if f.endswith((".cu", ".cuh", ".h")):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                for rel_, n, line, why in findings(rel, open(path).read()):
                    key = f"{rel_}: {line}"
                    if key in allow:
                        allow[key] = True
                    else:
                        bad.append(f"{rel_}:{n}: {'; '.join(why)}\n    {line}")
    stale = [k for k, used in allow.items() if not used]
    for b in bad:
        print(b)
    for s in stale:
        print(f"stale allowlist entry (no longer matches a finding): {s}")
    print(f"lint_index32: {len(bad)} finding(s), {len(stale)} stale allowlist entr(ies), "
          f"{sum(allow.values())} reviewed line(s) allowed")
    return 1 if bad or stale else 0


if __name__ == "__main__":
    sys.exit(main())
