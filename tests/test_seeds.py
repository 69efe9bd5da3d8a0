"""--seeds (units = fold x seed), the protocol statement in results.json, reruns from a config
file (--config, JSON and YAML), --tensorboard, and swrr-compare on real runs. Tiny model, CPU."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from test_train import cache_path, make_cache, tiny_config  # noqa: F401 (cache_path is a fixture)
from swrr.rundir import INCOMPLETE
from swrr.train.cli import main
from swrr.train.config import parse_seeds
from swrr.train.compare import run_compare
from swrr.train.loop import RunInterrupted
from swrr.train.runner import resume, run

UNITS = ["fold01-seed0", "fold02-seed0", "fold01-seed1", "fold02-seed1"]  # seed by seed


def unit_metrics(run_dir, names):
    return {name: json.loads((run_dir / name / "metrics.json").read_text()) for name in names}


def invoke(args):
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(cache_path, tmp_path_factory):
    """A run with --seeds 0,1 and the single-seed runs its units must equal."""
    folder = tmp_path_factory.mktemp("runs")
    seeded = run(tiny_config(cache_path, folder, name="seeded", epochs=2, seeds=[0, 1]))
    single = run(tiny_config(cache_path, folder, name="single", epochs=2))  # seed 0
    seed1 = run(tiny_config(cache_path, folder, name="seed1", epochs=2, seed=1, folds=[2]))
    return folder, seeded, single, seed1


# ------------------------------------------------------------------ seeds
def test_seeds_parse_as_a_list_or_a_count():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("1,2,5") == [1, 2, 5] and parse_seeds("3,") == [3]
    assert parse_seeds(None) is None


def test_each_fold_and_seed_is_a_unit_equal_to_a_single_seed_run(runs):
    _, seeded, single, seed1 = runs
    assert sorted(p.name for p in seeded.iterdir() if p.name.startswith("fold")) == sorted(UNITS)
    assert sorted(p.name for p in single.iterdir() if p.name.startswith("fold")) == ["fold01", "fold02"]  # as before
    units = unit_metrics(seeded, UNITS)
    assert [(u["fold"], u["seed"]) for u in units.values()] == [(1, 0), (2, 0), (1, 1), (2, 1)]
    # a unit's seed depends only on (seed, fold): the same numbers as runs that hold it alone
    assert units["fold01-seed0"]["metrics"] == unit_metrics(single, ["fold01"])["fold01"]["metrics"]
    assert units["fold02-seed0"]["metrics"] == unit_metrics(single, ["fold02"])["fold02"]["metrics"]
    assert units["fold02-seed1"]["metrics"] == unit_metrics(seed1, ["fold02"])["fold02"]["metrics"]
    assert units["fold02-seed1"]["metrics"] != units["fold02-seed0"]["metrics"]


def test_summary_gives_the_spread_over_units_seeds_and_folds(runs):
    _, seeded, single, _ = runs
    ua = np.array([[100 * unit_metrics(seeded, [f"fold0{f}-seed{s}"])[f"fold0{f}-seed{s}"]["metrics"]["ua"]
                    for f in (1, 2)] for s in (0, 1)])  # (seed, fold)
    row = pd.read_csv(seeded / "summary.csv").set_index("key").loc["ua"]
    assert (row["units"], row["seeds"], row["folds"]) == (4, 2, 2)
    assert row["mean"] == pytest.approx(ua.mean()) and row["std"] == pytest.approx(ua.std(ddof=1))
    assert row["seed_std"] == pytest.approx(ua.mean(axis=1).std(ddof=1))  # std of the per-seed means
    assert row["fold_std"] == pytest.approx(ua.std(axis=1, ddof=1).mean())  # mean over seeds of the std over folds
    one = pd.read_csv(single / "summary.csv").set_index("key").loc["ua"]
    assert np.isnan(one["seed_std"]) and one["fold_std"] == pytest.approx(one["std"]) and one["units"] == 2


def test_results_json_states_the_protocol(runs, cache_path):
    from swrr.cache import FeatureCache

    _, seeded, _, _ = runs
    statement = json.loads((seeded / "results.json").read_text())["protocol"]
    cache = FeatureCache(cache_path)
    assert statement["protocol"] == "loso-speaker" and "leave one speaker out" in statement["description"]
    assert statement["folds_run"] == [1, 2] and statement["folds_in_protocol"] == 4 and statement["seeds"] == [0, 1]
    for fold in statement["folds"]:
        assert fold["test_speakers"] == [fold["name"]] and fold["test_sessions"] == [fold["name"][:2]]
        assert fold["valid_speakers"] == []
        test_rows = np.flatnonzero(cache.speaker == fold["name"])
        assert sum(fold["class_counts"]["test"].values()) == len(test_rows) == 12
        assert fold["class_counts"]["test"] == {c: int(np.sum(cache.label[test_rows] == i))
                                                for i, c in enumerate(cache.meta.label_names)}
        assert sum(fold["class_counts"]["train"].values()) == 36 and sum(fold["class_counts"]["valid"].values()) == 0
    selection = statement["model_selection"]
    assert selection["applied"] == ["last epoch"] and selection["select"] == "auto"
    assert selection["selected_epochs"] == {f"fold {f} seed {s}": 2 for s in (0, 1) for f in (1, 2)}
    assert "balanced accuracy" in statement["metrics"]["ua"] and set(statement["metrics"]) == {"wa", "ua", "f1"}


def test_seeded_units_spread_over_processes_like_folds(runs, cache_path, tmp_path):
    _, seeded, _, _ = runs
    parallel = run(tiny_config(cache_path, tmp_path, name="parallel", epochs=2, seeds=[0, 1], folds=[1],
                               parallel_folds=2))  # two processes, one unit each
    names = ["fold01-seed0", "fold01-seed1"]
    assert {k: v["metrics"] for k, v in unit_metrics(parallel, names).items()} == \
        {k: v["metrics"] for k, v in unit_metrics(seeded, names).items()}


def test_a_stopped_seeded_run_resumes_to_the_same_units(runs, cache_path, tmp_path):
    _, seeded, _, _ = runs
    with pytest.raises(RunInterrupted):  # 2 + 2 epochs of seed 0, then 1 of fold 1 seed 1
        run(tiny_config(cache_path, tmp_path, name="stopped", epochs=2, seeds=[0, 1], stop_after_epochs=5))
    stopped = tmp_path / "stopped"
    assert (stopped / INCOMPLETE).exists() and not (stopped / "fold01-seed1" / "metrics.json").exists()
    resume(stopped)
    assert {k: v["metrics"] for k, v in unit_metrics(stopped, UNITS).items()} == \
        {k: v["metrics"] for k, v in unit_metrics(seeded, UNITS).items()}


@pytest.mark.parametrize("args,message", [
    (["--seeds", "1,1"], "1 more than once"),
    (["--seeds", "2,-1"], "must be >= 0, got -1"),
    (["--seeds", ""], "count of seeds must be >= 1"),
    (["--seeds", "0"], "count of seeds must be >= 1"),
    (["--seeds", "a,b"], "expected seeds like"),
    (["--seeds", "3", "--seed", "1"], "--seed and --seeds exclude each other"),
])
def test_bad_seeds_are_one_line_and_exit_2(cache_path, tmp_path, args, message):
    result = invoke(["--cache", cache_path, "--runs-dir", tmp_path / "runs", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_ablation_all_with_seeds_gives_table3_with_seed_spread_and_its_comparison(tmp_path):
    cache = make_cache(tmp_path / "iemocap.h5", dataset="iemocap")
    top = run(tiny_config(cache, tmp_path / "runs", protocol=None, folds=[1], epochs=1, ablation="all", seeds=[0, 1]))
    table = pd.read_csv(top / "ablations.csv").set_index("variant")
    assert (table["units"] == 2).all() and table["UA seed std"].notna().all() and table["UA std"].notna().all()
    assert table.loc["no-hrfr", "UA paper"] == 76.2
    rows, out = run_compare([top], ["UA"], resamples=500)
    assert [r["run"] for r in rows] == table.index[1:].tolist() and all(r["reference"] == "swrr" for r in rows)
    assert all(r["units"] == 2 and r["holm"] for r in rows)
    swrr = table.loc["swrr", "UA mean"]
    assert rows[0]["difference"] == pytest.approx(table.loc[rows[0]["run"], "UA mean"] - swrr)
    assert (out / "compare.md").exists() and (out / "compare.png").exists()


# ------------------------------------------------------------------ reruns from a config file
def test_a_rerun_from_a_runs_config_gives_identical_units_and_records_its_overrides(runs):
    folder, seeded, _, _ = runs
    result = invoke(["--config", seeded / "config.json", "--name", "again", "--runs-dir", folder])
    assert result.exit_code == 0, result.stderr
    again = folder / "again"
    assert {k: v["metrics"] for k, v in unit_metrics(again, UNITS).items()} == \
        {k: v["metrics"] for k, v in unit_metrics(seeded, UNITS).items()}
    record = json.loads((again / "config.json").read_text())["rerun"]
    assert record == {"config_file": str(seeded / "config.json"), "overrides": {"name": "again", "runs_dir": str(folder)}}
    # and swrr-compare finds no difference between the two
    rows, _ = run_compare([seeded, again], resamples=200)
    assert all(r["difference"] == 0 and r["p_t"] == 1 and r["units"] == 4 for r in rows)


def test_a_hand_written_yaml_config_with_command_line_overrides(cache_path, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({
        "cache": str(cache_path), "protocol": "loso-speaker", "folds": [1], "epochs": 1, "batch-size": 8,
        "lr": 2e-3, "model": {"lstm_hidden": 8, "cnn_channels": [4, 8]}, "threads": 1, "device": "cpu",
        "progress": False, "seeds": [3]}))
    result = invoke(["--config", config, "--runs-dir", tmp_path / "runs", "--name", "y", "--epochs", "2",
                     "--lstm-hidden", "6"])
    assert result.exit_code == 0, result.stderr
    saved = json.loads((tmp_path / "runs" / "y" / "config.json").read_text())
    assert saved["train"]["batch_size"] == 8 and saved["train"]["epochs"] == 2 and saved["train"]["seeds"] == [3]
    assert saved["model"]["lstm_hidden"] == 6 and saved["model"]["cnn_channels"] == [4, 8]
    assert set(saved["rerun"]["overrides"]) == {"runs_dir", "name", "epochs", "model"}
    assert (tmp_path / "runs" / "y" / "fold01-seed3" / "metrics.json").exists()


@pytest.mark.parametrize("text,message", [
    ("cache: x.h5\nlerning_rate: 0.1\nepochs: 1\n", "unknown config keys ['lerning_rate']"),
    ("cache: x.h5\nepochs: ten\n", "epochs: expected int or null, got 'ten'"),
    ("cache: x.h5\nseeds: [1, 1]\n", "--seeds lists 1 more than once"),
    ("cache: [x.h5\n", "is not valid YAML"),
    ("- 1\n- 2\n", "must hold a mapping"),
])
def test_bad_config_files_are_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = invoke(["--config", path, "--runs-dir", tmp_path / "runs"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "bad.yaml" in lines[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_config_and_resume_exclude_each_other(runs):
    folder, seeded, _, _ = runs
    result = invoke(["--resume", seeded, "--config", seeded / "config.json"])
    assert result.exit_code == 2 and "--config" in result.stderr


# ------------------------------------------------------------------ TensorBoard
def test_tensorboard_without_the_package_says_how_to_install_it(cache_path, tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    result = invoke(["--cache", cache_path, "--runs-dir", tmp_path / "runs", "--tensorboard", "--folds", "1"])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("--tensorboard needs the tensorboard package, which is not installed: "
                                          "pip install 'swrr[tb]' (or pip install tensorboard)")
    assert not (tmp_path / "runs").exists()


def test_tensorboard_scalars_mirror_the_csv_log(cache_path, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = run(tiny_config(cache_path, tmp_path, name="tb", folds=[1], epochs=2, seeds=[0], tensorboard=True))
    events = EventAccumulator(str(run_dir / "tb" / "fold01-seed0"))
    events.Reload()
    log = pd.read_csv(run_dir / "fold01-seed0" / "log.csv")
    tags = set(events.Tags()["scalars"])
    assert {"lr", "train/loss", "train/acc", "test/loss", "test/wa", "test/ua", "test/f1"} <= tags
    for column, tag in (("lr", "lr"), ("train_loss", "train/loss"), ("test_ua", "test/ua")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx(log[column].tolist(), rel=1e-6)
