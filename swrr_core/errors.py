"""`SwrrError`: the base class of every error a user can cause (a bad file, option or request).

Every stage's own error type (DatasetError, AudioError, CacheError, TrainError, PredictError, ...)
subclasses it, so notebook code catches one name and every command line turns it into its one
line and exit code 2 (swrr_core/cli.py). This module imports nothing: any module may import it.
"""
from __future__ import annotations

from typing import Iterable, Mapping


class SwrrError(Exception):
    """A request swrr cannot carry out as given; the message names the input and what to do."""


class OptionError(SwrrError):
    """An API call with an option name that the function does not have."""


def refuse_unknown(options: Mapping[str, object], known: Iterable[str], where: str) -> None:
    """Raise OptionError naming every key of `options` that is not in `known` (and the valid ones)."""
    known = sorted(known)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OptionError(f"{where}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"valid options: {', '.join(known)}")
