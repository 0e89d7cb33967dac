"""What the test suite and the benchmarks both use to drive and inspect a sandbox."""
