"""Code shared by both stages: the cache contract, the SWRR model and the metrics."""

from ._version import __version__  # noqa: F401 (the package face re-exports it)
