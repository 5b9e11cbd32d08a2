# facekernels: the two commands are `make bench` and `make test`; both set up .venv on a fresh machine.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BENCH_ARGS ?=
PYTEST_ARGS ?=
# Build tools and test/bench dependencies (torch is pinned separately: any other request can pull a
# multi-GB CUDA build). pytest-xdist lets CI spread each test run over the machine's cores. scipy and
# scikit-learn only cross-check facekernels.me (scipy.signal.find_peaks) and facekernels.metrics
# (sklearn.metrics.roc_curve) in tests; opencv-contrib-python-headless is the [data] extra (facekernels.data's
# TV-L1 flows), tested when present; pyarrow is the [landmarks] extra (LandmarkWindows' Parquet reader; its
# tests skip without it). timm (the [fer] extra) is not here: it needs a torchvision built for this
# torch, and the only one for the CPU torch 2.13 is a CUDA build that cannot load (CI tests timm in .venv-cuda).
DEPS := numpy scikit-build-core pybind11 cmake ninja pytest pytest-xdist expecttest pytest-benchmark matplotlib scipy \
        scikit-learn opencv-contrib-python-headless pyarrow

.PHONY: all venv install test bench bench-pytest gpu-check cuda-emu wheel clean

all: test

$(VENV)/.deps: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q $(DEPS) "$(TORCH)"
	touch $@

venv: $(VENV)/.deps

# Always rebuilds (incrementally, in build/): the extension is compiled against the torch in .venv.
install: venv
	@echo "make install: building facekernels against $(VENV)'s torch (incremental; ninja prints [n/N])"
	$(PIP) install -v --no-build-isolation --no-deps .

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) -m facekernels bench $(BENCH_ARGS)

# The pytest-benchmark suites over the same workloads (bench/bench_*.py).
bench-pytest: install
	$(PY) -m pytest -q bench --benchmark-only --benchmark-columns=median,iqr,rounds $(PYTEST_ARGS)

wheel: install
	$(PIP) wheel -q --no-build-isolation --no-deps -w dist .

# The CUDA emulation stage (no GPU): cuda/'s kernels compiled as host C++ and run on the CPU against the
# CPU ops (plain, race checker, ASan+UBSan, grid-capped with a random thread order), the seeded-bug negative
# controls and the 32-bit index lint (tools/cudaemu/stage.sh; logs in build/cudaemu/logs).
cuda-emu: install
	bash tools/cudaemu/stage.sh $(PY)

# On a GPU machine with no network: the system python3 already holds torch with CUDA, nvcc, cmake,
# ninja, pybind11, scikit-build-core and pytest. Builds with CUDA, runs the CUDA tests and the CUDA
# benchmark, and leaves logs and results under $(OUT) when it is set.
GPU_OUT := $(if $(OUT),$(OUT),gpu-out)
gpu-check:
	bash tools/gpu_check.sh "$(GPU_OUT)"

clean:
	rm -rf build dist _skbuild *.egg-info bench/results gpu-out
