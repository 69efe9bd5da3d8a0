"""Progress bars that suit both a terminal and a log file.

    bar = progress_bar(total=n, desc="extract demo", unit="utt", disable=not wanted)

On a terminal this is tqdm's live bar. When stderr is not a terminal (CI, cluster jobs,
`> log 2>&1`) tqdm would write every refresh as a `\\r` fragment; there the bar prints one plain
line at every `log_step` (a fraction of the total, default 10 %) and one when it closes.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

LOG_STEP = 0.1


def on_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LogLines(tqdm):
    """tqdm that writes whole lines, one per `log_step` of the total (or per update without one)."""

    def __init__(self, *args, log_step: float = LOG_STEP, **kwargs):
        self._log_step = log_step
        self._logged = None  # the count printed last
        kwargs.setdefault("mininterval", 0)
        super().__init__(*args, **kwargs)
        self._logged = self.n

    def display(self, msg=None, pos=None):
        if self._logged is None or self.disable:
            return
        total = self.total or 0
        step = max(1, int(total * self._log_step)) if total else 1
        finished = total and self.n >= total
        if self.n - self._logged >= step or (finished and self.n != self._logged):
            self._write_line()

    def close(self):
        if self.disable:  # a disabled tqdm never set up its stream (self.fp)
            return super().close()
        if self._logged is not None and self.n != self._logged:
            self._write_line()
        self._logged = None
        lines, self.fp = self.fp, _Discard()  # tqdm's own closing newline / carriage return
        try:
            super().close()
        finally:
            self.fp = lines

    def _write_line(self):
        self._logged = self.n
        self.fp.write(self.format_meter(**{**self.format_dict, "ncols": 0}) + "\n")
        self.fp.flush()


class _Discard:
    def write(self, text):
        pass

    def flush(self):
        pass


def progress_bar(*args, log_step: float = LOG_STEP, **kwargs) -> tqdm:
    """A tqdm bar on a terminal, plain lines every `log_step` of the total elsewhere."""
    if on_terminal(kwargs.get("file")):
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(*args, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.pop("leave", None)
    return LogLines(*args, log_step=log_step, **kwargs)
