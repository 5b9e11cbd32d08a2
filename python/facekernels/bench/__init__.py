"""Benchmark harness and workloads (`python -m facekernels bench`)."""
