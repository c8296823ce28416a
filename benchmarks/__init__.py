"""Benchmarks of acrelease against reference servers (benchmarks/README.md)."""
