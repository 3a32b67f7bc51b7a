"""Benchmarks: `python -m bench.<name>` (docs/benchmarks.md)."""
