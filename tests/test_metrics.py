"""swrr_core.metrics against hand-computed values and scikit-learn."""
import numpy as np
import pytest
from sklearn import metrics as skm

from swrr import metrics as M


def test_classification_by_hand():
    y_true = [0, 0, 0, 0, 1, 1, 2, 3]
    y_pred = [0, 0, 1, 3, 1, 1, 2, 0]
    m = M.classification_metrics(y_true, y_pred, num_classes=4)
    assert m["wa"] == pytest.approx(5 / 8)
    # recalls: class 0 2/4, class 1 2/2, class 2 1/1, class 3 0/1
    assert m["ua"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert m["confusion"] == [[2, 1, 0, 1], [0, 2, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]


def test_ua_skips_classes_absent_from_the_truth():
    # class 2 never occurs in y_true: it has no recall and must not count as 0
    assert M.unweighted_accuracy([0, 0, 1], [0, 2, 1], num_classes=3) == pytest.approx((0.5 + 1) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))
    m = M.classification_metrics(y_true, y_pred, 4)
    assert m["wa"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["ua"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    assert np.array_equal(m["confusion"], skm.confusion_matrix(y_true, y_pred, labels=range(4)))


def test_weighted_f1_with_a_never_true_prediction_matches_sklearn():
    y_true, y_pred = [0, 0, 1, 1], [0, 2, 1, 1]
    assert M.weighted_f1(y_true, y_pred) == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))


def test_regression_by_hand():
    y_true = np.array([-3.0, -1.2, 0.0, 0.0, 0.6, 2.4])
    y_pred = np.array([-4.0, -0.6, 0.3, -0.2, 1.4, 2.6])
    m = M.regression_metrics(y_true, y_pred)
    # clipped+rounded truth: -3 -1 0 0 1 2 ; predictions: -3 -1 0 -0 1 3 -> 5 of 6
    assert m["acc7"] == pytest.approx(5 / 6)
    # has-zero: truth >=0: F F T T T T ; pred >=0: F F T F T T -> 5 of 6
    assert m["acc2_has0"] == pytest.approx(5 / 6)
    # non-zero: drop the two true zeros -> truth >0: F F T T ; pred >0: F F T T -> 4 of 4
    assert m["acc2_non0"] == pytest.approx(1.0)
    assert m["f1_non0"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(np.mean([1.0, 0.6, 0.3, 0.2, 0.8, 0.2]))
    assert m["corr"] == pytest.approx(np.corrcoef(y_true, y_pred)[0, 1])


def test_pearson_r_reads_column_vectors_as_one_series():
    # np.corrcoef on (N, 1) inputs correlates N variables of one observation each: all NaN
    y_true = np.array([1.0, 2.0, 3.0, 5.0])
    y_pred = np.array([1.1, 1.9, 3.4, 4.2])
    want = np.corrcoef(y_true, y_pred)[0, 1]
    assert 0.9 < want < 1
    assert M.pearson_r(y_true[:, None], y_pred[:, None]) == pytest.approx(want)
    assert M.pearson_r(y_true[:, None], y_pred) == pytest.approx(want)
    assert np.isnan(M.pearson_r(y_true[:, None], np.ones((4, 1))))  # constant side


def test_acc7_rounds_half_to_even_like_the_reference_code():
    # np.round(0.5) == 0 and np.round(1.5) == 2: the MMSA (and MulT) code uses np.round
    assert M.acc7([0.0, 2.0], [0.5, 1.5]) == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_matches_sklearn_and_scipy_style_formulas(seed):
    rng = np.random.default_rng(seed)
    y_true = np.round(rng.uniform(-3, 3, 300) * 3) / 3  # some exact zeros
    y_true[:20] = 0.0
    y_pred = y_true + rng.normal(0, 0.8, 300)
    m = M.regression_metrics(y_true, y_pred)
    nz = y_true != 0
    assert m["acc2_has0"] == pytest.approx(skm.accuracy_score(y_true >= 0, y_pred >= 0))
    assert m["f1_has0"] == pytest.approx(skm.f1_score(y_true >= 0, y_pred >= 0, average="weighted"))
    assert m["acc2_non0"] == pytest.approx(skm.accuracy_score(y_true[nz] > 0, y_pred[nz] > 0))
    assert m["f1_non0"] == pytest.approx(skm.f1_score(y_true[nz] > 0, y_pred[nz] > 0, average="weighted"))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert m["acc7"] == pytest.approx(skm.accuracy_score(np.round(np.clip(y_true, -3, 3)),
                                                         np.round(np.clip(y_pred, -3, 3))))


def test_compute_metrics_takes_raw_outputs():
    logits = np.array([[2.0, 0.1], [0.0, 3.0], [1.0, 0.0]])
    m = M.compute_metrics("classification", [0, 1, 1], logits, num_classes=2)
    assert m["wa"] == pytest.approx(2 / 3)
    r = M.compute_metrics("regression", [1.0, -1.0], np.array([[0.9], [-1.2]]))
    assert r["mae"] == pytest.approx(0.15)


def test_selection_prefers_higher_ua_and_lower_mae():
    assert M.is_better("classification", {"ua": 0.6}, {"ua": 0.5})
    assert not M.is_better("classification", {"ua": 0.5}, {"ua": 0.5})  # ties keep the earlier epoch
    assert M.is_better("regression", {"mae": 0.4}, {"mae": 0.5})
    assert M.is_better("regression", {"mae": 0.4}, None)
    assert not M.is_better("regression", {"mae": float("nan")}, {"mae": 0.5})
