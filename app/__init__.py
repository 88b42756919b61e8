"""MatchGen Viewer: unsupervised anomaly detection with test-time matched pseudo-normal images."""

__version__ = "0.1.0"
