"""Code shared by both stages: the cache contract, the SWRR model and the metrics."""

__version__ = "0.1.0"
