"""Calibration: ECE/NLL/Brier by hand, the temperature fit, its trip through training, the bundle
and swrr-predict, uncalibrated runs saying so, and abstention."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import minimize_scalar

from swrr import metrics as M
from swrr.bundle import CONFIG, load_bundle
from swrr.calibration import fit_temperature
from swrr.train.config import TrainConfig
from swrr.train.runner import run
from tests.test_bundle import make_bundle
from tests.test_predict import TINY_MODEL, metrics_of, predict, trained  # noqa: F401 (a fixture)

PROBS = np.array([[0.9, 0.1], [0.58, 0.42], [0.3, 0.7], [0.55, 0.45]])
LABELS = np.array([0, 1, 1, 0])


def test_ece_nll_brier_by_hand():
    # top probabilities 0.9 (right), 0.58 (wrong), 0.7 (right), 0.55 (right); 15 bins of width 1/15:
    # 0.9 -> bin 13, 0.7 -> bin 10, 0.58 and 0.55 share bin 8 (accuracy 1/2, mean confidence 0.565)
    ece = (abs(1 - 0.9) + abs(1 - 0.7) + 2 * abs(0.5 - 0.565)) / 4
    assert M.expected_calibration_error(PROBS, LABELS) == pytest.approx(ece) == pytest.approx(0.1325)
    assert M.negative_log_likelihood(PROBS, LABELS) == pytest.approx(
        -(math.log(0.9) + math.log(0.42) + math.log(0.7) + math.log(0.55)) / 4)
    brier = (2 * 0.1 ** 2 + 2 * 0.58 ** 2 + 2 * 0.3 ** 2 + 2 * 0.45 ** 2) / 4
    assert M.brier_score(PROBS, LABELS) == pytest.approx(brier) == pytest.approx(0.31945)
    bins = M.reliability_bins(PROBS, LABELS)
    assert bins["count"][8] == 2 and bins["correct"][8] == 1 and bins["count"][13] == bins["count"][10] == 1
    assert sum(bins["count"]) == 4
    # summed bins of two halves give the ECE of the whole
    halves = [M.reliability_bins(PROBS[s], LABELS[s]) for s in (slice(0, 2), slice(2, 4))]
    summed = {k: np.add(halves[0][k], halves[1][k]) for k in halves[0]}
    assert M.ece_from_bins(summed) == pytest.approx(ece)
    # a perfectly confident, always right model is perfectly calibrated
    assert M.expected_calibration_error(np.eye(3), [0, 1, 2]) == 0.0 and M.brier_score(np.eye(3), [0, 1, 2]) == 0.0


def test_softmax_with_a_temperature():
    logits = np.array([[2.0, 0.0, -1.0]])
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum()
    np.testing.assert_allclose(M.softmax(logits, 2.0), expected)
    np.testing.assert_allclose(M.softmax(logits), torch.softmax(torch.tensor(logits), -1).numpy())


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_the_fitted_temperature_minimises_nll_and_recovers_the_generating_one(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 4))
    labels = np.array([rng.choice(4, p=p) for p in M.softmax(logits, true_temperature)])
    fitted = fit_temperature(logits, labels)
    best = minimize_scalar(lambda log_t: M.negative_log_likelihood(M.softmax(logits, math.exp(log_t)), labels),
                           bounds=(-3, 3), method="bounded", options={"xatol": 1e-8})
    assert fitted == pytest.approx(math.exp(best.x), rel=1e-3)  # scipy's independent minimiser agrees
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    nll = M.negative_log_likelihood(M.softmax(logits, fitted), labels)
    assert nll < M.negative_log_likelihood(M.softmax(logits), labels)
    assert fit_temperature(logits[:0], labels[:0]) == 1.0
    with pytest.raises(ValueError, match="non-finite"):
        fit_temperature(np.array([[np.nan, 0.0]]), [0])


def test_a_split_run_reports_calibration_and_ships_its_temperature(trained):
    run_dir, _, _ = trained
    result = metrics_of(run_dir)
    calibration = result["metrics"]["calibration"]
    assert calibration["fitted_on"] == "4 validation rows" and calibration["temperature"] > 0
    assert set(calibration["before"]) == set(calibration["after"]) == {"ece", "nll", "brier"}
    # the unit's reported ECE/NLL/Brier are those of the probabilities the bundle gives
    assert result["metrics"]["ece"] == calibration["after"]["ece"]
    # recomputed from the trainer's test logits with the shipped temperature
    table = pd.read_csv(run_dir / "fold01" / "predictions.csv")
    logits = table[[c for c in table.columns if c.startswith("logit_")]].to_numpy()
    probs = M.softmax(logits, calibration["temperature"])
    assert M.expected_calibration_error(probs, table["label"]) == pytest.approx(result["metrics"]["ece"])
    assert M.negative_log_likelihood(M.softmax(logits), table["label"]) == pytest.approx(calibration["before"]["nll"])
    assert sum(calibration["reliability"]["count"]) == len(table) == 4
    bundle = load_bundle(run_dir)
    assert bundle.temperature == calibration["temperature"]
    assert "temperature-scaled" in (bundle.path / "README.md").read_text()
    assert (run_dir / "reliability.png").is_file() and (run_dir / "confusion.png").is_file()
    summary = pd.read_csv(run_dir / "summary.csv", keep_default_na=False).set_index("key")
    assert summary.loc["ece", "mean"] == pytest.approx(100 * result["metrics"]["ece"])  # percent, as accuracies
    assert "temperature-scaled" in summary.loc["ece", "note"]
    folds = json.loads((run_dir / "results.json").read_text())["folds"]
    assert folds[0]["metrics"]["ece"] == result["metrics"]["ece"]


def test_a_run_without_validation_rows_says_its_probabilities_are_uncalibrated(trained, tmp_path, caplog):
    _, cache, _ = trained
    # (the demo workflow has one speaker: --protocol all is its run without validation rows)
    with caplog.at_level(logging.INFO, logger="swrr.train"):  # the report speaks through logging
        run_dir = run(TrainConfig(cache=str(cache), runs_dir=str(tmp_path), name="all", protocol="all",
                                  epochs=1, batch_size=8, model=dict(TINY_MODEL), threads=1, progress=False,
                                  device="cpu"))
    calibration = metrics_of(run_dir)["metrics"]["calibration"]
    assert calibration["temperature"] is None and calibration["after"] is None
    assert "--early-stop-speaker" in calibration["note"]
    assert "uncalibrated" in caplog.text
    summary = pd.read_csv(run_dir / "summary.csv", keep_default_na=False).set_index("key")
    assert "--early-stop-speaker" in summary.loc["ece", "note"]
    bundle = load_bundle(run_dir)
    assert bundle.temperature == 1.0 and "calibration" not in json.loads((bundle.path / CONFIG).read_text())
    assert "uncalibrated" in (bundle.path / "README.md").read_text()


def test_old_bundles_load_with_t_1_and_a_damaged_temperature_is_refused(tmp_path):
    make_bundle(tmp_path / "b")
    assert load_bundle(tmp_path / "b").temperature == 1.0  # written without a calibration entry
    config = json.loads((tmp_path / "b" / CONFIG).read_text())
    config["calibration"] = {"temperature": -2}
    (tmp_path / "b" / CONFIG).write_text(json.dumps(config))
    with pytest.raises(Exception, match="temperature -2 is not a positive number"):
        load_bundle(tmp_path / "b")


def test_predict_applies_the_temperature_unless_told_not_to_and_abstains(trained, tmp_path):
    run_dir, _, rows = trained
    clips = rows[rows["split"] == "test"][["utt_id", "path", "text"]]
    manifest = tmp_path / "clips.csv"
    clips.to_csv(manifest, index=False)
    bundle = load_bundle(run_dir)
    names = [f"prob_{n}" for n in bundle.label_names]
    _, calibrated = predict(tmp_path, run_dir, [manifest], name="cal.csv")
    _, raw = predict(tmp_path, run_dir, [manifest], name="raw.csv", calibration=False)
    raw_probs, cal_probs = raw[names].to_numpy(), calibrated[names].to_numpy()
    logits = np.log(raw_probs)  # softmax is shift-invariant: log-probabilities are logits
    np.testing.assert_allclose(cal_probs, M.softmax(logits, bundle.temperature), atol=1e-6)
    assert np.abs(cal_probs - raw_probs).max() > 1e-4
    assert (calibrated["label"] == raw["label"]).all()  # a temperature never changes the argmax

    top = np.sort(cal_probs.max(axis=1))
    assert top[2] > top[1]
    threshold = float(top[1] + top[2]) / 2  # between the second and third lowest: two rows abstain
    top = cal_probs.max(axis=1)
    summary, abstaining = predict(tmp_path, run_dir, [manifest], name="abstain.csv", abstain_below=threshold)
    expected = np.where(top < threshold, "abstain", calibrated["label"])
    assert list(abstaining["label"]) == list(expected) and summary.abstained == 2
    assert "2 abstained" in summary.lines()[0]
    np.testing.assert_allclose(abstaining[names].to_numpy(), cal_probs)  # probabilities are kept
