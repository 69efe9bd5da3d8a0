"""The run folder contract (swrr_core/rundir.py) and the trainer's layers above it: unit names,
what a run folder holds, fold training without files, the one-process entry under torchrun, and
swrr-train's defaults taken from TrainConfig."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from swrr import rundir
from swrr.bundle import find_bundle
from swrr.rundir import RunFolder, parse_unit_name, unit_name
from swrr.train.cli import main
from swrr.train.config import DEFAULTS, TrainConfig, TrainError
from swrr.train.data import make_source
from swrr.train.launch import run as launch_run
from swrr.train.loop import EpochBudget, fit_fold
from swrr.train.runner import prepare, run
from test_train import cache_path, reference, tiny_config  # noqa: F401 (fixtures)


def test_unit_names_round_trip_and_other_names_are_not_units():
    assert unit_name(3) == "fold03" and unit_name(3, 2) == "fold03-seed2" and unit_name(12, 0) == "fold12-seed0"
    assert parse_unit_name("fold03") == (3, None) and parse_unit_name("fold03-seed2") == (3, 2)
    for other in ("fold", "fold3x", "folder", "fold03-seed", "fold03-seed2.partial", "tb", "model"):
        assert parse_unit_name(other) is None, other


def test_units_are_listed_by_name_and_strays_are_left_out(tmp_path):
    for name in ("fold02", "fold01-seed1", "fold01-seed0", "folder", "tb", "fold10"):
        (tmp_path / name).mkdir()
    (tmp_path / "fold03").write_text("a file, not a unit")
    units = RunFolder(tmp_path).units()
    assert [u.path.name for u in units] == ["fold01-seed0", "fold01-seed1", "fold02", "fold10"]
    assert [(u.fold, u.seed) for u in units] == [(1, 0), (1, 1), (2, None), (10, None)]
    assert units[0].tensorboard == tmp_path / "tb" / "fold01-seed0"
    assert RunFolder(tmp_path / "missing").units() == []


def test_a_finished_run_is_what_the_contract_describes(reference):
    folder = RunFolder(reference)
    assert not folder.is_incomplete() and folder.summary.exists() and folder.results.exists()
    config = folder.read_config()
    assert [u.fold for u in folder.units()] == [f["number"] for f in config["folds"]] == [1, 2]
    for unit in folder.units():
        for path in (unit.last_checkpoint, unit.best_checkpoint, unit.log_csv, unit.log_jsonl, unit.predictions,
                     unit.metrics):
            assert path.is_file(), path
        assert unit.finished() and unit.read_result()["fold"] == unit.fold
        assert unit.epochs_logged() == config["train"]["epochs"]
    assert find_bundle(reference, fold=2) == folder.unit(2).bundle  # predict's and export's lookup


def test_a_folder_that_is_no_run_is_refused_in_one_line(tmp_path):
    with pytest.raises(rundir.RunFolderError, match="is not a run folder"):
        RunFolder(tmp_path).read_config()
    (tmp_path / rundir.CONFIG).write_text("{not json")
    with pytest.raises(rundir.RunFolderError, match="is not valid JSON"):
        RunFolder(tmp_path).read_config()


def test_numbered_run_folders_skip_the_taken_names(tmp_path):
    first = rundir.numbered_run_folder(tmp_path, "demo-split")
    first.create("Continue it with: swrr-train --resume x")
    second = rundir.numbered_run_folder(tmp_path, "demo-split")
    assert (first.path.name, second.path.name) == ("demo-split", "demo-split-2")
    assert first.is_incomplete() and "has not finished" in first.incomplete_marker.read_text()
    first.mark_complete()
    assert not first.is_incomplete()


class MemoryStore:
    """fit_fold's store without files: what a writer would persist, kept in memory."""

    def __init__(self):
        self.epochs, self.selected, self.closed = [], None, False

    def saved_state(self):
        return None

    def epoch_done(self, state):
        self.epochs.append(state["epoch"])

    def epochs_done(self):
        self.closed = True

    def select(self, model_state, epoch):
        self.selected = ({k: v.clone() for k, v in model_state.items()}, epoch)

    def selected_model(self):
        return self.selected[0]


def test_the_fold_algorithm_writes_nothing_and_gives_the_written_units_numbers(reference, cache_path, tmp_path,
                                                                              monkeypatch):
    """fit_fold with a store in memory: no file appears, and its result is the one train_fold
    wrote into the reference run's fold02/metrics.json (the same algorithm, bit for bit on CPU)."""
    monkeypatch.chdir(tmp_path)
    plan = prepare(tiny_config(cache_path, tmp_path / "runs"))
    job = plan.jobs[1]
    job.fold_dir = str(tmp_path / "never-written")
    store = MemoryStore()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference run (threads=1)
    try:
        outcome = fit_fold(job, make_source(plan.cache, plan.device, False, 0), plan.device, EpochBudget(None), store)
    finally:
        torch.set_num_threads(threads)
    assert list(tmp_path.iterdir()) == []  # prepare and the algorithm wrote nothing at all
    assert store.epochs == [1, 2, 3] and store.closed and store.selected[1] == 3  # last epoch selected
    written = RunFolder(reference).unit(2).read_result()
    assert outcome.result["metrics"] == written["metrics"]
    assert outcome.result["selected_epoch"] == written["selected_epoch"] == 3
    assert len(outcome.outputs) == written["sizes"]["test"] == len(outcome.test_ids)


def test_the_one_process_run_refuses_to_run_as_a_rank(cache_path, tmp_path, monkeypatch):
    """Every rank calling runner.run would train the whole run into one folder: refused before
    anything is written; train.launch is the entry under torchrun."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(TrainError, match="one rank of a torchrun launch.*swrr.train.launch"):
        run(tiny_config(cache_path, tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_launch_at_world_size_one_is_the_one_process_run(reference, cache_path, tmp_path):
    launched = launch_run(tiny_config(cache_path, tmp_path, name="launched"))
    assert [u.read_result()["metrics"] for u in RunFolder(launched).units()] == \
        [u.read_result()["metrics"] for u in RunFolder(reference).units()]


def test_swrr_train_defaults_are_the_train_config_defaults():
    """Each option named after a TrainConfig field defaults to that field's default (written once),
    and --help shows it."""
    context = main.make_context("swrr-train", [])  # the values when no option is typed
    given = {name: value for name, value in context.params.items() if name in DEFAULTS}
    assert len(given) >= 25
    assert given == {name: DEFAULTS[name] for name in given}
    assert replace(TrainConfig(cache="x"), **given) == TrainConfig(cache="x")
    help_text = main.get_help(context)
    assert "--beta2 FLOAT" in help_text and f"[default: {DEFAULTS['beta2']}]" in help_text


def test_the_run_folder_names_live_only_in_the_contract():
    """No module outside swrr_core/rundir.py joins a run folder's file names onto a path, globs for
    units or builds a unit's name (messages and docs aside)."""
    repo = Path(__file__).resolve().parents[1]
    files = ("metrics.json", "last.pt", "best.pt", "log.jsonl", "log.csv", "predictions.csv", "attention.npy",
             "summary.csv", "results.json", "config.json", "ablations.csv", "INCOMPLETE", "RANK-FAILED", "tb")
    names = (*(f'/ "{name}"' for name in files), '"fold*', 'f"fold{', '"INCOMPLETE"', '"RANK-FAILED"')
    offenders = []
    for folder in ("swrr_core", "train", "predict", "extract"):
        for path in (repo / folder).rglob("*.py"):
            if path.name == "rundir.py":
                continue
            text = path.read_text()
            offenders += [f"{path.relative_to(repo)}: {name}" for name in names if name in text]
    assert not offenders, offenders
