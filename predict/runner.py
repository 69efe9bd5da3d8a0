"""`swrr-predict` end to end: check the request, load the bundle, collect the inputs, cut long
files into segments, transcribe what has no text, score everything, write the table.

    summary = run_predict(PredictConfig(model="runs/demo-split", inputs=["clip.wav"], texts=["hello"]))

The output (CSV, or JSON lines) has one row per utterance or segment: id, file, start, end, the
label and one prob_<class> column per class (or score), the transcript and its source, notes,
error, and the extra columns of a manifest. It is written to `<out>.partial` and renamed, so a
file at `--out` is always complete. A bad input is an error row, not a crash.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from swrr.extract.batching import AUTO, parse_batch_seconds
from swrr.extract.featurizer import default_workers
from swrr.predict.engine import ABSTAIN, BACKENDS, Predictor, value_columns
from swrr.predict.inputs import ASR, BAD_TIMES, Item, PredictError, collect_inputs
from swrr.predict.output import (FORMAT_SUFFIXES, PARTIAL_SUFFIX, check_not_an_input, check_output,
                                 check_outside_model, output_format, remove_quietly)
from swrr.bundle import load_bundle
from swrr.errors import option
from swrr.progress import progress_bar

FORMATS = tuple(FORMAT_SUFFIXES)
SEGMENT_MODES = ("vad", "window", "none")
AGGREGATES = ("mean",)
WHOLE_FILE_TEXT = "whole-file transcript"
INPUT_PREFIX = "input_"  # the output name of a manifest column kept in the table
FILE_MEAN = "file-mean"


@dataclass
class PredictConfig:
    """Everything `swrr-predict` can be told."""

    model: str  # a bundle folder, a run folder (+ fold), or a hub id
    inputs: List[str]
    texts: List[str] = field(default_factory=list)
    out: Optional[Path] = Path("predictions.csv")  # None: only return the table (the Python API)
    fold: Optional[int] = None
    format: Optional[str] = None  # None: from the --out suffix (.jsonl -> jsonl), else csv
    device: str = "auto"
    batch_seconds: Union[float, str] = AUTO
    segment: str = "vad"  # long files: vad | window | none (cut to the first span, as extraction does)
    hop: Optional[float] = None  # seconds between window starts; None = half the span
    aggregate: Optional[str] = None  # "mean": also one row per file
    plot: bool = False  # a PNG timeline per segmented file
    asr: Optional[str] = None  # ASR model (hub id or folder) for items without text
    asr_all: bool = False  # transcribe every item, ignoring given text
    audio_encoder: Optional[str] = None  # local copy of the recipe's audio encoder
    text_encoder: Optional[str] = None
    workers: int = field(default_factory=default_workers)  # audio decoding processes, as swrr-extract
    strict: bool = False  # refuse encoders whose weights differ from the recipe's, instead of warning
    progress: bool = True
    calibration: bool = True  # apply the bundle's temperature (False: the raw softmax)
    abstain_below: Optional[float] = None  # label a row 'abstain' when its top probability is under this
    backend: str = "torch"  # the head on "torch" or "onnx" (onnxruntime; the bundle needs head.onnx)
    # (a Predictor given to run_predict brings its own backend: the API chooses it when loading)

    def __post_init__(self):
        self.out = None if self.out is None else Path(self.out)
        problems = []
        if self.plot and self.out is None:
            problems.append("plot=True needs out=PATH: the timelines are written as <out>.<file>.png beside the table")
        if self.format not in (None, *FORMATS):
            problems.append(f"{option('format')} must be one of {', '.join(FORMATS)}, got {self.format!r}")
        elif self.out is not None:
            try:
                self.format = output_format(self.out, self.format)
            except PredictError as exc:
                problems.append(str(exc))
        else:
            self.format = self.format or "csv"
        if self.segment not in SEGMENT_MODES:
            problems.append(f"{option('segment')} must be one of {', '.join(SEGMENT_MODES)}, got {self.segment!r}")
        if self.aggregate not in (None, *AGGREGATES):
            problems.append(f"{option('aggregate')} must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        if self.hop is not None and not self.hop > 0:
            problems.append(f"{option('hop')} must be > 0 seconds, got {self.hop}")
        if self.abstain_below is not None and not 0.0 < self.abstain_below <= 1.0:
            problems.append(f"{option('abstain_below')} must be a probability in (0, 1], got {self.abstain_below}")
        if self.backend not in BACKENDS:
            problems.append(f"{option('backend')} must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.asr_all and not self.asr:
            problems.append(f"{option('asr_all')} needs {option('asr', 'MODEL')}")
        try:
            self.batch_seconds = parse_batch_seconds(self.batch_seconds)
        except ValueError as exc:
            problems.append(f"{option('batch_seconds')}: {exc}")
        if problems:
            raise PredictError("; ".join(problems))


@dataclass
class Summary:
    out: Path
    items: int
    predicted: int
    errors: Dict[str, int]
    audio_seconds: float
    seconds: float
    random_encoders: bool
    warnings: List[str]
    table: Any = field(default=None, repr=False)  # the pandas.DataFrame written to `out`
    file_means: int = 0  # --aggregate mean rows, beside the `items` scored rows
    abstained: int = 0  # rows labelled 'abstain' (--abstain-below)

    def lines(self) -> List[str]:
        rate = self.predicted / self.seconds if self.seconds > 0 else 0.0
        errors = sum(self.errors.values())
        means = f" and {self.file_means} file means" if self.file_means else ""
        out = [f"wrote {self.out}: {self.predicted} of {self.items} rows predicted{means} in {self.seconds:.1f} s "
               f"({rate:.1f} rows/s, {self.audio_seconds / max(self.seconds, 1e-9):.1f} s of audio per s), "
               f"{errors} errors" + (" (" + ", ".join(f"{k}: {v}" for k, v in self.errors.items()) + ")" if errors else "")
               + (f", {self.abstained} abstained" if self.abstained else "")]
        out += [f"  WARNING: {w}" for w in self.warnings]
        if self.random_encoders:
            out.append("  WARNING: the model's encoders were RANDOM (--encoders tiny): its predictions mean nothing")
        return out


def run_predict(config: PredictConfig, predictor: Optional[Predictor] = None,
                items: Optional[List[Item]] = None) -> Summary:
    """Carry out a prediction request; PredictError/BundleError/DeviceError for user mistakes.

    The table is written to `config.out` (unless it is None) and is the summary's `table` either
    way. `predictor`: one already loaded for `config.model` (the Python API keeps it between calls);
    `items`: what to score instead of `config.inputs` (the API's waveforms in memory)."""
    started = time.perf_counter()
    if config.out is not None:
        check_output(config.out, config.plot)
    if items is None:
        items = collect_inputs(config.inputs, config.texts)  # before loading anything: cheap checks first
        if config.out is not None:
            check_not_an_input(config.out, items, [Path(p) for p in config.inputs])
    if predictor is None:
        predictor = Predictor(load_bundle(config.model, fold=config.fold), config.device, config.audio_encoder,
                              config.text_encoder, config.batch_seconds, config.workers, config.backend)
    if config.out is not None:
        check_outside_model(config.out, predictor.bundle.path)
    warnings = _encoder_warnings(predictor, config.strict)
    if config.segment != "none":
        from swrr.predict.segment import segment_long_items

        items = segment_long_items(items, predictor, config.segment, config.hop)
    if config.asr:
        from swrr.predict.asr import transcribe_items

        transcribe_items(items, config.asr, predictor, config.asr_all)
    for item in items:
        if item.start is not None and item.file_id != item.item_id and item.text_source not in ("", ASR):
            item.notes.append(WHOLE_FILE_TEXT)
    if predictor.bundle.needs_text:
        _transcript_notes(items, predictor)
    bar = progress_bar(total=len(items), unit="utt", desc="predict", disable=not config.progress)
    try:
        outputs = predictor.predict(items, bar)
    finally:
        bar.close()
    table = _table(items, predictor.scores(outputs, config.abstain_below, config.calibration), predictor)
    if config.aggregate == "mean":
        table = _with_file_means(table, predictor, config.abstain_below)
    if config.out is not None:
        _write(table, config.out, config.format)
    if config.plot:
        from swrr.predict.plot import plot_timelines

        plot_timelines(table, config.out, predictor)
    scored = table[table["kind"] != FILE_MEAN]  # file means are counted apart: they are not scored rows
    errors = scored.loc[scored["error"] != "", "error"].map(error_reason).value_counts().to_dict()
    done = scored[scored["error"] == ""]
    abstained = int((done["label"] == ABSTAIN).sum()) if "label" in done else 0
    return Summary(config.out, len(scored), len(done), errors,
                   float((done["end"] - done["start"]).clip(upper=predictor.span_seconds).sum()),
                   time.perf_counter() - started, predictor.recipe.random_encoders, warnings, table,
                   int((table["kind"] == FILE_MEAN).sum()), abstained)


def error_reason(error: str) -> str:
    """The fixed reason an error cell starts with (failure_text): what the summary groups rows by."""
    return error.split(" (")[0]


def _encoder_warnings(predictor: Predictor, strict: bool = False) -> List[str]:
    """Encoders that may not be the ones the model was trained on. With the weights digest in the
    recipe (caches made since issue 18) the weights decide: equal digests are silent (a moved copy),
    different ones a warning naming both (PredictError when `strict`); without it, the revision."""
    recipe, out = predictor.recipe, []
    for role, encoder, wanted_digest, wanted_revision, trained_on in (
            ("audio", predictor.audio, recipe.audio_encoder_digest, recipe.audio_encoder_revision,
             recipe.audio_encoder),
            ("text", predictor.text, recipe.text_encoder_digest, recipe.text_encoder_revision, recipe.text_encoder)):
        if encoder.random_init:
            continue
        if wanted_digest:
            if encoder.weights_digest != wanted_digest:
                message = (f"the {role} encoder {encoder.name} has weights {encoder.weights_digest}, but the model "
                           f"was trained on features of {trained_on} with weights {wanted_digest}: another model, "
                           "its predictions differ")
                if strict:
                    raise PredictError(message + " (--strict)")
                out.append(message)
        elif wanted_revision and encoder.revision != wanted_revision:
            out.append(f"{encoder.name} is revision {encoder.revision}, the model was trained on features of "
                       f"revision {wanted_revision}: predictions may differ (this model's recipe has no weights "
                       "digest to tell)")
    return out


def _transcript_notes(items: List[Item], predictor: Predictor) -> None:
    """Notes on transcripts the model reads differently from what was given: empty, or cut."""
    limit = predictor.recipe.max_tokens
    for item in items:
        if item.error or item.text is None:
            continue
        if not item.text.strip():
            item.notes.append("empty transcript")
            continue
        tokens = len(predictor.text.tokenizer(item.text, truncation=False)["input_ids"])
        if tokens > limit:
            item.notes.append(f"transcript cut to its first {limit} of {tokens} tokens")


def _table(items: List[Item], scores: Dict[str, np.ndarray], predictor: Predictor):
    import pandas as pd

    durations = {}
    rows = []
    for i, item in enumerate(items):
        start = np.nan if item.error.startswith(BAD_TIMES) else item.start or 0.0  # never a made-up 0.0
        end = item.end
        if not item.error:
            if item.file_id not in durations:  # one probe per input, however many segments it has
                durations[item.file_id] = item.source.probe().duration
            if end is None:  # to the end of the file
                end = durations[item.file_id]
            elif end > durations[item.file_id] + 1e-3:  # as the audio is read: up to the file's end
                item.notes.append(f"end {end} s is past the file's end ({durations[item.file_id]:.2f} s)")
                end = durations[item.file_id]
        row = {"id": item.item_id, "file": str(item.path) if item.path is not None else "", "start": start, "end": end,
               "kind": "segment" if item.file_id != item.item_id else "utterance", "source_id": item.file_id}
        row.update({k: v[i] for k, v in scores.items()})
        row.update({"transcript": item.text if item.text is not None else "", "text_source": item.text_source,
                    "notes": "; ".join(item.notes), "error": item.error})
        # Decision: every kept manifest column is prefixed (input_label, input_speaker), so an input
        # column can never read like a prediction, whatever the bundle's task.
        row.update({f"{INPUT_PREFIX}{k}": v for k, v in item.extra.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _with_file_means(table, predictor: Predictor, abstain_below: Optional[float] = None):
    """One more row per input file: the mean of its segments' probabilities (or scores)."""
    import pandas as pd

    values = value_columns(table.columns)
    means = []
    for source, group in table.groupby("source_id", sort=False):
        ok = group[group["error"] == ""]
        row = {"id": source, "file": group["file"].iloc[0], "start": group["start"].min(), "end": group["end"].max(),
               "kind": FILE_MEAN, "source_id": source, "transcript": "", "text_source": "",
               "notes": f"mean of {len(ok)} of {len(group)} rows", "error": "" if len(ok) else "no row predicted"}
        row.update({c: ok[c].mean() if len(ok) else np.nan for c in values})
        if predictor.bundle.task == "classification":
            probs = np.array([row[c] for c in values])
            row["label"] = predictor.bundle.label_names[int(np.argmax(probs))] if len(ok) else ""
            if len(ok) and abstain_below is not None and probs.max() < abstain_below:
                row["label"] = ABSTAIN
        means.append(row)
    return pd.concat([table, pd.DataFrame(means)], ignore_index=True)


def _write(table, out: Path, fmt: str) -> None:
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    try:
        if fmt == "csv":
            table.to_csv(partial, index=False)
        else:
            table.to_json(partial, orient="records", lines=True, force_ascii=False)
        os.replace(partial, out)
    except OSError as exc:
        remove_quietly(partial)
        raise PredictError(f"{option('out', str(out))}: cannot write the predictions ({exc.strerror or exc})") from None
