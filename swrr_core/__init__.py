"""Code shared by both stages: the cache contract, the SWRR model and the metrics."""

from ._version import __version__  # noqa: F401 (the package face re-exports it)


def __getattr__(name):
    """`swrr.evaluate(...)`: cross-corpus evaluation (swrr.train.evaluate), imported on first use so that
    `import swrr` stays light."""
    if name == "evaluate":
        from swrr.train.evaluate import evaluate

        return evaluate
    raise AttributeError(f"module 'swrr' has no attribute {name!r}")
