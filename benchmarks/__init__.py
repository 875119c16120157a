"""datasync's benchmarks: ``python -m benchmarks`` (or ``bash scripts/bench``) writes benchmarks/RESULTS.md."""
