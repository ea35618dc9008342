"""Test tooling shipped with the package (used by tests/ and benchmarks/, never by a run)."""
