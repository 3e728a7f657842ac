"""What tests and benchmarks share: the loopback fake of Discord and the end-to-end harness."""
