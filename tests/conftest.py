import os

# OpenMP threads that wait at a barrier sleep at once instead of spinning (set before torch loads libgomp;
# pytest-xdist's workers inherit it). CI runs one pytest worker per core, each with torch's default of one
# intra-op thread per core: with spinning waits a worker's idle OpenMP threads took the cores from the other
# worker's running ones and small parallel calls took milliseconds instead of microseconds (tests/test_leaks.py
# ran 156 s instead of 17 s with two workers on two cores). Passive waiting keeps every op's multi-threaded
# path under test at the machine's thread count.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
