"""Distributed training with real processes: `torchrun` launches 2 gloo ranks on the CPU that
share the fold units of one run; no rank is mocked. Tiny model, 4 LOSO folds, 2 epochs.

- equality: each fold's metrics equal a sequential single-process run's, bit for bit, and rank 0
  writes the one run folder's reports;
- a rank SIGKILLed mid-fold, then `--resume` in one process (another world size): it ends equal;
- a unit failing on one rank stops both ranks with one line naming the rank; finished units stay.
"""
import json

import pytest
from test_distributed_extract import entry_script, launch
from test_train import make_cache, tiny_config

from swrr.ranks import deal
from swrr.train.runner import prepare, run

FOLDS = (1, 2, 3, 4)


def train_args(cache, runs, name):
    return ["train", "--cache", cache, "--protocol", "loso-speaker", "--epochs", 2, "--batch-size", 8,
            "--lr", 2e-3, "--model-set", "lstm_hidden=8", "--model-set", "cnn_channels=[4,8]", "--threads", 1,
            "--seed", 0, "--device", "cpu", "--no-progress", "--runs-dir", runs, "--name", name]


def metrics(run_dir):
    return {k: json.loads((run_dir / f"fold{k:02d}" / "metrics.json").read_text())["metrics"] for k in FOLDS}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """(cache, entry script, runs folder, the sequential reference run of all 4 folds)."""
    folder = tmp_path_factory.mktemp("dist-train")
    cache = make_cache(folder / "synthetic.h5", random_encoders=True)
    reference = run(tiny_config(cache, folder / "runs", name="sequential", folds=None, epochs=2))
    return cache, entry_script(folder), folder / "runs", reference


def test_two_ranks_share_the_folds_and_equal_a_sequential_run_bit_for_bit(setting):
    cache, entry, runs, reference = setting
    result = launch(entry, train_args(cache, runs, "two-ranks"))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = runs / "two-ranks"
    assert metrics(run_dir) == metrics(reference)  # exact float equality, fold by fold
    plan = prepare(tiny_config(cache, runs, folds=None, epochs=2))
    shares, _ = deal([float(len(job.fold.train)) for job in plan.jobs], 2)
    for rank, share in enumerate(shares):  # each rank trained its dealt folds
        assert share and f"rank {rank} of 2: units {', '.join(f'fold{i + 1:02d}' for i in share)}" in result.stdout
    assert (run_dir / "summary.csv").exists() and not (run_dir / "INCOMPLETE").exists()
    assert (run_dir / "summary.csv").read_text().splitlines()[1:] == \
        (reference / "summary.csv").read_text().splitlines()[1:]


def test_a_killed_rank_then_resume_in_one_process_ends_equal(setting):
    cache, entry, runs, reference = setting
    killed = launch(entry, train_args(cache, runs, "killed"), SWRR_TEST_KILL_RANK="1", SWRR_TEST_KILL_AFTER="1")
    assert killed.returncode != 0
    run_dir = runs / "killed"
    assert (run_dir / "INCOMPLETE").exists() and not (run_dir / "summary.csv").exists()
    folds = [run_dir / f"fold{k:02d}" for k in FOLDS]
    assert any((f / "last.pt").exists() and not (f / "metrics.json").exists() for f in folds)  # killed mid-fold
    result = launch(entry, ["train", "--resume", run_dir, "--no-progress"], nproc=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert metrics(run_dir) == metrics(reference)
    assert not (run_dir / "INCOMPLETE").exists()


def test_a_failing_unit_stops_both_ranks_with_one_line_naming_the_rank(setting):
    cache, entry, runs, _ = setting
    plan = prepare(tiny_config(cache, runs, folds=None, epochs=2))
    shares, _ = deal([float(len(job.fold.train)) for job in plan.jobs], 2)
    rank, fold = 1, plan.jobs[shares[1][0]].fold.number  # rank 1's first unit
    result = launch(entry, train_args(cache, runs, "failing"), SWRR_TEST_BREAK_FOLD=str(fold))
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if "error: " in line and "Traceback" not in line]
    assert len(ours) == 1, result.stderr[-3000:]
    assert ours[0].endswith(f"error: rank {rank} of 2 failed: fold {fold}: injected failure; finished units are "
                            f"kept; fix the cause and continue with: swrr-train --resume {runs / 'failing'}")
    run_dir = runs / "failing"
    assert (run_dir / "INCOMPLETE").exists() and not (run_dir / "summary.csv").exists()
    assert not (run_dir / f"fold{fold:02d}" / "metrics.json").exists()


def test_two_ranks_deal_fold_by_seed_units_and_equal_a_sequential_seeded_run(setting):
    cache, entry, runs, _ = setting
    sequential = run(tiny_config(cache, runs, name="seeds-sequential", folds=[1, 2], seeds=[0, 1], epochs=2))
    args = train_args(cache, runs, "seeds-two-ranks")
    at = args.index("--seed")
    args[at:at + 2] = ["--seeds", "0,1", "--folds", "1,2"]
    result = launch(entry, args)
    assert result.returncode == 0, result.stderr[-3000:]
    units = [f"fold{fold:02d}-seed{seed}" for seed in (0, 1) for fold in (1, 2)]
    for unit in units:  # every (fold, seed) unit in its own folder, equal to the sequential run's
        ours = json.loads((runs / "seeds-two-ranks" / unit / "metrics.json").read_text())
        theirs = json.loads((sequential / unit / "metrics.json").read_text())
        assert (ours["fold"], ours["seed"]) == (theirs["fold"], theirs["seed"])
        assert ours["metrics"] == theirs["metrics"]
    assert sum(f"rank {rank} of 2: units " in result.stdout for rank in (0, 1)) == 2
    assert (runs / "seeds-two-ranks" / "summary.csv").read_text().splitlines()[1:] == \
        (sequential / "summary.csv").read_text().splitlines()[1:]
