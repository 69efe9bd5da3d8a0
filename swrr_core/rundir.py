"""The run folder: the train -> compare / export / predict / TensorBoard contract, as `cache.py` is
for the cache and `bundle.py` for a model bundle. Every module that writes or reads a run folder
goes through here; no other module spells these names or parses a unit folder's name.

    runs/<name>/                    one run of swrr-train
        config.json                 what ran: train config, model, cache identity, folds (+ rerun record)
        INCOMPLETE                  present until the run has finished
        RANK-FAILED                 under torchrun: the first failing rank's message (cleared on relaunch)
        summary.csv  results.json   the run's reports, written only when every unit has finished
        confusion.png  learning_curve.png  attention.png
        tb/<unit>/                  --tensorboard event files of each unit
        fold03/ | fold03-seed2/     one unit (fold x seed; "-seedS" only in a run with --seeds)
            last.pt                 checkpoint after the last finished epoch (resume)
            best.pt                 the selected model (checkpoint)
            log.csv  log.jsonl      one record per epoch
            predictions.csv  attention.npy
            model/                  the unit's model bundle (swrr_core/bundle.py)
            metrics.json            the unit's result, written last: it exists = the unit has finished
    runs/<name>.lock                the OS lock of the process training the run (swrr_core/guards.py)
    runs/<grid>/                    --ablation all: config.json with "grid", ablations.csv, INCOMPLETE,
                                    one run folder per variant (swrr/, text-only/, ...), and
                                    compare/ once swrr-compare has compared the variants

Plain paths and names; nothing here imports train, so compare, export, predict and TensorBoard
read runs without the trainer.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import SwrrError
from .guards import OutputLock

CONFIG = "config.json"
INCOMPLETE = "INCOMPLETE"  # the marker file of a run folder whose run has not finished
RANK_FAILED = "RANK-FAILED"
RESULTS = "results.json"
SUMMARY = "summary.csv"
ABLATION_TABLE = "ablations.csv"
CONFUSION_PLOT, LEARNING_CURVE_PLOT, ATTENTION_PLOT = "confusion.png", "learning_curve.png", "attention.png"
TENSORBOARD = "tb"
COMPARISON = "compare"

UNIT_PREFIX = "fold"
UNIT_GLOB = f"{UNIT_PREFIX}*"  # in messages: where a run keeps its units
UNIT_RESULT = "metrics.json"
UNIT_BUNDLE = "model"
_UNIT_NAME = re.compile(rf"^{UNIT_PREFIX}(\d+)(?:-seed(\d+))?$")


class RunFolderError(SwrrError):
    """A folder that is not (or no longer) a readable run folder; the message names the path."""


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON at `path` through a temp file and a rename: never half a file."""
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def unit_name(fold: int, seed: Optional[int] = None) -> str:
    """A unit's folder name: fold03, or fold03-seed2 (`seed` given only in a run with --seeds)."""
    name = f"{UNIT_PREFIX}{fold:02d}"
    return name if seed is None else f"{name}-seed{seed}"


def parse_unit_name(name: str) -> Optional[Tuple[int, Optional[int]]]:
    """fold03 -> (3, None), fold03-seed2 -> (3, 2); None for any other name."""
    match = _UNIT_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), None if match.group(2) is None else int(match.group(2))


def _inside(name: str, doc: str) -> property:
    """A path attribute: `name` inside the folder's `path`."""
    return property(lambda self: self.path / name, doc=doc)


@dataclass(frozen=True)
class UnitFolder:
    """One unit's folder (fold x seed) inside a run folder."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # a str is welcome too

    last_checkpoint = _inside("last.pt", "the checkpoint after the last finished epoch (resume)")
    best_checkpoint = _inside("best.pt", "the selected model's checkpoint")
    log_csv = _inside("log.csv", "one row per epoch")
    log_jsonl = _inside("log.jsonl", "one JSON record per epoch")
    predictions = _inside("predictions.csv", "the selected model on the unit's test rows")
    attention = _inside("attention.npy", "the mean token x frame attention on the test rows")
    bundle = _inside(UNIT_BUNDLE, "the unit's model bundle folder (its contents: swrr_core/bundle.py)")
    metrics = _inside(UNIT_RESULT, "the unit's result, written last")

    @property
    def fold(self) -> int:
        return parse_unit_name(self.path.name)[0]

    @property
    def seed(self) -> Optional[int]:
        """The seed its name carries (None: a run without --seeds; its seed is the run's)."""
        return parse_unit_name(self.path.name)[1]

    @property
    def tensorboard(self) -> Path:
        """Its TensorBoard folder, <run>/tb/<unit>/ (beside the units, so one logdir shows them all)."""
        return self.path.parent / TENSORBOARD / self.path.name

    @property
    def results_files(self) -> Tuple[Path, ...]:
        """The files of a finished unit's result: set aside together when one is damaged."""
        return self.metrics, self.attention

    def finished(self) -> bool:
        return self.metrics.exists()

    def read_result(self) -> Dict[str, Any]:
        """metrics.json; raises OSError / ValueError as json does (the callers word the problem)."""
        return json.loads(self.metrics.read_text())

    def epochs_logged(self) -> int:
        """Epochs in its log (0 before the first one finished)."""
        return len(self.log_jsonl.read_text().splitlines()) if self.log_jsonl.exists() else 0


@dataclass(frozen=True)
class RunFolder:
    """A run folder (or an --ablation all folder) and the names of what it holds."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # a str is welcome too

    config = _inside(CONFIG, "what ran (train config, model, cache identity, folds)")
    incomplete_marker = _inside(INCOMPLETE, "present until the run has finished")
    rank_failed_flag = _inside(RANK_FAILED, "the first failing rank's message under torchrun")
    results = _inside(RESULTS, "every unit's result, the summary and how they were made")
    summary = _inside(SUMMARY, "one row per metric over the units")
    ablation_table = _inside(ABLATION_TABLE, "an --ablation all folder's table")
    comparison = _inside(COMPARISON, "swrr-compare's default output folder for an --ablation all folder")

    def plot(self, name: str) -> Path:
        """One of CONFUSION_PLOT, LEARNING_CURVE_PLOT, ATTENTION_PLOT in this folder."""
        return self.path / name

    def unit(self, fold: int, seed: Optional[int] = None) -> UnitFolder:
        return UnitFolder(self.path / unit_name(fold, seed))

    def units(self) -> List[UnitFolder]:
        """The unit folders present, by name (fold01, fold01-seed1, fold02, ...)."""
        if not self.path.is_dir():
            return []
        return [UnitFolder(p) for p in sorted(self.path.iterdir()) if p.is_dir() and parse_unit_name(p.name)]

    def variant(self, name: str) -> "RunFolder":
        """A variant's run folder inside an --ablation all folder."""
        return RunFolder(self.path / name)

    def has_config(self) -> bool:
        return self.config.exists()

    def is_incomplete(self) -> bool:
        return self.incomplete_marker.exists()

    def read_config(self) -> Dict[str, Any]:
        """config.json; RunFolderError when it is missing or not JSON."""
        try:
            return json.loads(self.config.read_text())
        except FileNotFoundError:
            raise RunFolderError(f"{self.path} is not a run folder (no {CONFIG})") from None
        except ValueError as exc:
            raise RunFolderError(f"{self.config} is not valid JSON ({exc}); the run folder is damaged") from None

    def write_config(self, data: Dict[str, Any]) -> None:
        write_json(self.config, data)

    def create(self, continue_hint: str) -> None:
        """Make the folder (parents too; it must not exist) with its INCOMPLETE marker saying
        `continue_hint`. Raises OSError (FileExistsError when it exists)."""
        self.path.mkdir(parents=True)
        self.incomplete_marker.write_text(f"This run has not finished. {continue_hint}\n")

    def mark_complete(self) -> None:
        self.incomplete_marker.unlink(missing_ok=True)

    def lock(self, tool: str) -> OutputLock:
        """The OS lock `<folder>.lock` of the one process that trains this run."""
        return OutputLock(self.path, tool)


def numbered_run_folder(runs_dir, base: str) -> RunFolder:
    """runs_dir/base, or base-2, base-3, ... : the first that does not exist yet."""
    runs = Path(runs_dir)
    path, n = runs / base, 1
    while path.exists():
        n += 1
        path = runs / f"{base}-{n}"
    return RunFolder(path)
