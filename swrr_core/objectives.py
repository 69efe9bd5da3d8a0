"""Training objectives: how many outputs the head has, its loss, and how its outputs become scores.

One module for the trainer and the prediction stage (which never imports train/), so a saved
model's outputs are read exactly as the trainer read them in evaluation.

    "ce"    classification: (B, C) class logits, cross-entropy; the argmax is the class.
    "l1"    regression (the CMU-MOSEI default): (B, 1), L1 loss; the output is the score.
    "ce7"   regression as 7 classes, the sentiment points -3 .. 3: (B, 7) logits, cross-entropy on
            the label clipped to [-3, 3] and rounded (half to even, as ACC7 rounds); the score is
            the expected value sum_k softmax_k * (k - 3), a real number in [-3, 3].

    "dim-ccc"  dimensional (valence, arousal, dominance, any subset): (B, D), one output per
            dimension; loss = the mean over dimensions of 1 - CCC of the batch (the usual objective
            of dimensional SER); the outputs are the scores.
    "dim-mse", "dim-l1"  the same head with mean squared / absolute error instead.

The paper states cross-entropy only (section 2.3) and no MOSEI objective; "l1" is the usual
MOSEI regression loss (MulT, MMSA), "ce7" the paper's loss applied to MOSEI's seven points.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

REGRESSION_OBJECTIVES = ("l1", "ce7")
TARGET_LOSSES = ("ccc", "mse", "l1")  # --target-loss of a dimensional run: objective "dim-<loss>"
DIMENSIONAL_OBJECTIVES = tuple(f"dim-{name}" for name in TARGET_LOSSES)
SENTIMENT_POINTS = np.arange(-3.0, 4.0)  # the 7 classes of "ce7", in output order


def objective_for(task: str, regression_objective: str | None = None) -> str:
    """The objective of a task: "ce" for classification; for regression `regression_objective`
    (default "l1"); for dimensional "dim-" + the target loss given as `regression_objective`
    (default "ccc")."""
    if task == "classification":
        return "ce"
    if task == "dimensional":
        loss_name = regression_objective or "ccc"
        if loss_name.startswith("dim-"):  # a bundle's stored objective
            loss_name = loss_name[4:]
        if loss_name not in TARGET_LOSSES:
            raise ValueError(f"--target-loss must be one of {TARGET_LOSSES}, got {loss_name!r}")
        return f"dim-{loss_name}"
    objective = regression_objective or "l1"
    if objective not in REGRESSION_OBJECTIVES:
        raise ValueError(f"regression objective must be one of {REGRESSION_OBJECTIVES}, got {objective!r}")
    return objective


def num_outputs(objective: str, num_classes: int) -> int:
    """Width of the head's output for an objective (`num_classes` is read for "ce" and, as the
    number of dimensions, for the dimensional objectives)."""
    if objective in DIMENSIONAL_OBJECTIVES:
        return num_classes
    return {"ce": num_classes, "l1": 1, "ce7": len(SENTIMENT_POINTS)}[objective]


def ccc_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the D columns of 1 - CCC of (B, D) predictions against (B, D) labels (population
    moments over the batch, as swrr_core.metrics.ccc computes them)."""
    mean_p, mean_t = outputs.mean(dim=0), labels.mean(dim=0)
    covariance = ((outputs - mean_p) * (labels - mean_t)).mean(dim=0)
    denominator = outputs.var(dim=0, unbiased=False) + labels.var(dim=0, unbiased=False) + (mean_p - mean_t) ** 2
    return (1 - 2 * covariance / denominator.clamp_min(1e-8)).mean()


def sentiment_class(labels: torch.Tensor) -> torch.Tensor:
    """(B,) sentiment in [-3, 3] -> (B,) long class index 0..6 of "ce7" (clipped, half to even)."""
    return torch.round(labels.float().clamp(-3.0, 3.0)).long() + 3


def loss(objective: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean loss of (B, num_outputs) outputs against (B,) labels (class indices or sentiment)."""
    outputs = outputs.float()
    if objective == "ce":
        return F.cross_entropy(outputs, labels)
    if objective == "l1":
        return F.l1_loss(outputs.squeeze(-1), labels.float())
    if objective == "ce7":
        return F.cross_entropy(outputs, sentiment_class(labels))
    if objective in DIMENSIONAL_OBJECTIVES:
        labels = labels.float().reshape(outputs.shape)
        if objective == "dim-ccc":
            return ccc_loss(outputs, labels)
        return F.mse_loss(outputs, labels) if objective == "dim-mse" else F.l1_loss(outputs, labels)
    raise ValueError(f"unknown objective {objective!r}")


def scores(objective: str, outputs) -> np.ndarray:
    """(n, num_outputs) outputs -> what the metrics read: for "ce" the (n, C) logits as they are
    (the argmax is the class), for the regression objectives the (n,) float64 sentiment scores,
    for the dimensional ones the (n, D) scores as they are."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if objective == "ce" or objective in DIMENSIONAL_OBJECTIVES:
        return outputs
    if objective == "l1":
        return outputs[:, 0]
    if objective == "ce7":
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)) @ SENTIMENT_POINTS
    raise ValueError(f"unknown objective {objective!r}")
