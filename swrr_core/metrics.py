"""Evaluation metrics as the emotion-recognition literature reports them.

Classification (IEMOCAP): WA = overall accuracy, UA = mean per-class recall, confusion matrix.
Regression (CMU-MOSEI sentiment in [-3, 3]), as MMSA's `MetricsTop.__eval_mosei_regression`
(thuiar/MMSA, src/MMSA/utils/metricsTop.py), the common MOSEI evaluation code:

- ACC7: predictions and labels clipped to [-3, 3] and rounded (np.round, half to even) to
  seven classes.
- ACC2 / F1 "has-zero": negative (< 0) vs non-negative (>= 0), all samples.
- ACC2 / F1 "non-zero": samples with label 0 left out, negative vs positive (> 0). This is the
  split the SWRR paper's text describes ("negative (<0), positive (>0)"); the paper does not say
  which variant its 84.8 / 83.8 are, and the baselines of its Table 2 quote has-zero figures.
- F1 is the support-weighted F1 of the two classes, f1_score(truth, prediction); MAE; Pearson r.

CH-SIMS sentiment in [-1, 1], as MMSA's `MetricsTop.__eval_sims_regression` (`sims_metrics`):
both sides clipped to [-1, 1], then binned into intervals closed on the right: Acc2 on
{[-1, 0], (0, 1]}, Acc3 on {[-1, -0.1], (-0.1, 0.1], (0.1, 1]}, Acc5 on {[-1, -0.7], (-0.7, -0.1],
(-0.1, 0.1], (0.1, 0.7], (0.7, 1]}; F1 = the support-weighted F1 of the Acc2 classes; MAE and
Pearson r of the clipped values.

Dimensional emotion (valence, arousal, dominance; `dimensional_metrics`): per dimension the
concordance correlation coefficient CCC = 2 cov(t, p) / (var t + var p + (mean t - mean p)^2)
(population moments, Lin 1989; the primary figure of dimensional SER), Pearson r and MAE; the
unsuffixed "ccc", "pearson", "mae" are the means over the dimensions.

MulT's `eval_mosei_senti` (yaohungt/Multimodal-Transformer, src/eval_metrics.py) differs: with
exclude_zero=False its binary split is `> 0` on all samples (a label of 0 counts as negative, not
as has-zero's `>= 0`), and it calls f1_score(prediction, truth), weighting the two classes by
predicted rather than true support. With exclude_zero=True its accuracy equals our non-zero ACC2.

All functions take numpy arrays (or anything np.asarray accepts) and return plain Python
types, so results can go straight into JSON.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows are true classes, columns predictions."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = y_true * num_classes + y_pred
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def weighted_accuracy(y_true, y_pred) -> float:
    """WA: the fraction of samples classified correctly."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def unweighted_accuracy(y_true, y_pred, num_classes: int) -> float:
    """UA: mean recall over the classes present in y_true (absent classes are skipped)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def weighted_f1(y_true, y_pred) -> float:
    """Support-weighted mean of per-class F1 over the classes present in y_true or y_pred."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if not y_true.size:
        return float("nan")
    total = 0.0
    for c in np.union1d(y_true, y_pred):
        tp = np.sum((y_true == c) & (y_pred == c))
        predicted, actual = np.sum(y_pred == c), np.sum(y_true == c)
        f1 = 2 * tp / (predicted + actual) if predicted + actual else 0.0
        total += f1 * actual
    return float(total / y_true.size)


def classification_metrics(y_true, y_pred, num_classes: int) -> Dict:
    """WA, UA, weighted F1 (fractions in [0, 1]) and the confusion matrix as nested lists."""
    return {
        "wa": weighted_accuracy(y_true, y_pred),
        "ua": unweighted_accuracy(y_true, y_pred, num_classes),
        "f1": weighted_f1(y_true, y_pred),
        "confusion": confusion_matrix(y_true, y_pred, num_classes).tolist(),
    }


def acc7(y_true, y_pred) -> float:
    """Seven-class accuracy: both sides clipped to [-3, 3] and rounded."""
    t = np.round(np.clip(np.asarray(y_true, dtype=np.float64), -3.0, 3.0))
    p = np.round(np.clip(np.asarray(y_pred, dtype=np.float64), -3.0, 3.0))
    return weighted_accuracy(t, p)


def pearson_r(y_true, y_pred) -> float:
    """Pearson correlation of two equally long series, any shape ((N,), (N, 1), ...); nan when
    either side is constant. Flattened first: np.corrcoef reads the rows of a 2-D input as variables."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.size < 2 or t.std() == 0 or p.std() == 0:
        return float("nan")
    return float(np.corrcoef(t, p)[0, 1])


def regression_metrics(y_true, y_pred) -> Dict:
    """MOSEI metrics (fractions in [0, 1] for the accuracies and F1)."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    nonzero = t != 0
    return {
        "acc7": acc7(t, p),
        "acc2_has0": weighted_accuracy(t >= 0, p >= 0),
        "f1_has0": weighted_f1(t >= 0, p >= 0),
        "acc2_non0": weighted_accuracy(t[nonzero] > 0, p[nonzero] > 0),
        "f1_non0": weighted_f1(t[nonzero] > 0, p[nonzero] > 0),
        "mae": float(np.mean(np.abs(t - p))) if t.size else float("nan"),
        "corr": pearson_r(t, p),
    }


SIMS_BINS = {"acc2": (0.0,), "acc3": (-0.1, 0.1), "acc5": (-0.7, -0.1, 0.1, 0.7)}  # inner edges, (lo, hi] bins


def sims_metrics(y_true, y_pred) -> Dict:
    """CH-SIMS metrics (MMSA's __eval_sims_regression; fractions in [0, 1] for Acc and F1)."""
    t = np.clip(np.asarray(y_true, dtype=np.float64).reshape(-1), -1.0, 1.0)
    p = np.clip(np.asarray(y_pred, dtype=np.float64).reshape(-1), -1.0, 1.0)
    # searchsorted "left" puts x into bin i with edge[i-1] < x <= edge[i]: intervals closed on the right
    binned = {name: (np.searchsorted(edges, t, side="left"), np.searchsorted(edges, p, side="left"))
              for name, edges in SIMS_BINS.items()}
    out = {name: weighted_accuracy(*pair) for name, pair in binned.items()}
    out["f1"] = weighted_f1(*binned["acc2"])
    out["mae"] = float(np.mean(np.abs(t - p))) if t.size else float("nan")
    out["corr"] = pearson_r(t, p)
    return out


def ccc(y_true, y_pred) -> float:
    """Lin's concordance correlation coefficient of two series (population moments); nan for < 2 values."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.size < 2:
        return float("nan")
    denominator = t.var() + p.var() + (t.mean() - p.mean()) ** 2
    if denominator == 0:
        return float("nan")
    return float(2 * np.mean((t - t.mean()) * (p - p.mean())) / denominator)


def dimensional_metrics(y_true, y_pred, dimensions: Sequence[str]) -> Dict:
    """(N, D) true and predicted scores -> ccc_<d>, pearson_<d>, mae_<d> per dimension and their means."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1, len(dimensions))
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1, len(dimensions))
    out = {}
    for name, measure in (("ccc", ccc), ("pearson", pearson_r),
                          ("mae", lambda a, b: float(np.mean(np.abs(a - b))) if a.size else float("nan"))):
        per = [measure(t[:, k], p[:, k]) for k in range(len(dimensions))]
        out[name] = float(np.mean(per)) if per else float("nan")
        out.update({f"{name}_{d}": v for d, v in zip(dimensions, per)})
    return out


SIMS_SCALE = [-1.0, 1.0]


def compute_metrics(task: str, y_true, outputs, num_classes: int = 0, dimensions: Sequence[str] = (),
                    scale: Sequence[float] = ()) -> Dict:
    """Metrics of a task from raw model outputs.

    outputs: (N, num_classes) logits for "classification" (argmax is the prediction),
    (N,) or (N, 1) scores for "regression" (CH-SIMS metrics when `scale` is [-1, 1], else MOSEI's),
    (N, D) scores for "dimensional" (`dimensions` names the D columns).
    """
    outputs = np.asarray(outputs)
    if task == "classification":
        return classification_metrics(y_true, outputs.argmax(axis=-1), num_classes)
    if task == "dimensional":
        return dimensional_metrics(y_true, outputs, dimensions)
    if list(scale) == SIMS_SCALE:
        return sims_metrics(y_true, outputs.reshape(-1))
    return regression_metrics(y_true, outputs.reshape(-1))


# The headline metric of each task, and whether larger is better (model selection on valid).
SELECTION_METRIC = {"classification": ("ua", True), "regression": ("mae", False), "dimensional": ("ccc", True)}


def is_better(task: str, candidate: Dict, best: Dict) -> bool:
    """True when `candidate` beats `best` on the task's selection metric (ties keep `best`)."""
    name, larger = SELECTION_METRIC[task]
    if best is None:
        return True
    a, b = candidate[name], best[name]
    if np.isnan(a):
        return False
    if np.isnan(b):
        return True
    return a > b if larger else a < b


def metric_options(task: str, label_names: Sequence[str], scale: Sequence[float]) -> Dict:
    """The keyword arguments of compute_metrics and headline beyond the task: a dimensional task's
    dimensions (its label_names), a regression label's scale."""
    return {"dimensions": list(label_names) if task == "dimensional" else [], "scale": list(scale or ())}


def headline(task: str, dimensions: Sequence[str] = (), scale: Sequence[float] = ()) -> Sequence[str]:
    """The scalar metrics reported per fold and in summaries, in display order (a dimensional
    task's per-dimension keys follow `dimensions`; a [-1, 1] regression scale means CH-SIMS')."""
    if task == "classification":
        return ("wa", "ua", "f1")
    if task == "dimensional":
        return ("ccc", *(f"ccc_{d}" for d in dimensions), "pearson", *(f"pearson_{d}" for d in dimensions),
                "mae", *(f"mae_{d}" for d in dimensions))
    if list(scale) == SIMS_SCALE:
        return ("acc2", "acc3", "acc5", "f1", "mae", "corr")
    return ("acc7", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0", "mae", "corr")
