"""Training objectives: how many outputs the head has, its loss, and how its outputs become scores.

One module for the trainer and the prediction stage (which never imports train/), so a saved
model's outputs are read exactly as the trainer read them in evaluation.

    "ce"    classification: (B, C) class logits, cross-entropy; the argmax is the class.
    "l1"    regression (the CMU-MOSEI default): (B, 1), L1 loss; the output is the score.
    "ce7"   regression as 7 classes, the sentiment points -3 .. 3: (B, 7) logits, cross-entropy on
            the label clipped to [-3, 3] and rounded (half to even, as ACC7 rounds); the score is
            the expected value sum_k softmax_k * (k - 3), a real number in [-3, 3].

The paper states cross-entropy only (section 2.3) and no MOSEI objective; "l1" is the usual
MOSEI regression loss (MulT, MMSA), "ce7" the paper's loss applied to MOSEI's seven points.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

REGRESSION_OBJECTIVES = ("l1", "ce7")
SENTIMENT_POINTS = np.arange(-3.0, 4.0)  # the 7 classes of "ce7", in output order


def objective_for(task: str, regression_objective: str | None = None) -> str:
    """The objective of a task: "ce" for classification; for regression `regression_objective`
    (default "l1")."""
    if task == "classification":
        return "ce"
    objective = regression_objective or "l1"
    if objective not in REGRESSION_OBJECTIVES:
        raise ValueError(f"regression objective must be one of {REGRESSION_OBJECTIVES}, got {objective!r}")
    return objective


def num_outputs(objective: str, num_classes: int) -> int:
    """Width of the head's output for an objective (`num_classes` is read for "ce" only)."""
    return {"ce": num_classes, "l1": 1, "ce7": len(SENTIMENT_POINTS)}[objective]


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
    raise ValueError(f"unknown objective {objective!r}")


def scores(objective: str, outputs) -> np.ndarray:
    """(n, num_outputs) outputs -> what the metrics read: for "ce" the (n, C) logits as they are
    (the argmax is the class), for the regression objectives the (n,) float64 sentiment scores."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if objective == "ce":
        return outputs
    if objective == "l1":
        return outputs[:, 0]
    if objective == "ce7":
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)) @ SENTIMENT_POINTS
    raise ValueError(f"unknown objective {objective!r}")
