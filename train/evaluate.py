"""Cross-corpus evaluation: a trained model scored on another corpus' cache (`swrr-evaluate`).

    folder = evaluate("runs/iemocap-all/fold01/model", "cache/meld.h5",
                      label_map="neutral=neu,joy=hap,anger=ang,sadness=sad")

`model` is a bundle folder or a run folder (every unit's bundle is scored, as the run's folds
were). The cache must have been extracted with the model's recipe: the extraction settings that
make the features (encoders and their revisions, layer, sizes, dtype, precision, sample rate);
a difference is refused in one line naming each setting and both values. What describes the
data (dataset, --labels, the transcript source) may differ: that is the point.

Labels: a classification model is scored in its own classes. `label_map` ("cache=model,...")
names the model class of each cache class; without one, classes of the same name correspond.
Rows whose class has no counterpart are counted skips ("label surprise: no counterpart").
A regression model needs a cache on the same sentiment scale; a dimensional model the same
dimensions (--target kinds) in the cache; Decision: when a dimension's scale differs (IEMOCAP
1-5, MSP-Podcast 1-7) the predictions are mapped linearly onto the cache's scale before scoring,
and results.json says so.

The output folder (default runs/eval-<model>-on-<cache>) holds, as a training run's folds do,
per unit metrics.json and predictions.csv, and summary.csv, results.json and (classification)
confusion.png over the units.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from swrr import objectives
from swrr.bundle import Bundle, load_bundle, unit_bundles
from swrr.cache import CacheMeta, FeatureCache, differing_config_keys
from swrr.device import resolve_device
from swrr.errors import SwrrError
from swrr.metrics import compute_metrics, metric_options
from swrr.rundir import CONFUSION_PLOT, UNIT_BUNDLE, RunFolder, UnitFolder, write_json
from swrr.targets import resolve_target, scale_text, with_target
from swrr.train import report
from swrr.train.data import ResidentSource
from swrr.train.loop import predict
from swrr.train.unit_files import write_predictions

# Extraction config keys that describe the data, not how its features are made.
DATA_KEYS = ("dataset", "labels", "transcripts", "asr_model")
NO_COUNTERPART = "no counterpart"


class EvaluateError(SwrrError):
    """A cross-corpus evaluation that cannot be done as asked; the message names what differs."""


@dataclass
class Scoring:
    """What the cache's rows are scored against: the rows used, their truth in the model's terms."""

    rows: np.ndarray
    truth: np.ndarray
    skipped: Dict[str, int]
    notes: List[str]
    rescale: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = None  # model lo, hi; cache lo, hi


def parse_label_map(text: Optional[str]) -> Dict[str, str]:
    """'joy=hap, anger=ang' -> {"joy": "hap", "anger": "ang"} (cache class -> model class)."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        source, sep, model = (part.strip() for part in item.partition("="))
        if not sep or not source or not model:
            raise EvaluateError(f"--label-map: expected CACHE_CLASS=MODEL_CLASS, got {item.strip()!r}")
        if source in out:
            raise EvaluateError(f"--label-map names {source!r} twice")
        out[source] = model
    return out


def recipe_differences(trained: CacheMeta, cache: CacheMeta) -> List[str]:
    """'setting (model value vs cache value)' for each feature setting that differs."""
    keys = [k for k in differing_config_keys(trained.config, cache.config) if k not in DATA_KEYS]
    out = [f"{k} ({trained.config.get(k)!r} vs {cache.config.get(k)!r})" for k in keys]
    for name in ("audio_dim", "text_dim", "max_frames", "max_tokens"):  # also caches whose config lacks them
        if getattr(trained, name) != getattr(cache, name) and name not in keys:
            out.append(f"{name} ({getattr(trained, name)!r} vs {getattr(cache, name)!r})")
    return out


def model_bundles(model) -> List[Path]:
    """The bundle folders `model` names: itself, or every unit of a run folder."""
    path = Path(model).expanduser()
    if not path.exists():
        raise EvaluateError(f"--model {path}: no such bundle or run folder")
    return [unit.bundle for unit in unit_bundles(path)] or [path]


def scoring(bundle: Bundle, cache: FeatureCache, label_map: Dict[str, str]) -> Scoring:
    """The rows of `cache` the model can be scored on and their truth in the model's label terms."""
    task, meta = bundle.task, cache.meta
    if task == "classification":
        # the label the model learnt: the cache's own classes, or the class kind it was trained on (--target)
        target = resolve_target(cache, bundle.provenance.get("train", {}).get("target"))
        if target.task != "classification":
            raise EvaluateError(f"{cache.path} holds {target.task} labels; the model {bundle.path} classifies")
        names = target.label_names
        unknown = sorted(set(label_map) - set(names))
        bad_targets = sorted(set(label_map.values()) - set(bundle.label_names))
        if unknown or bad_targets:
            raise EvaluateError("--label-map: " + "; ".join(filter(None, [
                f"{', '.join(unknown)} not among the cache's classes ({', '.join(names)})" if unknown else "",
                f"{', '.join(bad_targets)} not among the model's classes ({', '.join(bundle.label_names)})"
                if bad_targets else ""])))
        model_index = {name: i for i, name in enumerate(bundle.label_names)}
        counterpart = [model_index.get(label_map.get(name, name), -1) for name in names]
        if max(counterpart) < 0:
            raise EvaluateError(f"no class of {cache.path} ({', '.join(names)}) matches one of the "
                                f"model's ({', '.join(bundle.label_names)}); give --label-map, e.g. "
                                f"'{names[0]}={bundle.label_names[0]},...'")
        labels = np.where(target.rated, target.labels, 0)
        truth = np.where(target.rated, np.asarray(counterpart)[labels], -1)
        skipped = {f"label {name}: {NO_COUNTERPART}": int(np.sum(target.rated & (labels == i)))
                   for i, name in enumerate(names) if counterpart[i] < 0 and np.any(target.rated & (labels == i))}
        if not target.rated.all():
            skipped[f"no {target.name} value"] = int((~target.rated).sum())
        return Scoring(np.flatnonzero(truth >= 0), truth, skipped, [])
    if task == "regression":
        if meta.task != "regression":
            raise EvaluateError(f"{cache.path} holds {meta.task} labels; the model {bundle.path} predicts a "
                                "sentiment score")
        if bundle.recipe.label_scale and meta.label_scale and list(bundle.recipe.label_scale) != list(meta.label_scale):
            raise EvaluateError(f"the model predicts sentiment on {bundle.recipe.label_scale}, {cache.path} holds "
                                f"sentiment on {meta.label_scale}: not comparable")
        return Scoring(np.arange(len(cache)), cache.label, {}, [])
    target = resolve_target(cache, ",".join(bundle.label_names))
    model_scale = np.array([bundle.recipe.label_kinds.get(d, {}).get("scale", [np.nan, np.nan])
                            for d in bundle.label_names], dtype=np.float64)
    cache_scale = np.array([meta.label_kinds[d]["scale"] for d in bundle.label_names], dtype=np.float64)
    skipped = {f"no {target.name} value": int((~target.rated).sum())} if not target.rated.all() else {}
    rows = np.flatnonzero(target.rated)
    if np.isfinite(model_scale).all() and not np.array_equal(model_scale, cache_scale):
        note = (f"predictions mapped linearly from the model's scales "
                f"({scale_text('dimensional', bundle.label_names, bundle.recipe.label_kinds, [])}) onto the cache's "
                f"({scale_text('dimensional', bundle.label_names, meta.label_kinds, [])})")
        rescale = (model_scale[:, 0], model_scale[:, 1], cache_scale[:, 0], cache_scale[:, 1])
        return Scoring(rows, target.labels, skipped, [note], rescale)
    return Scoring(rows, target.labels, skipped, [])


def evaluate(model, cache, label_map: Optional[str] = None, out=None, device: str = "auto",
             batch_size: int = 64) -> Path:
    """Score the bundle(s) `model` names on the cache at `cache`; -> the output folder (see the module)."""
    bundles = [load_bundle(path) for path in model_bundles(model)]
    features = FeatureCache(cache)
    for bundle in bundles:
        differences = recipe_differences(bundle.recipe, features.meta)
        if differences:
            raise EvaluateError(f"{features.path} was extracted with another recipe than {bundle.path} was trained "
                                f"on; differs in: {', '.join(differences)} (model vs cache): re-extract it with "
                                "the model's settings")
    mapping = parse_label_map(label_map)
    first = bundles[0]
    if any(b.task != first.task or b.label_names != first.label_names for b in bundles):
        raise EvaluateError(f"{model}: its bundles predict different things; pass one bundle folder")
    plan = scoring(first, features, mapping)
    if not len(plan.rows):
        raise EvaluateError(f"{features.path}: no row can be scored ({plan.skipped})")
    folder = _new_folder(out, Path(model), features.path)
    view = with_target(features, resolve_target(features, ",".join(first.label_names))) \
        if first.task == "dimensional" else features
    torch_device = resolve_device(device)
    source = ResidentSource(view, torch_device)
    options = metric_options(first.task, first.label_names, features.meta.label_scale)
    results = []
    try:
        for number, bundle in enumerate(bundles, start=1):
            # Decision: an evaluation's units are named unit01, unit02, ... (not fold01: they test no fold)
            results.append(_score(bundle, source, plan, UnitFolder(folder / f"unit{number:02d}"), torch_device,
                                  batch_size, number, options))
    finally:
        source.close()
    _write_reports(folder, results, first, features, plan, mapping, options, model)
    return folder


def _score(bundle: Bundle, source, plan: Scoring, unit: UnitFolder, device: torch.device, batch_size: int,
           number: int, options: Dict) -> Dict:
    model = bundle.model.to(device)
    outputs, _ = predict(model, source, plan.rows, batch_size, device, amp=device.type == "cuda")
    if not np.isfinite(outputs).all():
        raise EvaluateError(f"{bundle.path}: the model's outputs are not finite on {source.utt_id[plan.rows[0]]} "
                            "and others: the cache's features hold NaN/inf")
    scores = objectives.scores(bundle.objective, outputs)
    if plan.rescale is not None:
        model_lo, model_hi, cache_lo, cache_hi = plan.rescale
        scores = cache_lo + (scores - model_lo) * (cache_hi - cache_lo) / (model_hi - model_lo)
    truth = plan.truth[plan.rows]
    metrics = compute_metrics(bundle.task, truth, scores, len(bundle.label_names), **options)
    unit.path.mkdir(parents=True)
    predictions = scores if bundle.task == "dimensional" else outputs
    write_predictions(unit.predictions, source.utt_id[plan.rows], truth, predictions, bundle.task,
                      bundle.label_names, bundle.objective)
    result = {"fold": number, "seed": bundle.provenance.get("train", {}).get("seed", 0), "name": str(bundle.path),
              "metrics": metrics, "rows": int(len(plan.rows))}
    write_json(unit.metrics, result)
    return result


def _new_folder(out, model: Path, cache_path: Path) -> Path:
    if out is not None:
        folder = Path(out)
        if folder.exists():
            raise EvaluateError(f"--out {folder} already exists; choose another folder")
    else:
        # runs/X/fold01/model -> X-fold01; a run folder runs/X -> X
        name = f"{model.parent.parent.name}-{model.parent.name}" if model.name == UNIT_BUNDLE else model.name
        base = Path("runs") / f"eval-{name}-on-{cache_path.stem}"
        folder, n = base, 1
        while folder.exists():
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


def _write_reports(folder: Path, results: List[Dict], bundle: Bundle, features: FeatureCache, plan: Scoring,
                   mapping: Dict[str, str], options: Dict, model) -> None:
    import pandas as pd

    meta = features.meta
    random = meta.random_encoders or bundle.recipe.random_encoders
    scale = scale_text(bundle.task, bundle.label_names, meta.label_kinds, meta.label_scale)
    rows = report.summarize(results, bundle.task, {}, random, options, scale)
    reports = RunFolder(folder)
    if bundle.task == "classification":
        report.plot_confusion(reports.plot(CONFUSION_PLOT), report.pooled_confusion(results), bundle.label_names,
                              " (random encoders)" if random else "")
    pd.DataFrame(rows).to_csv(reports.summary, index=False)
    reports.results.write_text(json.dumps({
        "model": str(model), "bundles": [r["name"] for r in results], "cache": str(features.path),
        "trained_on": bundle.recipe.dataset, "evaluated_on": meta.dataset, "task": bundle.task,
        "label_map": mapping, "scored_rows": int(len(plan.rows)), "skipped": plan.skipped, "notes": plan.notes,
        "units": results, "summary": rows, "random_encoders": random}, indent=2))


def summary_lines(folder: Path) -> List[str]:
    """What swrr-evaluate prints: the headline metrics and the skips."""
    results = json.loads(RunFolder(folder).results.read_text())
    lines = [f"{results['model']} ({results['trained_on']}) on {results['cache']} ({results['evaluated_on']}): "
             f"{results['scored_rows']} rows scored"]
    lines += [f"  {row['metric']:<14} {row['mean']:.2f}" + (f" ± {row['std']:.2f}" if np.isfinite(row["std"]) else "")
              for row in results["summary"]]
    if results["skipped"]:
        lines.append("  skipped: " + ", ".join(f"{k} {v}" for k, v in results["skipped"].items()))
    lines += [f"  note: {note}" for note in results["notes"]]
    lines.append(f"reports in {folder}")
    return lines
