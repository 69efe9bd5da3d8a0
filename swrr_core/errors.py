"""`SwrrError`: the base class of every error a user can cause (a bad file, option or request).

Every stage's own error type (DatasetError, AudioError, CacheError, TrainError, PredictError, ...)
subclasses it, so notebook code catches one name and every command line turns it into its one
line and exit code 2 (swrr_core/cli.py). This module imports only the standard library: any
module may import it without closing an import circle.

Messages name options through `option()`: the same message reads `--seeds 3,` under a command
line (which sets `flags_in_messages`) and `seeds='3,'` in Python.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

_AS_FLAGS = contextvars.ContextVar("swrr_options_as_flags", default=False)
_UNSET = object()


class SwrrError(Exception):
    """A request swrr cannot carry out as given; the message names the input and what to do."""


class OptionError(SwrrError):
    """An API call with an option the function does not have, or options that do not go together."""


def option(name: str, value=_UNSET) -> str:
    """How a message names option `name` (a Python name such as "batch_seconds"), with a `value` if given:
    `--batch-seconds 40` under a command line, `batch_seconds=40` in Python."""
    if _AS_FLAGS.get():
        flag = "--" + name.replace("_", "-")
        return flag if value is _UNSET else f"{flag} {value}"
    return name if value is _UNSET else f"{name}={value!r}"


@contextmanager
def flags_in_messages() -> Iterator[None]:
    """Inside it, `option()` words options as command-line flags (the CLIs run their command in it)."""
    token = _AS_FLAGS.set(True)
    try:
        yield
    finally:
        _AS_FLAGS.reset(token)


def refuse_unknown(options: Mapping[str, object], known: Iterable[str], where: str) -> None:
    """Raise OptionError naming every key of `options` that is not in `known` (and the valid ones)."""
    known = sorted(known)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OptionError(f"{where}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"valid options: {', '.join(known)}")
