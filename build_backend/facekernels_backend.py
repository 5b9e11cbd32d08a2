"""facekernels' build backend: scikit-build-core, built against the torch of the environment it installs into.

The extension must be compiled against the torch it will be imported with, so torch is not a build
requirement: an isolated build environment would otherwise fetch the newest torch (a multi-GB CUDA build)
and compile against it, and the result would fail to import next to the user's own torch. Instead the
wheel and editable hooks find the torch to build against, in this order:

1. ``FACEKERNELS_TORCH_PYTHON``: an interpreter named by the user (run with ``-E``);
2. torch importable by the build itself (``--no-build-isolation``, the usual developer build);
3. the interpreter running the build, outside its isolation (``sys.executable -E``): pip runs an
   isolated build with the interpreter of the environment it installs into, and only a PYTHONPATH
   overlay hides that environment's packages, which ``-E`` drops;
4. the activated virtual environment (``$VIRTUAL_ENV``), for front ends that build in a venv of their own.

The interpreter found is handed to CMake in ``FACEKERNELS_TORCH_PYTHON`` (CMakeLists.txt runs it with
``-E`` to locate torch's headers and libraries). When none has torch >= 2.10 for this Python version the
build stops at once with the one-line fix instead of building something that cannot be imported.
The sdist hooks are scikit-build-core's own: an sdist needs no torch.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

from scikit_build_core import build as _skbuild
from scikit_build_core.build import *  # noqa: F403  (every hook scikit-build-core defines, sdist included)

MIN_TORCH = (2, 10)
ENV = "FACEKERNELS_TORCH_PYTHON"

_PROBE = (
    "import sys, torch; "
    "print(sys.implementation.cache_tag); print(torch.__version__); print(torch.__file__)"
)


def _probe(python: str) -> tuple[str, str, str] | None:
    """(cache tag, torch version, torch path) as seen by ``python -E``, or None if it has no torch."""
    try:
        with tempfile.TemporaryDirectory() as cwd:  # not the source tree: nothing there may shadow torch
            out = subprocess.run([python, "-E", "-c", _PROBE], cwd=cwd, capture_output=True, text=True,
                                 timeout=300)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or len(lines) < 3:
        return None
    return lines[-3], lines[-2], lines[-1]


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def _refuse(reason: str) -> SystemExit:
    return SystemExit(
        f"\nfacekernels: {reason}\n"
        "facekernels is compiled against the torch (>= 2.10, CPU or CUDA) already installed in the\n"
        "environment it is installed into, and a build never installs one. Install torch first, then\n"
        "facekernels again; from a source checkout:\n\n"
        "    python -m pip install torch && python -m pip install .\n\n"
        "(or build with --no-build-isolation where torch is installed, or name the interpreter whose\n"
        f"torch to build against: {ENV}=/path/to/python)\n"
    )


@functools.lru_cache(maxsize=None)
def torch_python() -> str | None:
    """The interpreter whose torch the extension is built against; None means the build's own.

    Raises SystemExit with the fix when there is no usable torch.
    """
    tag = sys.implementation.cache_tag
    named = os.environ.get(ENV, "").strip()
    if named:
        candidates = [(named, f"{ENV}={named}")]
    else:
        if importlib.util.find_spec("torch") is not None:
            return None  # the build environment has torch: CMake asks the build's own interpreter
        candidates = [(sys.executable, f"the interpreter running this build ({sys.executable})")]
        venv = os.environ.get("VIRTUAL_ENV", "")
        venv_python = os.path.join(venv, "bin", "python")
        if venv and os.path.realpath(venv) != os.path.realpath(sys.prefix) and os.path.exists(venv_python):
            candidates.append((venv_python, f"the active virtual environment ({venv})"))
    seen = []
    for python, where in candidates:
        found = _probe(python)
        if found is None:
            seen.append(f"no torch importable by {where}")
            continue
        its_tag, version, path = found
        if its_tag != tag:
            seen.append(f"{where} is {its_tag}, but this build runs {tag}")
            continue
        if _version_tuple(version) < MIN_TORCH:
            seen.append(f"{where} has torch {version} ({path}), older than "
                        f"{'.'.join(map(str, MIN_TORCH))}")
            continue
        print(f"facekernels: building against torch {version} from {where}", file=sys.stderr)
        return python
    raise _refuse("; ".join(seen) + ".")


def _with_torch(hook):
    @functools.wraps(hook)
    def wrapped(*args, **kwargs):
        python = torch_python()
        if python is not None:
            os.environ[ENV] = python  # read by CMakeLists.txt, in this process and its children
        return hook(*args, **kwargs)

    return wrapped


# The wheel hooks check for torch first: get_requires_* is the first hook a front end calls, so a
# build without torch stops before anything is downloaded or compiled.
get_requires_for_build_wheel = _with_torch(_skbuild.get_requires_for_build_wheel)
get_requires_for_build_editable = _with_torch(_skbuild.get_requires_for_build_editable)
build_wheel = _with_torch(_skbuild.build_wheel)
build_editable = _with_torch(_skbuild.build_editable)
