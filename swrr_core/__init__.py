"""swrr: multimodal (speech + text) emotion recognition with the SWRR head (docs/API.md).

    import swrr
    result = swrr.extract_features("demo", encoders="tiny")
    run = swrr.train_model(result.cache)
    swrr.EmotionRecognizer.from_pretrained(run.path).classify_file("clip.wav", text="what was said")

The names below are imported on first use (PEP 562), so `import swrr` loads neither torch nor the
stages. Nothing inside swrr imports this face: it can never close an import circle.
"""
from __future__ import annotations

import importlib

from ._version import __version__

# public name -> the module that defines it
_API = {
    "SwrrError": "swrr.errors",
    "extract_features": "swrr.api",
    "ExtractResult": "swrr.api",
    "train_model": "swrr.api",
    "open_run": "swrr.api",
    "Run": "swrr.api",
    "compare": "swrr.api",
    "evaluate": "swrr.train.evaluate",
    "open_cache": "swrr.cache",
    "EmotionRecognizer": "swrr.predict.recognizer",
    "Prediction": "swrr.predict.recognizer",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'swrr' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted({*globals(), *_API})
