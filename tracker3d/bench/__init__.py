"""Benchmarks behind `tracker3d bench`: speed always quoted with accuracy, and the machine."""
