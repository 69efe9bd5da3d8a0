"""Which label of a cache a model learns and is scored on: `--target`.

A cache holds its primary label (IEMOCAP's category, MOSEI's sentiment score) and, from this
version on, further label kinds (swrr_core/cache.py, `/labels/<kind>`): IEMOCAP's and
MSP-Podcast's valence / arousal / dominance, MELD's sentiment class, SIMS' unimodal scores.

    target = resolve_target(cache, "valence,arousal")   # -> Target (task "dimensional", 2 outputs)
    view = with_target(cache, target)                    # the cache as the trainer reads it

- No target (None), or the primary label's name ("emotion" for a classification cache,
  "sentiment" for a regression cache): the cache as it is; today's behaviour.
- One classes kind (MELD `--target sentiment`): a classification task over that kind's names.
- One or more score kinds (valence, arousal, dominance, any subset, any order): the task
  "dimensional": one output per dimension, label_names = the dimensions in output order, labels
  (N, D) float32. Scored by CCC per dimension (swrr_core/metrics.py).
Rows without a value for the target (NaN score, class -1: e.g. an unrated dimension) are left out
of every fold (`rated`), counted in the run's banner.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from swrr.cache import MISSING_CLASS, CacheError, FeatureCache

PRIMARY_NAMES = {"classification": "emotion", "regression": "sentiment"}  # what --target calls the primary label
DIMENSIONAL = "dimensional"


class TargetError(CacheError):
    """A --target the cache cannot serve; the message lists what it holds."""


@dataclass
class Target:
    kinds: Tuple[str, ...]  # () = the primary label
    task: str  # classification | regression | dimensional
    label_names: List[str]  # class names, or the dimensions in output order
    labels: np.ndarray  # (N,) class indices / scores, or (N, D) float32
    rated: np.ndarray  # (N,) bool: the row has a value for the target
    scales: Dict[str, List[float]]  # dimension (or "sentiment") -> [lo, hi]; empty for classes

    @property
    def name(self) -> str:
        return ",".join(self.kinds)


def parse_target(text: Optional[str]) -> Tuple[str, ...]:
    """'valence, arousal' -> ('valence', 'arousal'); None or '' -> () (the primary label)."""
    if not text:
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise TargetError(f"--target names {', '.join(repeated)} more than once")
    return kinds


def available(cache: FeatureCache) -> List[str]:
    """The --target values a cache serves: its primary label's name, then its further kinds."""
    return [PRIMARY_NAMES[cache.meta.task], *cache.meta.label_kinds]


def resolve_target(cache: FeatureCache, text: Optional[str]) -> Target:
    """The Target named by `text` (comma-separated kinds) in `cache`; TargetError when it lacks one."""
    meta = cache.meta
    kinds = parse_target(text)
    if kinds in ((), (PRIMARY_NAMES.get(meta.task),)) and PRIMARY_NAMES.get(meta.task) not in meta.label_kinds:
        scales = {"sentiment": list(meta.label_scale)} if meta.task == "regression" and meta.label_scale else {}
        rated = np.ones(len(cache), dtype=bool)
        return Target((), meta.task, list(meta.label_names), cache.label, rated, scales)
    unknown = [k for k in kinds if k not in meta.label_kinds]
    if unknown:
        raise TargetError(f"{cache.path} has no label {', '.join(map(repr, unknown))}; it holds: "
                          f"{', '.join(available(cache))}")
    specs = [meta.label_kinds[k] for k in kinds]
    if any(spec["type"] == "classes" for spec in specs):
        if len(kinds) > 1:
            raise TargetError(f"--target {','.join(kinds)}: a class label ({kinds[0]}) is learnt alone; "
                              "only scores (valence, arousal, dominance, ...) combine")
        labels = cache.extra_labels[kinds[0]].astype(np.int64)
        return Target(kinds, "classification", list(specs[0]["names"]), labels, labels != MISSING_CLASS, {})
    labels = np.stack([cache.extra_labels[k] for k in kinds], axis=1).astype(np.float32)
    return Target(kinds, DIMENSIONAL, list(kinds), labels, np.isfinite(labels).all(axis=1),
                  {k: list(spec["scale"]) for k, spec in zip(kinds, specs)})


def with_target(cache: FeatureCache, target: Target) -> FeatureCache:
    """The cache as a run on `target` reads it: the same rows and features, `label` the target's
    values and the meta's task / label_names the target's (the primary label: `cache` itself)."""
    if not target.kinds:
        return cache
    view = copy.copy(cache)  # shares the file handle and columns; only label and meta differ
    view.label = target.labels
    view.meta = replace(cache.meta, task=target.task, label_names=list(target.label_names),
                        label_scale=[] if target.task != "regression" else list(cache.meta.label_scale))
    return view


def scale_text(task: str, label_names: Sequence[str], label_kinds: Dict, label_scale: Sequence[float]) -> str:
    """The scale of a run's labels in words, for summary.csv and results.json: "valence 1-5, arousal
    1-5", "sentiment -3-3"; "" for classes."""
    if task == DIMENSIONAL:
        return ", ".join(f"{d} {_range(label_kinds[d]['scale'])}" for d in label_names if d in label_kinds)
    if task == "regression" and label_scale:
        return f"sentiment {_range(label_scale)}"
    return ""


def _range(scale: Sequence[float]) -> str:
    return f"{scale[0]:g} to {scale[1]:g}"
