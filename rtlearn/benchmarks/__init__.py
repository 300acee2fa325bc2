"""Benchmarks: `rtlearn bench step` (this package) and `rtlearn bench serve` (rtlearn.service.bench)."""
