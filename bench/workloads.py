"""The benchmark workloads live in the package (facekernels.bench.workloads) so that the installed CLI,
`python -m facekernels bench`, and these pytest-benchmark suites time exactly the same shapes."""

from facekernels.bench.workloads import WORKLOADS, Workload, select  # noqa: F401
