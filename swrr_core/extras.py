"""Optional features and the extras that install them: a missing one is one line naming the extra.

    ort = require("onnx", "onnxruntime")   # -> the imported module, or MissingExtra
"""
from __future__ import annotations

import importlib
from types import ModuleType

from swrr.errors import SwrrError

# extra -> what it is for (the message says why the extra is needed)
EXTRAS = {"onnx": "ONNX export and the onnx backend", "serve": "swrr-serve"}


class MissingExtra(SwrrError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(extra: str, module: str) -> ModuleType:
    """Import `module` of optional `extra`, or raise MissingExtra naming `pip install 'swrr[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{EXTRAS[extra]} needs the optional extra swrr[{extra}] ({module} is not installed: "
                           f"{exc}); install it with: pip install 'swrr[{extra}]'") from None
