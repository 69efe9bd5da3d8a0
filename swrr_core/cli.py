"""What every swrr command line shares: a user mistake ends as ONE line on stderr, exit code 2.

    @click.command("swrr-extract", cls=OneLineErrors)

click's own usage errors (a bad option value, a missing argument) and any `SwrrError` (the base
of every error a user can cause) become `<command>: error: <message>`; `user_errors` adds other
exception types. `RankFailed` (raised on every rank of a torchrun launch with the same message)
is printed by rank 0 only. Ctrl-C outside the command's
own handling ends with exit code 130.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence, Type

import click

from swrr.errors import SwrrError, flags_in_messages
from swrr.ranks import RankFailed, Ranks

USAGE_EXIT = 2
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# Extraction's notes (class counts) go to stderr, as they always did: its stdout is only the summary.
STDERR_LOGGERS = ("swrr.extract",)


class _ConsoleLines(logging.Handler):
    """Each record as its bare message on the sys.stdout (sys.stderr for STDERR_LOGGERS) of the
    moment (test runners swap them)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.name.startswith(STDERR_LOGGERS) else sys.stdout
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 (logging's own contract: report, never raise)
            self.handleError(record)


@contextmanager
def console_output() -> Iterator[None]:
    """Inside it, the "swrr" loggers' INFO-and-up messages are printed as plain lines on stdout
    (extraction's on stderr): what the commands show; the library itself only logs."""
    logger = logging.getLogger("swrr")
    handler = _ConsoleLines()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # shown once, not again by a root handler
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class OneLineErrors(click.Command):
    def __init__(self, *args, user_errors: Sequence[Type[BaseException]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.user_errors = (*user_errors, SwrrError)

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            with flags_in_messages(), console_output():  # library messages name options as flags
                return super().main(*args, **kwargs)
        except click.ClickException as exc:
            self.fail(exc.format_message())
        except RankFailed as exc:
            self.fail(str(exc), quiet=not Ranks.from_env().is_main)
        except self.user_errors as exc:
            self.fail(str(exc))
        except click.Abort:
            click.echo(f"{self.name}: interrupted", err=True)
            sys.exit(130)

    def fail(self, message: str, quiet: bool = False) -> None:
        if not quiet:
            click.echo(f"{self.name}: error: {message}", err=True)
        sys.exit(USAGE_EXIT)
