"""Benchmarks: the paper's evaluation protocol (choose on validation, report on test) and speed figures."""
