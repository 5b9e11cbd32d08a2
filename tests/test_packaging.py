"""Packaging: the build backend finds the user's torch (never a build requirement), the installed package
and its metadata (license, py.typed, a complete [test] extra), and, when CI hands them over through
FACEKERNELS_WHEEL / FACEKERNELS_SDIST (tools/ci/wheel.sh), the manylinux wheel and the sdist themselves."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.resources
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
TORCH_LIBS = re.compile(r"(^|/)lib(torch|c10|shm|gomp|cudart|cublas|nvrtc)[^/]*\.so")


def _requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")


def _backend(monkeypatch):
    """A fresh import of build_backend/facekernels_backend.py (its torch look-up is cached per process),
    over a stand-in for scikit-build-core's hooks: only the torch look-up is under test here."""
    hooks = types.ModuleType("scikit_build_core.build")
    for name in ("build_wheel", "build_editable", "build_sdist", "get_requires_for_build_wheel",
                 "get_requires_for_build_editable", "get_requires_for_build_sdist"):
        setattr(hooks, name, lambda *args, **kwargs: None)
    hooks.__all__ = []
    package = types.ModuleType("scikit_build_core")
    package.build = hooks
    monkeypatch.setitem(sys.modules, "scikit_build_core", package)
    monkeypatch.setitem(sys.modules, "scikit_build_core.build", hooks)
    monkeypatch.syspath_prepend(str(ROOT / "build_backend"))
    monkeypatch.delitem(sys.modules, "facekernels_backend", raising=False)
    import facekernels_backend

    return facekernels_backend


# ---- pyproject and the build backend ------------------------------------------------------------------------


def test_build_requirements_never_include_torch():
    """An isolated build (plain `pip install .`) would fetch the newest torch, build against it and install
    a package that cannot be imported next to the user's own torch (issue 17, item 7)."""
    system = PYPROJECT["build-system"]
    assert not any(_requirement_name(r) == "torch" for r in system["requires"]), system["requires"]
    assert system["build-backend"] == "facekernels_backend"
    for path in system["backend-path"]:
        assert (ROOT / path / "facekernels_backend.py").is_file()


def test_backend_uses_the_build_interpreters_torch_when_it_has_one(monkeypatch):
    monkeypatch.delenv("FACEKERNELS_TORCH_PYTHON", raising=False)
    assert importlib.util.find_spec("torch") is not None
    assert _backend(monkeypatch).torch_python() is None  # CMake asks the build's own interpreter


def test_backend_takes_a_named_interpreter(monkeypatch):
    monkeypatch.setenv("FACEKERNELS_TORCH_PYTHON", sys.executable)
    assert _backend(monkeypatch).torch_python() == sys.executable


def test_backend_refuses_without_torch_and_says_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEKERNELS_TORCH_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(SystemExit) as e:
        _backend(monkeypatch).torch_python()
    message = str(e.value)
    assert "no torch importable by FACEKERNELS_TORCH_PYTHON=" in message
    assert "python -m pip install torch && python -m pip install ." in message


@pytest.mark.parametrize("found, expected", [
    (("cpython-399", "2.13.0", "/t"), "is cpython-399, but this build runs"),
    ((sys.implementation.cache_tag, "2.9.1+cpu", "/t"), "has torch 2.9.1+cpu (/t), older than 2.10"),
])
def test_backend_refuses_a_torch_it_cannot_build_against(monkeypatch, found, expected):
    monkeypatch.setenv("FACEKERNELS_TORCH_PYTHON", sys.executable)
    backend = _backend(monkeypatch)
    monkeypatch.setattr(backend, "_probe", lambda python: found)
    with pytest.raises(SystemExit, match=re.escape(expected)):
        backend.torch_python()


def test_backend_sees_past_an_isolated_builds_pythonpath(monkeypatch, tmp_path):
    """pip's isolated build runs the target environment's own interpreter with a PYTHONPATH overlay
    that hides its packages; the probe (-E) must still find that environment's torch."""
    overlay = tmp_path / "overlay"
    (overlay / "torch").mkdir(parents=True)
    (overlay / "torch" / "__init__.py").write_text("raise ImportError('the overlay hides torch')\n")
    monkeypatch.setenv("PYTHONPATH", str(overlay))
    tag, version, path = _backend(monkeypatch)._probe(sys.executable)
    assert tag == sys.implementation.cache_tag and path.startswith(os.path.dirname(os.path.dirname(
        importlib.util.find_spec("torch").origin)))


def test_test_extra_lists_every_third_party_module_the_tests_import():
    """`pip install facekernels[test]` must be enough for the whole CPU suite: every module tests/ imports
    (or asks pytest.importorskip for) that is not the standard library, a local helper, facekernels or a
    base dependency is in the [test] extra."""
    project = PYPROJECT["project"]
    provided = {_requirement_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    local = {p.stem for d in ("tests", "tools", "build_backend") for p in (ROOT / d).rglob("*.py")}
    imported = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            for name in names:
                imported.setdefault(name.split(".")[0], path.relative_to(ROOT).as_posix())
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in imported.items():
        if module in sys.stdlib_module_names or module in local or module in ("facekernels", "__future__"):
            continue
        names = {_requirement_name(d) for d in distributions.get(module, [module])}
        if not names & provided:
            missing[module] = where
    assert not missing, f"imported by tests but not in the [test] extra: {missing}"


def test_license_changelog_and_citation_agree_with_pyproject():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a notice
    assert re.search(rf"^## \[?{re.escape(VERSION)}\]?", (ROOT / "CHANGELOG.md").read_text(), re.M)
    citation = (ROOT / "CITATION.cff").read_text()
    for key in ("cff-version", "message", "title", "authors", "license"):
        assert re.search(rf"^{key}:", citation, re.M), key
    assert re.search(rf"^version: \"?{re.escape(VERSION)}\"?$", citation, re.M)
    assert re.search(r"^license: \"?Apache-2.0\"?$", citation, re.M)


# ---- the installed package --------------------------------------------------------------------------------------


def test_installed_package_ships_py_typed():
    assert importlib.resources.files("facekernels").joinpath("py.typed").is_file()


def test_installed_metadata():
    meta = importlib.metadata.metadata("facekernels")
    _check_metadata(meta.get_all, meta["Metadata-Version"])


def _check_metadata(get_all, metadata_version):
    def one(key):
        values = get_all(key) or []
        assert len(values) == 1, (key, values)
        return values[0]

    assert tuple(map(int, metadata_version.split("."))) >= (2, 4)
    assert one("Version") == VERSION
    assert one("License-Expression") == "Apache-2.0"
    assert get_all("License-File") == ["LICENSE"]
    assert one("Requires-Python") == PYPROJECT["project"]["requires-python"]
    classifiers = get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers and not [c for c in classifiers if c.startswith("License ::")]
    requires = get_all("Requires-Dist") or []
    assert "torch>=2.10" in requires
    test_extra = {_requirement_name(r) for r in requires if re.search(r"extra\s*==\s*['\"]test['\"]", r)}
    assert {"pytest", "matplotlib", "scipy"} <= test_extra, test_extra


# The newest symbol versions each manylinux policy allows (auditwheel's manylinux-policy.json, x86_64).
MANYLINUX_LIMITS = {
    "manylinux_2_17": {"GLIBC": (2, 17), "GLIBCXX": (3, 4, 19), "CXXABI": (1, 3, 7)},
    "manylinux_2_28": {"GLIBC": (2, 28), "GLIBCXX": (3, 4, 24), "CXXABI": (1, 3, 11)},
}


def _torch_platform():
    wheel = importlib.metadata.distribution("torch").read_text("WHEEL") or ""
    tags = re.findall(r"^Tag: \S+-(\S+)$", wheel, flags=re.M)
    return tags[0] if tags else None


def _imported_versions(path):
    """The (library version, symbol) pairs a shared object imports, from `objdump -T`."""
    out = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        m = re.search(r"\*UND\*\s+\S+\s+\(?(GLIBC|GLIBCXX|CXXABI)_([0-9.]+)\)?\s+(\S+)$", line)
        if m:
            found.append((m[1], tuple(int(p) for p in m[2].split(".")), m[3]))
    return found


def test_extension_asks_no_newer_glibc_or_libstdcxx_than_torchs_wheel():
    """The extension runs wherever the torch wheel it is built against runs: none of its imports is newer
    than torch's manylinux platform allows (csrc/core/glibc_compat.*; before them a GCC 12 / glibc 2.36
    build imported exp/log@GLIBC_2.29, __libc_single_threaded@GLIBC_2.32 and GLIBCXX_3.4.26/3.4.29)."""
    import shutil

    import facekernels

    plat = _torch_platform()
    base = re.match(r"manylinux_2_\d+", plat or "")
    if not base or base[0] not in MANYLINUX_LIMITS:
        pytest.skip(f"torch's wheel platform {plat!r} has no limits listed here")
    if not shutil.which("objdump"):
        pytest.skip("objdump (binutils) not found")
    limits = MANYLINUX_LIMITS[base[0]]
    (ext,) = Path(facekernels.__file__).parent.glob("_C.*.so")
    imports = _imported_versions(ext)
    assert any(lib == "GLIBC" for lib, _, _ in imports), "objdump output not understood"
    too_new = sorted({f"{sym}@{lib}_{'.'.join(map(str, v))}" for lib, v, sym in imports if v > limits[lib]})
    assert not too_new, f"{ext.name} imports symbols newer than {base[0]} allows: {too_new}"


# ---- the artefacts CI builds (tools/ci/wheel.sh) ----------------------------------------------------------------


def _artefact(variable):
    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"{variable} not set (tools/ci/wheel.sh sets it to the artefact it built)")
    return Path(path)


def test_wheel():
    wheel = _artefact("FACEKERNELS_WHEEL")
    tag = re.fullmatch(r"facekernels-(?P<v>[^-]+)-(?P<py>cp\d+)-(?P<abi>cp\d+)-(?P<plat>[^-]+)\.whl", wheel.name)
    assert tag and tag["v"] == VERSION, wheel.name
    assert re.fullmatch(r"manylinux_2_\d+_x86_64", tag["plat"]), f"not a manylinux tag: {wheel.name}"
    assert tag["plat"] == _torch_platform(), f"{wheel.name}: not at torch's own platform {_torch_platform()}"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = f"facekernels-{VERSION}.dist-info"
        assert f"{info}/licenses/LICENSE" in names and "facekernels/py.typed" in names
        grafted = [n for n in names if TORCH_LIBS.search(n) or ".libs/" in n]
        assert not grafted, f"libraries copied into the wheel (torch's must stay torch's): {grafted}"
        (ext,) = [n for n in names if re.fullmatch(r"facekernels/_C\..*\.so", n)]
        binary = z.read(ext)
        assert b"libtorch_cpu.so" in binary and b"libtorch_cuda.so" not in binary  # CPU wheel, torch's lib
        assert b"$ORIGIN/../torch/lib" in binary
        wheel_file = z.read(f"{info}/WHEEL").decode()
        assert f"Tag: {tag['py']}-{tag['abi']}-{tag['plat']}" in wheel_file and "Root-Is-Purelib: false" in wheel_file
        from email.parser import Parser

        meta = Parser().parsestr(z.read(f"{info}/METADATA").decode())
    _check_metadata(meta.get_all, meta["Metadata-Version"])


def test_sdist():
    sdist = _artefact("FACEKERNELS_SDIST")
    top = f"facekernels-{VERSION}"
    assert sdist.name == f"{top}.tar.gz"
    with tarfile.open(sdist) as t:
        names = {n[len(top) + 1:] for n in t.getnames()}
    needed = {"pyproject.toml", "CMakeLists.txt", "LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff",
              "PKG-INFO", "build_backend/facekernels_backend.py", "python/facekernels/py.typed"}
    try:  # every tracked file the build reads
        tracked = subprocess.run(["git", "ls-files", "csrc", "cuda", "python", "build_backend"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        tracked = []
    missing = sorted((needed | set(tracked)) - names)
    assert not missing, f"missing from the sdist: {missing}"
    assert not [n for n in names if n.startswith((".venv", "build/", "dist/"))]
