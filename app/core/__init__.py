"""The algorithm: MatchGen solver, difference/detection maps and metrics. Imports no Qt."""
