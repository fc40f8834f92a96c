"""Benchmarks: each script measures Dispatchroom and its reference side by side in one run and
prints ratios. `make bench` (or `python -m bench`) runs them all against the local PostgreSQL."""
