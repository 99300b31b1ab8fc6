"""Benchmarks: our figure and its baseline measured on the same node in the same run (hack/bench)."""
