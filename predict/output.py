"""Where `swrr-predict` may write: the checks that keep `--out` (and its `--plot` PNGs) from
replacing anything that is not an earlier swrr-predict output.

    fmt = output_format(out, fmt)           # the table format, from --format and the suffix
    check_output(out)                       # before any work: folder, name length, what is there
    check_not_an_input(out, items)          # once the inputs are known
    check_outside_model(out, bundle.path)   # once the bundle is found

The rule is swrr-extract's `--overwrite` rule for caches: a file is replaced only when it is
recognisably our own output (a predictions table, by its first columns), never an input, never
a file of the model. `<out>.partial` is what is written first and renamed into place.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional

from swrr.errors import option
from swrr.predict.inputs import Item, PredictError
from swrr.rundir import RunFolder, parse_unit_name

FORMAT_SUFFIXES = {"csv": ".csv", "jsonl": ".jsonl"}
# The first columns of every table swrr-predict writes, in order: how an earlier output is recognised.
LEADING_COLUMNS = ("id", "file", "start", "end", "kind", "source_id")
PARTIAL_SUFFIX = ".partial"
# Room kept beside --out's stem for a plot's name: ".<file id, >= 8 bytes>.~999.png.partial".
PLOT_NAME_MARGIN = len(".12345678.~999.png") + len(PARTIAL_SUFFIX)
MAX_PLOT_ID = 100  # bytes of an input's id kept in its plot's file name
NAME_MAX = 255  # bytes in a file name on Linux and macOS file systems (checked per folder for --out)


def output_format(out: Path, fmt: Optional[str]) -> str:
    """The table format: `fmt`, or from the suffix (.csv / .jsonl). PredictError when `out` is a
    folder, or its suffix contradicts `fmt` or says neither (a `.json` name would hold JSON lines, not one JSON document)."""
    if out.is_dir():
        raise PredictError(f"{option('out', str(out))} is a folder; give a file path such as {out / 'predictions.csv'}")
    suffix = out.suffix.lower()
    by_suffix = {v: k for k, v in FORMAT_SUFFIXES.items()}.get(suffix)
    if fmt is None and by_suffix is None:
        raise PredictError(f"{option('out', str(out))}: name the table .csv or .jsonl (JSON lines), or give {option('format')}; "
                           f"a {suffix or 'missing'} suffix would not say what the file holds")
    fmt = fmt or by_suffix
    if fmt in FORMAT_SUFFIXES and suffix != FORMAT_SUFFIXES[fmt]:
        raise PredictError(f"{option('out', str(out))}: the suffix {suffix or '(none)'} contradicts {option('format', fmt)}; "
                           f"name it {out.with_suffix(FORMAT_SUFFIXES[fmt]).name}")
    return fmt


def check_output(out: Path, plot: bool = False) -> None:
    """Refuse an out that cannot be written (with its `--plot` PNGs beside it when `plot`), or
    that would replace a file that is not an earlier swrr-predict output, before any work."""
    folder = out.parent
    if not folder.is_dir():
        raise PredictError(f"{option('out', str(out))}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PredictError(f"{option('out', str(out))}: the folder {folder} is not writable")
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = NAME_MAX
    longest = (len(out.stem.encode()) + PLOT_NAME_MARGIN) if plot else len(out.name.encode()) + len(PARTIAL_SUFFIX)
    if longest > name_max:
        raise PredictError(f"{option('out', out.name[:24] + '…')}: the file name is {len(out.name.encode())} bytes long; this "
                           f"file system allows {name_max} per name and predict adds up to {longest - len(out.name.encode())} "
                           f"({PARTIAL_SUFFIX} while writing{', <id>.png for ' + option('plot') if plot else ''}): choose a shorter name")
    if out.exists() and not is_predict_output(out):
        raise PredictError(f"{option('out', str(out))} exists and is not an earlier swrr-predict output; swrr-predict replaces "
                           f"only its own tables: choose another {option('out')} (or move that file away yourself)")


def is_predict_output(path: Path) -> bool:
    """Whether `path` is a table swrr-predict wrote (CSV header or first JSON line starting with
    LEADING_COLUMNS). An empty file is not: predict never leaves one."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline(64 * 1024).strip()
    except (OSError, UnicodeDecodeError):
        return False
    if first.startswith("{"):
        try:
            keys = tuple(json.loads(first))
        except ValueError:
            return False
    else:
        keys = tuple(first.split(","))
    return keys[:len(LEADING_COLUMNS)] == LEADING_COLUMNS


def check_not_an_input(out: Path, items: Iterable[Item], manifests: Iterable[Path] = ()) -> None:
    """PredictError when `out` is one of the request's input files (audio, manifest, sidecar text)."""
    if not out.exists():
        return
    out_stat = out.stat()
    candidates = [*manifests]
    for item in items:
        candidates += [item.path, item.path.with_suffix(".txt")]
    for path in dict.fromkeys(candidates):
        try:
            same = os.path.samestat(out_stat, path.stat())
        except OSError:
            continue
        if same:
            raise PredictError(f"{option('out', str(out))} is one of the inputs ({path}); choose another {option('out')}")


def check_outside_model(out: Path, bundle_folder: Path) -> None:
    """PredictError when `out` lies inside the model's bundle folder or the run folder holding it."""
    target = out.resolve()
    folders = [bundle_folder.resolve()]
    run = RunFolder(folders[0].parent.parent)  # runs/<name>/<unit>/model
    if parse_unit_name(folders[0].parent.name) is not None and run.has_config():
        folders.append(run.path)
    for folder in folders:
        if target.is_relative_to(folder):
            raise PredictError(f"{option('out', str(out))} lies inside the model's folder {folder}; write predictions elsewhere "
                               "(a bundle or run folder holds only what swrr-train wrote)")


def unique_plot_name(out: Path, source: str, taken: set) -> Path:
    """`<out stem>.<source>.png`, unique among `taken` (names already given to this run's plots)."""
    safe = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in str(source)).strip(".") or "input"
    budget = min(MAX_PLOT_ID, NAME_MAX - len(out.stem.encode()) - len(".~999.png" + PARTIAL_SUFFIX) - 1)
    while len(safe.encode()) > max(budget, 8):  # the PNG's name fits the file system however long the id
        safe = safe[:-1]
    path, n = out.with_name(f"{out.stem}.{safe}.png"), 1
    while path.name in taken:
        n += 1
        path = out.with_name(f"{out.stem}.{safe}~{n}.png")
    taken.add(path.name)
    return path


def remove_quietly(path: Path) -> None:
    """Delete a leftover of a failed write; a failure here must not hide the first error."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
