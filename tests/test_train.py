"""The trainer on small synthetic caches: protocols, presets, run folder, determinism, resume,
streaming, parallel folds, NaN stop, ablation grid, regression. The real SWRR model, tiny sizes."""
import json
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from swrr.cache import CacheMeta, CacheWriter, FeatureCache, RowInfo
from swrr.cli import console_output
from swrr.metrics import compute_metrics
from swrr.model import ABLATIONS
from swrr.train import checkpoint
from swrr.train.config import TrainConfig, TrainError, model_config, resolve
from swrr.train.loop import RunInterrupted
from swrr.train.protocols import default_protocol, make_folds, pick_folds
from swrr.train.parallel import run_lanes
from swrr.train import report
from swrr.rundir import INCOMPLETE, UnitFolder
from swrr.train.runner import prepare, resume, run, torch_threads

DIM, FRAMES, TOKENS = 16, 35, 6
SPEAKERS = ("S1F", "S1M", "S2F", "S2M")
CLASSES = ["neu", "ang", "sad", "hap"]
TINY_MODEL = {"lstm_hidden": 8, "cnn_channels": [4, 8]}


def make_cache(path, n=48, task="classification", dataset="synthetic", speakers=SPEAKERS, splits=True,
               random_encoders=False, seed=0, nan_rows=0):
    """A cache of random features plus a class pattern, labels independent of speaker and split.

    Row i: class (i // 4) % 4, speaker SPEAKERS[i % 4], session = the speaker's first two letters,
    split train/train/train/valid/test by i % 5. Regression labels are scores in [-3, 3] whose
    sign follows the class pattern.
    """
    rng = np.random.default_rng(seed)
    cls = (np.arange(n) // 4) % 4
    if task == "classification":
        labels = cls
    else:
        labels = np.round((cls - 1.5) * 1.6 + rng.uniform(-0.3, 0.3, n), 2)
    meta = CacheMeta(dataset=dataset, task=task, label_names=CLASSES if task == "classification" else [],
                     audio_encoder="synthetic", text_encoder="synthetic", audio_dim=DIM, text_dim=DIM,
                     max_frames=FRAMES, max_tokens=TOKENS, random_encoders=random_encoders,
                     config={"seed": seed})
    rows = [RowInfo(utt_id=f"u{i:03d}", label=labels[i].item(), speaker=speakers[i % len(speakers)] if speakers else "",
                    session=speakers[i % len(speakers)][:2] if speakers else "",
                    split=("train", "train", "train", "valid", "test")[i % 5] if splits else "")
            for i in range(n)]
    pattern = rng.normal(size=(4, DIM))
    audio = rng.normal(size=(n, FRAMES, DIM)) + pattern[cls][:, None, :]
    text = rng.normal(size=(n, TOKENS, DIM)) + pattern[cls][:, None, :]
    audio[:nan_rows] = np.nan
    writer = CacheWriter.open(path, meta, rows)
    writer.write(np.arange(n), audio.astype(np.float32), rng.integers(8, FRAMES + 1, n),
                 text.astype(np.float32), rng.integers(2, TOKENS + 1, n))
    return writer.finalize()


def tiny_config(cache, runs_dir, **overrides):
    kwargs = dict(cache=str(cache), runs_dir=str(runs_dir), protocol="loso-speaker", folds=[1, 2], epochs=3,
                  batch_size=8, lr=2e-3, model=dict(TINY_MODEL), threads=1, progress=False, seed=0,
                  device="cpu")  # bit-identical reruns are a CPU promise; tests/test_cuda_train.py covers CUDA
    kwargs.update(overrides)
    return TrainConfig(**kwargs)


def fold_metrics(run_dir):
    return [json.loads((run_dir / f"fold{k:02d}" / "metrics.json").read_text())["metrics"] for k in (1, 2)]


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "synthetic.h5", random_encoders=True)


@pytest.fixture(scope="module")
def reference(cache_path, tmp_path_factory):
    """One uninterrupted run that the other tests compare against."""
    runs = tmp_path_factory.mktemp("runs")
    return run(tiny_config(cache_path, runs, name="reference"))


# ------------------------------------------------------------------ protocols and presets
def test_loso_speaker_folds_cover_every_row_once_and_never_train_on_the_test_speaker():
    speaker = np.array([SPEAKERS[i % 4] for i in range(20)], dtype=object)
    session = np.array([s[:2] for s in speaker], dtype=object)
    split = np.array([""] * 20, dtype=object)
    folds = make_folds("loso-speaker", "classification", speaker, session, split)
    assert [f.name for f in folds] == list(SPEAKERS)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(20))
    for fold in folds:
        assert set(speaker[fold.test]) == {fold.name}
        assert fold.name not in set(speaker[fold.train]) and len(fold.valid) == 0
    sessions = make_folds("loso-session", "classification", speaker, session, split)
    assert [f.name for f in sessions] == ["S1", "S2"] and all(len(f.train) == 10 for f in sessions)


def test_early_stop_speaker_holds_out_the_session_mate():
    speaker = np.array([SPEAKERS[i % 4] for i in range(20)], dtype=object)
    session = np.array([s[:2] for s in speaker], dtype=object)
    folds = make_folds("loso-speaker", "classification", speaker, session, np.array([""] * 20, dtype=object),
                       early_stop_speaker=True)
    assert [f.valid_name for f in folds] == ["S1M", "S1F", "S2M", "S2F"]
    for fold in folds:
        assert set(speaker[fold.valid]) == {fold.valid_name}
        assert not set(fold.valid) & set(fold.train) and not set(fold.test) & set(fold.train)


def test_split_protocol_and_fold_subsets():
    split = np.array(["train", "valid", "test", "", "train"], dtype=object)
    (fold,) = make_folds("split", "regression", split, split, split)
    assert fold.train.tolist() == [0, 4] and fold.valid.tolist() == [1] and fold.test.tolist() == [2]
    speaker = np.array(list(SPEAKERS) * 2, dtype=object)
    folds = make_folds("loso-speaker", "classification", speaker, speaker, speaker)
    assert [f.number for f in pick_folds(folds, [1, 3])] == [1, 3]
    with pytest.raises(TrainError, match="out of range.*1..4"):
        pick_folds(folds, [5])


@pytest.mark.parametrize("protocol,task,speaker,split,message", [
    ("loso-speaker", "regression", ["a", "b"], ["train", "test"], "makes no sense.*regression"),
    ("loso-speaker", "classification", ["", ""], ["train", "test"], "needs at least two speakers"),
    ("loso-session", "classification", ["a", "b"], ["train", "test"], "needs at least two sessions"),
    ("split", "classification", ["a", "b"], ["", ""], "needs 'train' and 'test' rows"),
])
def test_protocols_that_do_not_fit_the_cache_are_refused(protocol, task, speaker, split, message):
    speaker = np.array(speaker, dtype=object)
    with pytest.raises(TrainError, match=message):
        make_folds(protocol, task, speaker, np.array(["", ""], dtype=object), np.array(split, dtype=object))


def _meta(dataset, task="classification"):
    return CacheMeta(dataset=dataset, task=task, label_names=CLASSES if task == "classification" else [],
                     audio_encoder="a", text_encoder="t", audio_dim=DIM, text_dim=24, max_frames=FRAMES,
                     max_tokens=TOKENS)


def test_presets_follow_the_paper_and_user_values_win():
    iemocap = resolve(TrainConfig(cache="x"), _meta("iemocap"), "split")
    assert (iemocap.protocol, iemocap.lr, iemocap.epochs, iemocap.batch_size) == ("loso-speaker", 5e-4, 50, 32)
    assert (iemocap.beta1, iemocap.beta2, iemocap.lr_decay_at, iemocap.lr_decay_factor) == (0.9, 0.99, 0.5, 0.1)
    mosei = resolve(TrainConfig(cache="x"), _meta("mosei", "regression"), "loso-speaker")
    assert (mosei.protocol, mosei.lr, mosei.epochs) == ("split", 1e-3, 20)
    other = resolve(TrainConfig(cache="x", lr=0.1, epochs=2), _meta("my-corpus"), "split")
    assert (other.protocol, other.lr, other.epochs) == ("split", 0.1, 2)
    split = np.array(["train", "test"], dtype=object)
    assert default_protocol("classification", np.array(["a", "b"], dtype=object), split) == "split"
    assert default_protocol("classification", np.array(["a", "b"], dtype=object), split[:0]) == "loso-speaker"


def test_model_config_comes_from_the_cache_overrides_and_ablation():
    config = resolve(TrainConfig(cache="x", model={"lstm_hidden": 8}, ablation="window-50"),
                     _meta("iemocap"), "split")
    cfg = model_config(config, _meta("iemocap"))
    assert (cfg.audio_dim, cfg.text_dim, cfg.max_frames, cfg.max_tokens, cfg.num_outputs) == (DIM, 24, FRAMES, TOKENS, 4)
    assert cfg.lstm_hidden == 8 and cfg.window == 50
    assert model_config(resolve(TrainConfig(cache="x"), _meta("mosei", "regression"), "split"),
                        _meta("mosei", "regression")).num_outputs == 1
    assert model_config(resolve(TrainConfig(cache="x", mosei_objective="ce7"), _meta("mosei", "regression"),
                                "split"), _meta("mosei", "regression")).num_outputs == 7
    assert model_config(resolve(TrainConfig(cache="x", ablation="drop-padded-windows"), _meta("iemocap"),
                                "split"), _meta("iemocap")).padded_windows == "drop"
    with pytest.raises(TrainError, match="unknown model option"):
        model_config(replace(config, model={"lstm_hiden": 8}), _meta("iemocap"))


# ------------------------------------------------------------------ a run and its folder
def test_run_folder_holds_config_logs_metrics_reports_and_checkpoints(reference, cache_path, capsys):
    files = {p.name for p in reference.iterdir()}
    assert {"config.json", "summary.csv", "results.json", "confusion.png", "learning_curve.png",
            "attention.png", "fold01", "fold02"} <= files and INCOMPLETE not in files
    config = json.loads((reference / "config.json").read_text())
    assert config["train"]["epochs"] == 3 and config["model"]["lstm_hidden"] == 8
    fold = reference / "fold01"
    log = [json.loads(line) for line in (fold / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and len(pd.read_csv(fold / "log.csv")) == 3
    assert log[0]["lr"] == pytest.approx(2e-3) and log[2]["lr"] == pytest.approx(2e-4)  # /10 after half
    result = json.loads((fold / "metrics.json").read_text())
    assert result["selection"] == "last epoch" and result["selected_epoch"] == 3
    # the reported metrics are those of the saved predictions, which are those of best.pt
    pred = pd.read_csv(fold / "predictions.csv")
    assert len(pred) == result["sizes"]["test"] == 12
    logits = pred[[f"logit_{c}" for c in CLASSES]].to_numpy()
    assert compute_metrics("classification", pred["label"], logits, 4)["wa"] == pytest.approx(result["metrics"]["wa"])
    best = torch.load(fold / "best.pt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 3 and best["label_names"] == CLASSES
    assert all(torch.equal(a, b) for a, b in zip(best["model"].values(), weights(fold / "last.pt").values()))
    assert np.load(fold / "attention.npy").shape == (TOKENS, FRAMES)
    summary = pd.read_csv(reference / "summary.csv")
    wa = summary.set_index("key").loc["wa"]
    assert wa["mean"] == pytest.approx(100 * np.mean([m["wa"] for m in fold_metrics(reference)]))
    assert summary["note"].str.contains("RANDOM encoders").all()  # this cache says its encoders are random
    assert json.loads((reference / "results.json").read_text())["random_encoders"] is True


def test_same_seed_gives_bit_identical_runs_and_another_seed_does_not(reference, cache_path, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # differs from the run's --threads 1
    try:
        again = run(tiny_config(cache_path, tmp_path, name="again"))
        assert torch.get_num_threads() == threads + 1  # a run from Python leaves the caller's setting alone
    finally:
        torch.set_num_threads(threads)
    assert fold_metrics(again) == fold_metrics(reference)
    for a, b in zip(weights(again / "fold02" / "last.pt").values(), weights(reference / "fold02" / "last.pt").values()):
        assert torch.equal(a, b)
    other = run(tiny_config(cache_path, tmp_path, name="other", seed=1, folds=[2]))
    assert any(not torch.equal(a, b) for a, b in zip(weights(other / "fold02" / "last.pt").values(),
                                                     weights(reference / "fold02" / "last.pt").values()))


def test_a_run_stopped_mid_fold_resumes_to_the_same_result(reference, cache_path, tmp_path):
    config = tiny_config(cache_path, tmp_path, name="stopped", stop_after_epochs=5)  # fold 2, epoch 2 of 3
    with pytest.raises(RunInterrupted):
        run(config)
    stopped = tmp_path / "stopped"
    assert (stopped / INCOMPLETE).exists() and not (stopped / "summary.csv").exists()
    assert (stopped / "fold01" / "metrics.json").exists() and not (stopped / "fold02" / "metrics.json").exists()
    assert len((stopped / "fold02" / "log.jsonl").read_text().splitlines()) == 2
    resume(stopped)
    assert not (stopped / INCOMPLETE).exists()
    assert fold_metrics(stopped) == fold_metrics(reference)
    for a, b in zip(weights(stopped / "fold02" / "last.pt").values(), weights(reference / "fold02" / "last.pt").values()):
        assert torch.equal(a, b)
    assert (stopped / "fold02" / "log.jsonl").read_text() == (reference / "fold02" / "log.jsonl").read_text()


def test_a_checkpoint_from_another_config_is_refused(reference, cache_path, tmp_path):
    config = tiny_config(cache_path, tmp_path, name="other-lr", lr=1e-3, stop_after_epochs=1)
    with pytest.raises(RunInterrupted):
        run(config)
    target = tmp_path / "other-lr" / "fold01"
    shutil.copy(reference / "fold01" / "last.pt", target / "last.pt")
    with pytest.raises(TrainError, match="different run.*config.lr"):
        resume(tmp_path / "other-lr")
    # a pickle that would run code is refused by weights_only loading
    torch.save({"format": checkpoint.FORMAT_TAG, "evil": print}, target / "last.pt")
    with pytest.raises(TrainError, match="cannot be loaded safely"):
        resume(tmp_path / "other-lr")


def test_streaming_from_hdf5_gives_the_same_numbers(reference, cache_path, tmp_path):
    streamed = run(tiny_config(cache_path, tmp_path, name="streamed", stream=True, workers=2))
    assert fold_metrics(streamed) == fold_metrics(reference)


def test_parallel_folds_do_not_change_per_fold_results(reference, cache_path, tmp_path):
    parallel = run(tiny_config(cache_path, tmp_path, name="parallel", parallel_folds=2))
    assert fold_metrics(parallel) == fold_metrics(reference)


def lane_jobs(config, folder):
    plan = prepare(config)
    for job in plan.jobs:
        job.fold_dir = str(folder / f"fold{job.fold.number:02d}")
    return plan


def test_fold_lanes_end_where_a_sequential_run_ends(cache_path, tmp_path, capsys):
    """On CUDA --parallel-folds trains folds in threads of one process (train.parallel.run_lanes);
    the same code runs on a CPU. Lanes share the global RNG (dropout), so with dropout off every
    fold must end exactly where it ends in a sequential run."""
    config = tiny_config(cache_path, tmp_path, model={**TINY_MODEL, "dropout": 0.0})
    sequential = run(replace(config, name="sequential"))
    plan = lane_jobs(replace(config, parallel_folds=2, progress=True), tmp_path / "lanes")
    capsys.readouterr()
    with torch_threads(1):
        results = sorted(run_lanes(plan.jobs, plan.config, plan.device, plan.cache), key=lambda r: r["fold"])
    assert [r["metrics"] for r in results] == fold_metrics(sequential)
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "2 folds in 2 lanes" in bar and "6/6" in bar  # one bar over both folds' 3 epochs
    for k in (1, 2):
        lane_weights = weights(tmp_path / "lanes" / f"fold{k:02d}" / "best.pt")
        assert all(torch.equal(v, lane_weights[name]) for name, v in
                   weights(sequential / f"fold{k:02d}" / "best.pt").items())


def test_a_failing_lane_stops_the_others(cache_path, tmp_path, monkeypatch):
    from swrr.train import loop

    evaluate = loop.evaluate

    def fail_in_fold_1(job, *args, **kwargs):
        if job.fold.number == 1:
            raise TrainError("fold 1 broke")
        return evaluate(job, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", fail_in_fold_1)
    plan = lane_jobs(tiny_config(cache_path, tmp_path, epochs=200, parallel_folds=2), tmp_path / "lanes")
    with pytest.raises(TrainError, match="fold 1 broke"):
        list(run_lanes(plan.jobs, plan.config, plan.device, plan.cache))
    fold2 = tmp_path / "lanes" / "fold02"
    assert not (fold2 / "metrics.json").exists()  # stopped long before its 200 epochs
    if (fold2 / "last.pt").exists():  # the epochs it finished are kept for --resume
        assert torch.load(fold2 / "last.pt", weights_only=True)["epoch"] < 200


def test_capture_gate_lets_a_capture_run_alone():
    """Fold lanes share the device RNG: a CUDA graph capture must wait for steps being launched,
    and steps that come while a capture waits or runs must wait for it."""
    import threading

    from swrr.train.step import CaptureGate

    gate, events = CaptureGate(), []
    capture_waiting = threading.Event()

    def capture():
        capture_waiting.set()
        with gate.capture():
            events.append("capture")

    def late_step():
        with gate.step():
            events.append("late step")

    with gate.step():
        capturer = threading.Thread(target=capture)
        capturer.start()
        capture_waiting.wait()
        while not gate._waiting:  # the capture is queued behind this step
            pass
        latecomer = threading.Thread(target=late_step)
        latecomer.start()
        latecomer.join(0.2)
        assert latecomer.is_alive() and events == []  # a queued capture goes first: no starving
        events.append("first step done")
    capturer.join(5)
    latecomer.join(5)
    assert events == ["first step done", "capture", "late step"]


def test_nonfinite_rows_finds_nan_and_inf_rows_in_any_chunking(tmp_path):
    path = make_cache(tmp_path / "nan.h5", nan_rows=3)
    with h5py.File(path, "r+") as h5:
        h5["text"][10, 2, 5] = np.inf  # one value of one token
        h5["audio"][47, 0, 0] = -np.inf  # the last row: a partial last chunk
    with FeatureCache(path) as cache:
        for chunk_rows in (1, 5, 7, 1000):
            assert cache.nonfinite_rows(chunk_rows=chunk_rows).tolist() == [0, 1, 2, 10, 47]
    with FeatureCache(make_cache(tmp_path / "clean.h5")) as clean:
        assert clean.nonfinite_rows().tolist() == []


def test_a_cache_with_nonfinite_features_is_refused_naming_rows_before_the_run_folder(tmp_path):
    cache = make_cache(tmp_path / "nan.h5", nan_rows=7)
    with pytest.raises(TrainError, match=r"nan.h5: 7 of 48 rows hold non-finite \(NaN/inf\) features "
                                         r"\(u000, u001, u002, u003, u004, \.\.\.\); re-extract"):
        run(tiny_config(cache, tmp_path / "runs", name="nan", folds=[1]))
    assert not (tmp_path / "runs").exists()


def test_regression_split_run_selects_the_best_valid_epoch(tmp_path):
    cache = make_cache(tmp_path / "mosei.h5", task="regression", dataset="mosei", speakers=())
    run_dir = run(tiny_config(cache, tmp_path / "runs", protocol=None, folds=None, epochs=4, grad_accum=2))
    assert run_dir.name == "mosei-split"
    result = json.loads((run_dir / "fold01" / "metrics.json").read_text())
    log = [json.loads(line) for line in (run_dir / "fold01" / "log.jsonl").read_text().splitlines()]
    best_epoch = 1 + int(np.argmin([r["valid_mae"] for r in log]))
    assert result["selection"] == "best valid epoch by mae" and result["selected_epoch"] == best_epoch
    assert torch.load(run_dir / "fold01" / "best.pt", weights_only=True)["epoch"] == best_epoch
    summary = pd.read_csv(run_dir / "summary.csv").set_index("key")
    assert {"acc7", "acc2_non0", "f1_non0", "acc2_has0", "mae", "corr"} <= set(summary.index)
    # the paper's 84.8 / 83.8 stand beside both ACC2/F1 variants, with a note that it does not say which
    assert summary.loc["acc2_non0", "paper"] == summary.loc["acc2_has0", "paper"] == 84.8
    assert summary.loc["f1_non0", "paper"] == summary.loc["f1_has0", "paper"] == 83.8
    noted = summary["note"].notna()
    assert set(summary.index[noted]) == {"acc2_non0", "f1_non0", "acc2_has0", "f1_has0"}
    assert summary["note"][noted].str.contains("does not state").all()
    assert result["valid_speaker"] is None  # the split protocol validates on the cache's valid rows


def test_ce7_objective_trains_seven_outputs_and_scores_by_expected_value(tmp_path):
    cache = make_cache(tmp_path / "mosei.h5", task="regression", dataset="mosei", speakers=())
    run_dir = run(tiny_config(cache, tmp_path / "runs", protocol=None, folds=None, epochs=2,
                              mosei_objective="ce7"))
    best = torch.load(run_dir / "fold01" / "best.pt", weights_only=True)
    assert best["objective"] == "ce7" and best["model_config"]["num_outputs"] == 7
    predictions = pd.read_csv(run_dir / "fold01" / "predictions.csv")
    assert predictions["prediction"].between(-3, 3).all() and predictions["prediction"].nunique() > 1
    metrics = json.loads((run_dir / "fold01" / "metrics.json").read_text())["metrics"]
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(predictions["prediction"] - predictions["label"])))
    assert json.loads((run_dir / "config.json").read_text())["train"]["mosei_objective"] == "ce7"
    classification = make_cache(tmp_path / "iemocap.h5", dataset="iemocap")
    with pytest.raises(TrainError, match="--mosei-objective applies to regression caches"):
        run(tiny_config(classification, tmp_path / "runs", mosei_objective="ce7"))


def test_ablation_all_runs_the_table3_grid_and_writes_the_table(tmp_path, capsys):
    cache = make_cache(tmp_path / "iemocap.h5", dataset="iemocap")
    with console_output():  # the report is logged; the command line shows it on stdout
        top = run(tiny_config(cache, tmp_path / "runs", protocol=None, folds=[1], epochs=1, ablation="all"))
    table = pd.read_csv(top / "ablations.csv")
    assert table["variant"].tolist() == ["swrr", *ABLATIONS]
    assert table.set_index("variant").loc["text-only", "WA paper"] == 71.7
    assert table["UA mean"].notna().all() and not (top / INCOMPLETE).exists()
    assert not (top / "audio-only" / "attention.png").exists() and (top / "window-50" / "attention.png").exists()
    assert "ablations (Table 3)" in capsys.readouterr().out


def test_cache_columns_reach_the_folds(cache_path):
    cache = FeatureCache(cache_path)
    config = resolve(TrainConfig(cache=str(cache_path)), cache.meta, "split")
    assert config.protocol == "split" and config.epochs == 50  # no preset for "synthetic"


@pytest.mark.parametrize("protocol, speaker, split, advice", [
    ("loso-speaker", ["a", "a"], ["train", "test"], "use --protocol split$"),
    ("split", ["a", "b"], ["", ""], "use --protocol loso-speaker$"),  # no sessions: not loso-session
    ("split", ["a", "a"], ["", ""], "no protocol fits this cache: re-extract it with a split column"),
    ("loso-speaker", ["a", "a"], ["", ""], "no protocol fits this cache: re-extract it with a split column"),
])
def test_a_protocol_that_does_not_fit_suggests_only_one_that_does(protocol, speaker, split, advice):
    with pytest.raises(TrainError, match=advice):
        make_folds(protocol, "classification", np.array(speaker, dtype=object), np.array(["", ""], dtype=object),
                   np.array(split, dtype=object))


def test_a_one_class_run_warns_in_the_console_and_in_summary_csv(tmp_path, capsys):
    path = make_cache(tmp_path / "one.h5")
    with h5py.File(path, "r+") as h5:
        h5["label"][:] = 2
    with console_output():
        run_dir = run(tiny_config(path, tmp_path / "runs", folds=[1], epochs=1))
    out = capsys.readouterr().out
    warning = "ONE CLASS: fold 1 (S1F) trains on class sad only; its accuracies are meaningless"
    assert out.count(f"WARNING: {warning}") == 2  # before training and under the summary
    assert pd.read_csv(run_dir / "summary.csv")["note"].str.contains(warning, regex=False).all()
    with h5py.File(path, "r+") as h5:  # control: two classes, no warning
        h5["label"][:24] = 1
    assert prepare(tiny_config(path, tmp_path / "runs", folds=[1], epochs=1)).warnings == []


def test_progress_in_a_log_is_one_line_per_epoch(cache_path, tmp_path, capsys):
    run(tiny_config(cache_path, tmp_path, folds=[1], epochs=3, progress=True))
    err = capsys.readouterr().err  # not a terminal
    lines = [line for line in err.splitlines() if "epoch" in line]
    assert "\r" not in err and len(lines) == 3, err
    for k, line in enumerate(lines, start=1):
        assert line.startswith(f"fold 1/4 (S1F) epoch {k}/3: 100%") and "loss=" in line


def test_plots_label_what_they_show_and_fit_their_titles(reference, tmp_path):
    one_class = report.plot_confusion(tmp_path / "c.png", np.array([[5]]), ["neu"], " (random encoders)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(one_class).get_renderer()
    title = one_class.axes[0].title.get_window_extent(renderer)
    assert 0 <= title.x0 and title.x1 <= one_class.bbox.x1  # not cut off
    curves = report.plot_learning_curves(tmp_path / "l.png", [UnitFolder(reference / "fold01"), UnitFolder(reference / "fold02")],
                                         "classification", "")
    loss, accuracy = curves.axes
    assert accuracy.get_title() == "accuracy: WA (train), UA (valid, test)"
    assert "one fold each (thin)" in [t.get_text() for t in accuracy.get_legend().get_texts()]
    for ax in (loss, accuracy):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)  # epochs 1..3, no 1.5
