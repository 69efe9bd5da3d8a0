"""What every swrr command line shares: a user mistake ends as ONE line on stderr, exit code 2.

    @click.command("swrr-extract", cls=OneLineErrors)

click's own usage errors (a bad option value, a missing argument) and any `SwrrError` (the base
of every error a user can cause) become `<command>: error: <message>`; `user_errors` adds other
exception types. `RankFailed` (raised on every rank of a torchrun launch with the same message)
is printed by rank 0 only. Ctrl-C outside the command's
own handling ends with exit code 130.
"""
from __future__ import annotations

import sys
from typing import Sequence, Type

import click

from swrr.errors import SwrrError
from swrr.ranks import RankFailed, Ranks

USAGE_EXIT = 2
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class OneLineErrors(click.Command):
    def __init__(self, *args, user_errors: Sequence[Type[BaseException]] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.user_errors = (*user_errors, SwrrError)

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
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
