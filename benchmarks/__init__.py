"""Benchmark runs, model test suites and the rollout gates built on both (docs/benchmarks.md)."""
