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

Calibration (of classification probabilities, Guo et al. 2017, "On calibration of modern neural
networks"): ECE over 15 equal-width bins of the top probability (bin b holds confidences in
(b/15, (b+1)/15]), sum over bins of |accuracy - mean confidence| x the bin's share of rows; NLL
the mean of -ln p(true class); Brier the mean over rows of sum_k (p_k - [k = true])^2 (Brier
1950's multi-class form, in [0, 2]).

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


CALIBRATION_BINS = 15
CALIBRATION_KEYS = ("ece", "nll", "brier")


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def reliability_bins(probs, y_true, bins: int = CALIBRATION_BINS) -> Dict[str, list]:
    """Per confidence bin (top probability in (b/bins, (b+1)/bins]): rows, summed confidence and
    correct rows. Sums, so that the bins of several units add up."""
    probs, y_true = np.asarray(probs, dtype=np.float64), np.asarray(y_true, dtype=np.int64)
    confidence = probs.max(axis=-1) if probs.size else np.zeros(0)
    correct = probs.argmax(axis=-1) == y_true if probs.size else np.zeros(0, dtype=bool)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return {"count": np.bincount(which, minlength=bins).tolist(),
            "confidence": np.bincount(which, weights=confidence, minlength=bins).tolist(),
            "correct": np.bincount(which, weights=correct.astype(np.float64), minlength=bins).astype(int).tolist()}


def ece_from_bins(bins: Dict[str, list]) -> float:
    """ECE of (summed) reliability bins; nan when they hold no row."""
    count = np.asarray(bins["count"], dtype=np.float64)
    if not count.sum():
        return float("nan")
    gap = np.abs(np.asarray(bins["correct"]) - np.asarray(bins["confidence"]))  # = n_b |acc_b - conf_b|
    return float(gap.sum() / count.sum())


def expected_calibration_error(probs, y_true, bins: int = CALIBRATION_BINS) -> float:
    """ECE with `bins` equal-width bins of the top probability (fraction in [0, 1])."""
    return ece_from_bins(reliability_bins(probs, y_true, bins))


def negative_log_likelihood(probs, y_true) -> float:
    """Mean of -ln p(true class) (p clipped to >= 1e-12, so a confident mistake is large, not inf)."""
    probs, y_true = np.asarray(probs, dtype=np.float64), np.asarray(y_true, dtype=np.int64)
    if not len(y_true):
        return float("nan")
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y_true)), y_true], 1e-12))))


def brier_score(probs, y_true) -> float:
    """Mean over rows of the squared distance between the probabilities and the one-hot truth."""
    probs, y_true = np.asarray(probs, dtype=np.float64), np.asarray(y_true, dtype=np.int64)
    if not len(y_true):
        return float("nan")
    onehot = np.eye(probs.shape[1])[y_true]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_metrics(probs, y_true, bins: int = CALIBRATION_BINS) -> Dict[str, float]:
    """ECE, NLL and Brier score of class probabilities."""
    return {"ece": expected_calibration_error(probs, y_true, bins), "nll": negative_log_likelihood(probs, y_true),
            "brier": brier_score(probs, y_true)}


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
