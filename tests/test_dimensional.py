"""Dimensional emotion: CCC / SIMS metrics against hand-computed values, the CCC loss, --target on
a cache with valence/arousal/dominance, reported CCC == CCC recomputed from predictions.csv,
bundles with one score column per dimension."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from swrr import metrics as M
from swrr import objectives
from swrr.bundle import load_bundle
from swrr.cache import CacheMeta, CacheWriter, FeatureCache, RowInfo
from swrr.targets import TargetError, resolve_target, with_target
from swrr.train.config import TrainConfig, TrainError
from swrr.train.runner import run

DIM, FRAMES, TOKENS = 16, 20, 6
TINY_MODEL = {"lstm_hidden": 8, "cnn_channels": [4, 8]}
KINDS = {"valence": {"type": "score", "scale": [1.0, 5.0]}, "arousal": {"type": "score", "scale": [1.0, 5.0]},
         "dominance": {"type": "score", "scale": [1.0, 5.0]},
         "sentiment": {"type": "classes", "names": ["negative", "neutral", "positive"]}}


# ---------------------------------------------------------------- metrics by hand
def test_ccc_by_hand():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([2.0, 2.0, 4.0, 4.0])
    # means 2.5, 3; population variances 1.25, 1; covariance ((-1.5)(-1) + (-.5)(-1) + (.5)(1) + (1.5)(1)) / 4 = 1
    assert M.ccc(t, p) == pytest.approx(2 * 1.0 / (1.25 + 1.0 + 0.25))
    assert M.ccc(t, t) == pytest.approx(1.0)
    assert M.ccc(t, t + 1) < M.pearson_r(t, t + 1) == pytest.approx(1.0)  # a shift costs CCC, not r
    assert np.isnan(M.ccc([1.0], [1.0]))


def test_dimensional_metrics_per_dimension_and_mean():
    t = np.array([[1.0, 5.0], [2.0, 4.0], [3.0, 3.0], [4.0, 1.0]])
    p = np.array([[2.0, 5.0], [2.0, 4.0], [4.0, 3.0], [4.0, 1.0]])
    m = M.dimensional_metrics(t, p, ["valence", "arousal"])
    assert m["ccc_valence"] == pytest.approx(0.8) and m["ccc_arousal"] == pytest.approx(1.0)
    assert m["ccc"] == pytest.approx(0.9)
    assert m["mae_valence"] == pytest.approx(0.5) and m["mae_arousal"] == 0.0
    assert m["pearson_valence"] == pytest.approx(np.corrcoef(t[:, 0], p[:, 0])[0, 1])
    assert list(M.headline("dimensional", ["valence", "arousal"]))[:3] == ["ccc", "ccc_valence", "ccc_arousal"]


def test_sims_metrics_by_hand():
    """MMSA's __eval_sims_regression: clip to [-1, 1], bins closed on the right."""
    t = np.array([-1.0, -0.6, -0.1, 0.0, 0.1, 0.5, 0.8, 1.0])
    p = np.array([-1.4, -0.8, 0.0, 0.05, 0.12, 0.7, 0.71, 0.3])
    m = M.sims_metrics(t, p)
    # acc2 classes ([-1, 0] -> 0): truth 0 0 0 0 1 1 1 1 ; prediction 0 0 0 1 1 1 1 1 -> 7/8
    assert m["acc2"] == pytest.approx(7 / 8)
    # acc3 (-0.1 and 0.1 close their bins): truth 0 0 0 1 1 2 2 2 ; prediction 0 0 1 1 2 2 2 2 -> 6/8
    assert m["acc3"] == pytest.approx(6 / 8)
    # acc5 edges -0.7 -0.1 0.1 0.7: truth 0 1 1 2 2 3 4 4 ; prediction 0 0 2 2 3 3 4 3 -> 4/8
    assert m["acc5"] == pytest.approx(4 / 8)
    # F1 of the acc2 classes: class 0 tp 3, 4 true, 3 predicted -> 6/7; class 1 tp 4, 4 true, 5 predicted -> 8/9
    assert m["f1"] == pytest.approx((4 * 6 / 7 + 4 * 8 / 9) / 8)
    clipped = np.clip(p, -1, 1)
    assert m["mae"] == pytest.approx(np.mean(np.abs(t - clipped)))
    assert m["corr"] == pytest.approx(np.corrcoef(t, clipped)[0, 1])
    assert M.compute_metrics("regression", t, p, scale=[-1.0, 1.0]) == m
    assert "acc7" in M.compute_metrics("regression", t, p, scale=[-3.0, 3.0])


def test_ccc_loss_is_one_minus_ccc():
    rng = np.random.default_rng(0)
    t, p = rng.normal(size=(32, 3)), rng.normal(size=(32, 3))
    loss = objectives.loss("dim-ccc", torch.from_numpy(p).float(), torch.from_numpy(t).float())
    want = np.mean([1 - M.ccc(t[:, k], p[:, k]) for k in range(3)])
    assert float(loss) == pytest.approx(want, abs=1e-5)
    assert objectives.objective_for("dimensional") == "dim-ccc"
    assert objectives.objective_for("dimensional", "mse") == "dim-mse"
    assert objectives.num_outputs("dim-l1", 2) == 2


# ---------------------------------------------------------------- a cache with dimensions
def make_dimensional_cache(path, n=90, seed=0):
    """Valence and arousal are linear in two feature directions (learnable), dominance noise; the
    category follows valence; five test rows have no dominance rating (NaN); split train/valid/test."""
    rng = np.random.default_rng(seed)
    valence, arousal = rng.uniform(1, 5, n), rng.uniform(1, 5, n)
    dominance = rng.uniform(1, 5, n)
    dominance[4::20] = np.nan  # rows 4, 24, ..., 84: all test rows
    meta = CacheMeta(dataset="synthetic-vad", task="classification", label_names=["neg", "pos"],
                     audio_encoder="synthetic", text_encoder="synthetic", audio_dim=DIM, text_dim=DIM,
                     max_frames=FRAMES, max_tokens=TOKENS, label_kinds=KINDS, config={"seed": seed})
    rows = [RowInfo(utt_id=f"u{i:03d}", label=int(valence[i] > 3), speaker=f"s{i % 3}",
                    split=("train", "train", "train", "valid", "test")[i % 5],
                    extra_labels={"valence": valence[i], "arousal": arousal[i], "dominance": dominance[i],
                                  "sentiment": i % 3 if i % 7 else -1})
            for i in range(n)]
    directions = rng.normal(size=(2, DIM))
    signal = (valence - 3)[:, None] * directions[0] + (arousal - 3)[:, None] * directions[1]
    audio = rng.normal(scale=0.3, size=(n, FRAMES, DIM)) + signal[:, None, :]
    text = rng.normal(scale=0.3, size=(n, TOKENS, DIM)) + signal[:, None, :]
    writer = CacheWriter.open(path, meta, rows)
    writer.write(np.arange(n), audio.astype(np.float32), np.full(n, FRAMES), text.astype(np.float32),
                 np.full(n, TOKENS))
    return writer.finalize(), {"valence": valence, "arousal": arousal, "dominance": dominance}


def test_targets_of_a_cache(tmp_path):
    path, truth = make_dimensional_cache(tmp_path / "vad.h5")
    cache = FeatureCache(path)
    assert resolve_target(cache, None).task == "classification" and resolve_target(cache, "emotion").kinds == ()
    target = resolve_target(cache, "arousal,valence")
    assert target.task == "dimensional" and target.label_names == ["arousal", "valence"] and target.rated.all()
    view = with_target(cache, target)
    assert view.label.shape == (90, 2) and view.meta.task == "dimensional"
    assert view.load([4])["label"][0] == pytest.approx([truth["arousal"][4], truth["valence"][4]])
    assert cache.label.ndim == 1  # the cache itself is untouched
    assert (~resolve_target(cache, "dominance").rated).sum() == 5
    sentiment = resolve_target(cache, "sentiment")
    assert sentiment.task == "classification" and sentiment.label_names == ["negative", "neutral", "positive"]
    assert (~sentiment.rated).sum() == len([i for i in range(90) if i % 7 == 0])
    with pytest.raises(TargetError, match="has no label 'joy'.*it holds: emotion, valence, arousal, dominance"):
        resolve_target(cache, "joy")
    with pytest.raises(TargetError, match="a class label .sentiment. is learnt alone"):
        resolve_target(cache, "sentiment,valence")


def _config(cache, runs, **kw):
    base = dict(cache=str(cache), runs_dir=str(runs), protocol="split", epochs=12, batch_size=16, lr=5e-3,
                model=dict(TINY_MODEL), threads=1, progress=False, seed=0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_a_dimensional_run_reports_the_ccc_of_its_predictions(tmp_path):
    path, _ = make_dimensional_cache(tmp_path / "vad.h5")
    run_dir = run(_config(path, tmp_path / "runs", target="valence,arousal,dominance"))
    metrics = json.loads((run_dir / "fold01" / "metrics.json").read_text())["metrics"]
    table = pd.read_csv(run_dir / "fold01" / "predictions.csv")
    assert len(table) == 18 - 5  # the test rows, less those without a dominance rating
    for dim in ("valence", "arousal", "dominance"):
        recomputed = M.ccc(table[f"label_{dim}"], table[f"prediction_{dim}"])
        assert metrics[f"ccc_{dim}"] == pytest.approx(recomputed, abs=1e-6)
        assert metrics[f"mae_{dim}"] == pytest.approx(np.mean(np.abs(table[f"label_{dim}"] - table[f"prediction_{dim}"])),
                                                      abs=1e-6)
    assert metrics["ccc_valence"] > 0.3 and metrics["ccc_arousal"] > 0.3  # it learns the two real dimensions
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["key"].tolist()[:4] == ["ccc", "ccc_valence", "ccc_arousal", "ccc_dominance"]
    assert set(summary["scale"]) == {"valence 1 to 5, arousal 1 to 5, dominance 1 to 5"}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["target"]["task"] == "dimensional" and results["target"]["name"] == "valence,arousal,dominance"
    assert "5 of 90 rows have no valence,arousal,dominance value" in summary["note"].iloc[0]
    bundle = load_bundle(run_dir / "fold01" / "model")
    assert bundle.task == "dimensional" and bundle.label_names == ["valence", "arousal", "dominance"]
    assert bundle.objective == "dim-ccc" and bundle.model_config.num_outputs == 3


def test_target_options_are_checked(tmp_path):
    path, _ = make_dimensional_cache(tmp_path / "vad.h5")
    with pytest.raises(TrainError, match="target_loss applies to dimensional targets"):
        run(_config(path, tmp_path / "runs", target_loss="mse"))
    with pytest.raises(TrainError, match="target_loss must be one of ccc, mse, l1"):
        run(_config(path, tmp_path / "runs", target="valence", target_loss="huber"))
    with pytest.raises(TargetError, match="has no label 'joy'"):
        run(_config(path, tmp_path / "runs", target="joy"))
    assert not (tmp_path / "runs").exists()


def test_a_sims_scale_run_reports_mmsa_sims_metrics(tmp_path):
    """A regression cache on [-1, 1] (CH-SIMS) is scored with Acc2/Acc3/Acc5/F1/MAE/Corr."""
    rng = np.random.default_rng(1)
    n = 40
    score = np.round(rng.uniform(-1, 1, n), 1)
    meta = CacheMeta(dataset="mmsa", task="regression", label_names=[], audio_encoder="synthetic",
                     text_encoder="synthetic", audio_dim=DIM, text_dim=DIM, max_frames=FRAMES, max_tokens=TOKENS,
                     label_scale=[-1.0, 1.0])
    rows = [RowInfo(utt_id=f"u{i:03d}", label=float(score[i]), split=("train", "train", "valid", "test")[i % 4])
            for i in range(n)]
    writer = CacheWriter.open(tmp_path / "sims.h5", meta, rows)
    writer.write(np.arange(n), rng.normal(size=(n, FRAMES, DIM)).astype(np.float32), np.full(n, FRAMES),
                 rng.normal(size=(n, TOKENS, DIM)).astype(np.float32), np.full(n, TOKENS))
    run_dir = run(_config(writer.finalize(), tmp_path / "runs", epochs=1))
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["key"].tolist() == ["acc2", "acc3", "acc5", "f1", "mae", "corr"]
    assert set(summary["scale"]) == {"sentiment -1 to 1"}
    table = pd.read_csv(run_dir / "fold01" / "predictions.csv")
    metrics = json.loads((run_dir / "fold01" / "metrics.json").read_text())["metrics"]
    metrics.pop("loss")
    assert metrics == pytest.approx(M.sims_metrics(table["label"], table["prediction"]), rel=1e-4, nan_ok=True)


@pytest.mark.slow
def test_fold_processes_read_the_runs_target_as_a_sequential_run_does(tmp_path):
    """CPU --parallel-folds: each fold process opens the cache itself; it must read the labels of
    the run's --target (two dimensions here), not the cache's own category."""
    path, _ = make_dimensional_cache(tmp_path / "vad.h5")
    units = {}
    for lanes in (1, 2):
        run_dir = run(_config(path, tmp_path / "runs", protocol="loso-speaker", target="valence,arousal", epochs=2,
                              parallel_folds=lanes, name=f"lanes{lanes}"))
        units[lanes] = [json.loads((run_dir / f"fold0{k}" / "metrics.json").read_text())["metrics"] for k in (1, 2, 3)]
    assert "ccc_valence" in units[1][0] and units[2] == units[1]
