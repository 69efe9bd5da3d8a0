"""swrr_core.objectives: output width, loss and outputs -> scores, against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from swrr import objectives as O


def test_objective_names_and_output_widths():
    assert O.objective_for("classification") == "ce" and O.objective_for("classification", "ce7") == "ce"
    assert O.objective_for("regression") == "l1" and O.objective_for("regression", "ce7") == "ce7"
    with pytest.raises(ValueError, match="l1"):
        O.objective_for("regression", "mse")
    assert [O.num_outputs(o, 4) for o in ("ce", "l1", "ce7")] == [4, 1, 7]


def test_ce7_classes_are_the_clipped_rounded_sentiment_half_to_even():
    labels = torch.tensor([-3.4, -2.5, -0.5, 0.0, 0.5, 0.6, 1.5, 2.5, 3.0, 9.0])
    # round half to even, as ACC7 (np.round): -2.5 -> -2, -0.5 -> 0, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    assert O.sentiment_class(labels).tolist() == [0, 1, 3, 3, 3, 4, 5, 5, 6, 6]
    assert np.array_equal(O.sentiment_class(labels).numpy() - 3, np.round(np.clip(labels.numpy(), -3, 3)))


def test_losses_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    want = -math.log(math.exp(2.0) / (math.exp(2.0) + 6))  # true class 0 (label -3)
    assert O.loss("ce7", logits, torch.tensor([-2.7])).item() == pytest.approx(want)
    assert O.loss("l1", torch.tensor([[0.5], [-1.0]]), torch.tensor([1.0, 1.0])).item() == pytest.approx(1.25)
    assert O.loss("ce", torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item() == pytest.approx(math.log(2))


def test_scores_are_what_the_metrics_read():
    logits = np.array([[0.0] * 7, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, math.log(3.0)]])
    # uniform -> expected value 0; class +3 three times as likely: (sum(-3..3) + 2 * 3) / 9 = 6 / 9
    assert O.scores("ce7", logits) == pytest.approx([0.0, 6 / 9])
    assert O.scores("ce7", np.array([[1000.0, 0, 0, 0, 0, 0, 0]])) == pytest.approx([-3.0])  # no overflow
    assert O.scores("l1", np.array([[0.25], [-2.0]])).tolist() == [0.25, -2.0]
    class_logits = np.array([[0.1, 2.0], [3.0, 0.0]])
    assert np.array_equal(O.scores("ce", class_logits), class_logits)
