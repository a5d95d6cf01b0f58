"""Synthetic data and load: seed, traffic, the load test and the demo."""
