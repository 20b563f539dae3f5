"""Benchmarks: `python -m bench` (accuracy and HTTP throughput/latency). Not imported by app or training."""
