"""The verbs of swrr's Python API and the `Run` they return (docs/API.md).

    import swrr
    cache = swrr.extract_features("demo", encoders="tiny", out="cache/demo.h5").cache
    run = swrr.train_model(cache, epochs=5)              # -> Run: path, summary, units, recognizer()
    swrr.compare(run, swrr.open_run("runs/other"), metric="UA")

Each verb takes the options of its command line (the flags with "_") and calls the function that
command calls, so the API and the CLI do the same thing. The stages are imported inside the verbs:
`swrr.train_model` never loads the audio and text libraries that extraction needs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from swrr.errors import refuse_unknown
from swrr.rundir import INCOMPLETE, RunFolder, RunFolderError

COMPARE_OPTIONS = ("out", "resamples", "bootstrap_seed")


@dataclass
class ExtractResult:
    """What an extraction wrote: the cache and the counts swrr-extract prints."""

    cache: Path  # the finished cache file
    rows: int  # utterances in it
    resumed_rows: int  # of those, kept from an interrupted run
    skipped: Dict[str, int]  # reason -> utterances left out
    per_class: Dict[str, int] = field(default_factory=dict)  # classification caches
    per_split: Dict[str, int] = field(default_factory=dict)
    summary: Any = field(default=None, repr=False)  # the full Summary; .lines() is what swrr-extract prints


def extract_features(dataset: str, root=None, out=None, **options) -> Optional[ExtractResult]:
    """Extract a dataset's features into a cache, as `swrr-extract` does (an interrupted one resumes).

    `options`: swrr-extract's flags with "_" (audio_encoder, text_encoder, encoders, layer, device,
    dtype, batch_seconds, workers, labels, overwrite) and progress. None on the ranks other than 0
    of a torchrun launch. Raises a SwrrError for anything the caller can fix."""
    from swrr.extract.options import extract_config
    from swrr.extract.runner import run_extraction

    summary = run_extraction(extract_config(dataset, root, out, **options))
    if summary is None:
        return None
    return ExtractResult(Path(summary.out), summary.rows, summary.resumed_rows, dict(summary.skipped),
                         dict(summary.per_class), dict(summary.per_split), summary)


def train_model(cache=None, **options) -> "Run":
    """Train (or with resume=RUN_FOLDER continue) a run, as `swrr-train` does; -> the finished Run.

    `options`: swrr-train's flags with "_" (see train/options.py and docs/API.md), e.g. epochs=5,
    seeds="3", folds=[1, 3], model_set={"dropout": 0.2}, config="runs/x/config.json", progress=False."""
    from swrr.train.options import start_training

    return Run(start_training(cache, **options))


def open_run(path) -> "Run":
    """A finished run folder (or an --ablation all folder) of swrr-train; RunFolderError otherwise."""
    return Run(path)


def compare(*runs, metric=None, **options):
    """Compare finished runs unit by unit as `swrr-compare` does (the first is the reference; one
    --ablation all folder compares its variants); -> the rows of compare.csv as a pandas.DataFrame.

    `runs`: Run objects or folders. `metric`: a name or a list of names (None: every metric);
    options: out (the folder for compare.csv/.md/.png), resamples, bootstrap_seed."""
    import pandas as pd

    from swrr.train.compare import BOOTSTRAP_SEED, RESAMPLES, CompareError, run_compare

    refuse_unknown(options, COMPARE_OPTIONS, "compare")
    if not runs:
        raise CompareError("give two or more runs (the first is the reference), or one --ablation all folder")
    metrics = [] if metric is None else [metric] if isinstance(metric, str) else list(metric)
    paths = [run.path if isinstance(run, Run) else Path(run) for run in runs]
    rows, _ = run_compare(paths, metrics, options.get("out"), options.get("resamples", RESAMPLES),
                          options.get("bootstrap_seed", BOOTSTRAP_SEED))
    return pd.DataFrame(rows)


class Run:
    """A finished swrr-train run folder: its summary, its units' results, its models."""

    def __init__(self, path):
        self.folder = RunFolder(path)  # the run folder's layout: swrr_core/rundir.py
        self.path = self.folder.path
        self.config: Dict[str, Any] = self.folder.read_config()
        if self.folder.is_incomplete():
            raise RunFolderError(f"{self.path} has not finished (it holds an {INCOMPLETE} marker); continue it "
                                 f"with train_model(resume={str(self.path)!r}) or swrr-train --resume {self.path}")
        self.variants: List[str] = list(self.config.get("grid", []))  # an --ablation all folder's runs

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def summary(self):
        """summary.csv as a pandas.DataFrame (one row per metric); of an --ablation all folder, ablations.csv."""
        import pandas as pd

        return pd.read_csv(self.folder.ablation_table if self.variants else self.folder.summary)

    @property
    def units(self):
        """One row per unit (fold x seed): fold, seed, the held-out group, sizes, the selected epoch and
        every test metric, from results.json. Of an --ablation all folder: every variant's, with `variant`."""
        import pandas as pd

        if self.variants:
            return pd.concat([self.variant(v).units.assign(variant=v) for v in self.variants], ignore_index=True)
        results = json.loads(self.folder.results.read_text())["folds"]
        return pd.DataFrame([{"fold": r["fold"], "seed": r.get("seed"), "name": r["name"],
                              **{f"{split}_rows": n for split, n in r["sizes"].items()},
                              "selected_epoch": r["selected_epoch"], **r["metrics"]} for r in results])

    def variant(self, name: str) -> "Run":
        """One variant's run of an --ablation all folder (e.g. "swrr", "no-sliwa")."""
        if name not in self.variants:
            raise RunFolderError(f"{self.path} has no variant {name!r}; it has: {', '.join(self.variants) or 'none'}")
        return open_run(self.folder.variant(name).path)

    def recognizer(self, fold: Optional[int] = None, **options):
        """An EmotionRecognizer of this run's model (`fold`: which fold's, 1-based, when it has several);
        `options` as EmotionRecognizer.from_pretrained (device, audio_encoder, ...)."""
        from swrr.predict.recognizer import EmotionRecognizer

        if self.variants:
            raise RunFolderError(f"{self.path} is an --ablation all folder: take one variant's model, e.g. "
                                 f"run.variant({self.variants[0]!r}).recognizer()")
        return EmotionRecognizer.from_pretrained(self.path, fold=fold, **options)
