"""Reliability of the training stage on small synthetic caches and the tiny head.

Hard kills (SIGKILL of a subprocess) at four points of a run, resumed to the uninterrupted result;
checkpoints from another fold or cache refused; non-finite losses and outputs stopped with a clear
message; pickle-bearing checkpoints refused without running them; damaged or unusable caches through
the swrr-train CLI. Companions: tests/test_train.py (a stop between epochs, a checkpoint from another
lr, a plain pickle, NaN features everywhere) and tests/test_train_cli.py (a timed SIGKILL, missing,
foreign, truncated and unfinished caches). The catalogue with outcomes is docs/RELIABILITY.md.
"""
import ast
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from swrr.cache import SCHEMA_VERSION
from test_train import cache_path, fold_metrics, make_cache, reference, tiny_config, weights  # noqa: F401 (fixtures)
from test_train_cli import invoke
from swrr.train.config import TrainError
from swrr.train.loop import RunInterrupted
from swrr.rundir import INCOMPLETE
from swrr.train.runner import resume, run

REPO = Path(__file__).resolve().parents[1]
RESULT_FILES = ("summary.csv", "results.json", "metrics.json", "ablations.csv")  # a fold is done with its metrics.json

# ---------------------------------------------------------------------------------- hard kills
# The child starts the same run as test_train's `reference` (folds 1-2, 3 epochs of 5 steps) with
# hooks that SIGKILL the process at one point.
KILL_CHILD = r"""
import os, signal, sys
repo, point, cache, runs = sys.argv[1:5]
sys.path[:0] = [repo, os.path.join(repo, "tests")]
import torch
from test_train import tiny_config
from swrr import rundir
from swrr.train import report
from swrr.train.runner import run

def die():
    os.kill(os.getpid(), signal.SIGKILL)

steps, saves = [], []
real_step, real_save, real_write_json = torch.optim.Adam.step, torch.save, rundir.write_json

def step(self, *args, **kwargs):
    steps.append(1)
    if point == "mid-epoch" and len(steps) == 7:  # fold 1, epoch 2, its second step
        die()
    return real_step(self, *args, **kwargs)

def save(obj, path, *args, **kwargs):
    real_save(obj, path, *args, **kwargs)
    if point == "checkpoint-write" and str(path).endswith("last.pt.tmp"):
        saves.append(1)
        if len(saves) == 2:  # fold 1, epoch 2: half of the new checkpoint on disk, as a kill mid-write leaves it
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 2])
            die()

def write_json(path, data):
    if point == "fold-result" and path.name == "metrics.json":
        die()  # fold 1 trained to the end (last.pt, best.pt), its result not written
    real_write_json(path, data)

def plot_confusion(*args, **kwargs):
    die()  # both folds done, the run's reports being written

torch.optim.Adam.step, torch.save, rundir.write_json = step, save, write_json
if point == "reports":
    report.plot_confusion = plot_confusion
run(tiny_config(cache, runs, name="killed"))
print("the kill hook never fired")
"""
KILL_POINTS = {  # point -> epoch in fold01/last.pt after the kill, fold folders with a metrics.json
    "mid-epoch": (1, []), "checkpoint-write": (1, []), "fold-result": (3, []), "reports": (3, ["fold01", "fold02"])}


def result_files(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name in RESULT_FILES)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_then_resume_gives_the_uninterrupted_result(point, cache_path, reference, tmp_path):
    child = subprocess.run([sys.executable, "-c", KILL_CHILD, str(REPO), point, str(cache_path), str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr[-3000:]
    killed = tmp_path / "killed"
    epoch, finished = KILL_POINTS[point]
    assert (killed / INCOMPLETE).exists()
    assert result_files(killed) == [f"{fold}/metrics.json" for fold in finished]  # no run result, no half fold
    assert torch.load(killed / "fold01" / "last.pt", weights_only=True)["epoch"] == epoch
    if point == "checkpoint-write":
        assert (killed / "fold01" / "last.pt.tmp").exists()  # the cut file is left aside, never read

    resume(killed)
    assert not (killed / INCOMPLETE).exists()
    assert fold_metrics(killed) == fold_metrics(reference)
    for fold in ("fold01", "fold02"):
        assert (killed / fold / "log.jsonl").read_text() == (reference / fold / "log.jsonl").read_text()
        for a, b in zip(weights(killed / fold / "last.pt").values(), weights(reference / fold / "last.pt").values()):
            assert torch.equal(a, b)
    assert pd.read_csv(killed / "summary.csv").equals(pd.read_csv(reference / "summary.csv"))


# ---------------------------------------------------------------------------------- refused checkpoints
@pytest.fixture
def stopped(cache_path, tmp_path):
    """A run stopped after fold 1's first epoch (as if killed): its folder."""
    with pytest.raises(RunInterrupted):
        run(tiny_config(cache_path, tmp_path, name="stopped", stop_after_epochs=1))
    return tmp_path / "stopped"


def test_a_checkpoint_of_another_fold_or_a_resume_on_another_cache_is_refused(stopped, reference, tmp_path):
    other_cache = make_cache(tmp_path / "other.h5", seed=1)
    result = invoke(["--resume", stopped, "--cache", other_cache])
    assert result.exit_code == 2 and "is not the cache" in result.stderr and "pass the original" in result.stderr

    shutil.copy(reference / "fold02" / "last.pt", stopped / "fold01" / "last.pt")
    result = invoke(["--resume", stopped])
    assert result.exit_code == 2, result.output
    assert "was made by a different run (differs in: fold)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result_files(stopped) == []


class CodeRunningPickle:
    """Unpickling it runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(stopped, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"format": "swrr-train-checkpoint", "version": 1, "model": CodeRunningPickle(marker)},
               stopped / "fold01" / "last.pt")
    result = invoke(["--resume", stopped])
    assert result.exit_code == 2, result.output
    assert "last.pt cannot be loaded safely as a checkpoint" in result.stderr
    assert "delete it to start that fold over" in result.stderr
    assert not marker.exists()
    # control: the same file loaded without weights_only does run the command
    torch.load(stopped / "fold01" / "last.pt", weights_only=False)
    assert marker.exists()


def test_every_torch_load_in_the_package_passes_weights_only_true():
    calls = []
    for folder in ("swrr_core", "extract", "train", "benchmarks", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                    safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                               for k in node.keywords)
                    calls.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    assert calls, "no torch.load call found: the scan is broken"
    assert [where for where, safe in calls if not safe] == []


# ---------------------------------------------------------------------------------- bad caches via the CLI
TINY_RUN = ["--protocol", "loso-speaker", "--batch-size", "8", "--lr", "2e-3", "--lstm-hidden", "8",
            "--model-set", "cnn_channels=[4,8]", "--threads", "1", "--no-progress"]
ONE_FOLD = [*TINY_RUN, "--folds", "1", "--epochs", "1"]


def damage(path: Path, case: str) -> None:
    """Row 0 is a fold-1 test row (speaker S1F), row 1 a fold-1 training row."""
    with h5py.File(path, "r+") as h5:
        if case.startswith("corrupted bytes"):
            offset = h5["audio"].id.get_chunk_info(2).byte_offset
        elif case == "other schema version":
            h5.attrs["schema_version"] = SCHEMA_VERSION + 1
        elif case == "shapes that disagree with the attributes":
            h5.attrs["text_dim"] = int(h5.attrs["text_dim"]) + 1
        elif case == "marked incomplete":
            h5.attrs["complete"] = False
        elif case == "empty text (text_len 0)":
            h5["text_len"][5] = 0
        elif case == "audio_len beyond max_frames":
            h5["audio_len"][5] = h5["audio"].shape[1] + 1
        elif case == "NaN features in a test row":
            h5["audio"][0] = np.full(h5["audio"].shape[1:], np.nan, dtype=h5["audio"].dtype)
        elif case == "inf features in a training row":
            h5["text"][1] = np.full(h5["text"].shape[1:], np.inf, dtype=h5["text"].dtype)
    if case.startswith("corrupted bytes"):
        raw = bytearray(path.read_bytes())
        raw[offset + 10: offset + 20] = bytes(10 * [0xAB])
        path.write_bytes(bytes(raw))


BAD_CACHES = [  # every embedding is read once (nonfinite_rows) before the run folder is made
    ("corrupted bytes", "reading the embeddings failed .* the file is damaged: re-extract it"),
    ("corrupted bytes, --stream", "reading the embeddings failed .* the file is damaged: re-extract it"),
    ("other schema version", f"has cache schema version {SCHEMA_VERSION + 1}.* re-extract it"),
    ("shapes that disagree with the attributes", "dataset 'text' has shape .* re-extract it"),
    ("marked incomplete", "is incomplete .* rerun swrr-extract"),
    ("empty text (text_len 0)", r"1 rows have text_len outside \[1, 6\] \(e.g. u005: 0\)"),
    ("audio_len beyond max_frames", r"1 rows have audio_len outside \[1, 35\] \(e.g. u005: 36\)"),
    ("NaN features in a test row", r"1 of 48 rows hold non-finite \(NaN/inf\) features \(u000\); re-extract"),
    ("inf features in a training row", r"1 of 48 rows hold non-finite \(NaN/inf\) features \(u001\); re-extract"),
]


@pytest.mark.parametrize("case, message", BAD_CACHES, ids=[c[0] for c in BAD_CACHES])
def test_an_unusable_cache_is_one_line_exit_2_and_no_run_folder(case, message, cache_path, tmp_path):
    path = tmp_path / "cache.h5"
    shutil.copy(cache_path, path)
    damage(path, case)
    runs = tmp_path / "runs"
    stream = ["--stream", "--workers", "2"] if case.endswith("--stream") else []  # checked in chunks there too
    result = invoke(["--cache", path, "--runs-dir", runs, *ONE_FOLD, *stream])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("swrr-train: error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert __import__("re").search(message, result.stderr), result.stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_a_diverging_learning_rate_stops_with_advice(cache_path, tmp_path):
    with pytest.raises(TrainError, match=r"loss became nan in fold 1 epoch 1: training diverged, stopping. "
                                         r"Try a lower --lr \(now 1e\+30\)"):
        run(tiny_config(cache_path, tmp_path, name="diverged", folds=[1], epochs=1, lr=1e30))
    assert (tmp_path / "diverged" / INCOMPLETE).exists() and result_files(tmp_path / "diverged") == []


# ---------------------------------------------------------------------------------- one process per run folder
# The child runs (or resumes) test_train's tiny run and, at its 7th optimizer step (fold 1, epoch 2),
# writes a marker and sleeps: a live swrr-train holding its run folder.
HOLD_CHILD = r"""
import os, sys, time
repo, mode, cache, runs, marker = sys.argv[1:6]
sys.path[:0] = [repo, os.path.join(repo, "tests")]
import torch
from test_train import tiny_config
from swrr.train.runner import resume, run

steps, real_step = [], torch.optim.Adam.step

def step(self, *args, **kwargs):
    steps.append(1)
    if len(steps) == 7:
        open(marker, "w").close()
        time.sleep(300)
    return real_step(self, *args, **kwargs)

torch.optim.Adam.step = step
run(tiny_config(cache, runs, name="held")) if mode == "run" else resume(os.path.join(runs, "held"))
"""


def hold(mode: str, cache_path: Path, runs: Path) -> subprocess.Popen:
    """A real process that holds the run `runs/held` (training, or resuming it), once it is under way."""
    marker = runs / f"{mode}.holding"
    child = subprocess.Popen([sys.executable, "-c", HOLD_CHILD, str(REPO), mode, str(cache_path), str(runs),
                              str(marker)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), child.stderr.read()[-3000:] if child.poll() is not None else "no marker"
    return child


def refused_while_held(child: subprocess.Popen, run_dir: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    result = invoke(["--resume", run_dir])
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"swrr-train: error: another swrr-train (pid {child.pid}) is writing {run_dir}; wait "
                             f"for it to finish or stop it (the lock is {run_dir}.lock)\n")
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # nothing touched
    child.kill()
    child.wait()


def test_a_resume_of_a_run_in_progress_is_refused_and_the_run_stays_resumable(cache_path, reference, tmp_path):
    run_dir = tmp_path / "held"
    refused_while_held(hold("run", cache_path, tmp_path), run_dir)  # the run itself is going
    refused_while_held(hold("resume", cache_path, tmp_path), run_dir)  # another --resume is going
    # the lock died with its holders: the run resumes to the uninterrupted result
    resume(run_dir)
    assert fold_metrics(run_dir) == fold_metrics(reference) and not (run_dir / INCOMPLETE).exists()


# ---------------------------------------------------------------------------------- fold processes die with swrr-train
def descendants(pid: int):
    """Live (not zombie) processes below `pid`, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state != "Z":
                parents[int(entry.name)] = int(ppid)
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids):
    live = set()
    for pid in pids:
        try:
            if (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                live.add(pid)
        except OSError:
            pass
    return live


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_fold_process_outlives_a_killed_parallel_run(sig, cache_path, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "swrr.train.cli", "--cache", str(cache_path), "--runs-dir", str(tmp_path),
                             "--name", "parallel", *TINY_RUN, "--folds", "1,2", "--epochs", "200",
                             "--parallel-folds", "2", "--device", "cpu"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    logs = [tmp_path / "parallel" / f"fold0{k}" / "log.jsonl" for k in (1, 2)]
    deadline = time.time() + 240
    while not all(log.exists() for log in logs) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    children = descendants(proc.pid)
    assert len(children) >= 2  # the two fold processes (and multiprocessing's resource tracker)
    proc.send_signal(sig)
    assert proc.wait() == -sig
    deadline = time.time() + 10
    while alive(children) and time.time() < deadline:
        time.sleep(0.1)
    assert alive(children) == set(), "fold processes outlived their parent by 10 s"


# ---------------------------------------------------------------------------------- damaged fold results on --resume
def test_a_damaged_metrics_json_or_attention_npy_is_evaluated_again_on_resume(reference, tmp_path, caplog):
    run_dir = tmp_path / "damaged"
    shutil.copytree(reference, run_dir)
    (run_dir / "fold01" / "metrics.json").write_text('{"fold": 1, "metr')  # cut mid-write
    attention = (run_dir / "fold02" / "attention.npy").read_bytes()
    (run_dir / "fold02" / "attention.npy").write_bytes(attention[:100])
    with caplog.at_level(logging.WARNING, logger="swrr.train"):  # the library warns through logging
        resume(run_dir)
    out = caplog.text
    assert f"{run_dir / 'fold01'}: a result file is damaged (JSONDecodeError" in out
    assert f"{run_dir / 'fold02'}: a result file is damaged (" in out
    assert fold_metrics(run_dir) == fold_metrics(reference)
    for fold in ("fold01", "fold02"):
        assert np.array_equal(np.load(run_dir / fold / "attention.npy"), np.load(reference / fold / "attention.npy"))
        assert (run_dir / fold / "log.jsonl").read_text() == (reference / fold / "log.jsonl").read_text()  # not retrained
    assert pd.read_csv(run_dir / "summary.csv").equals(pd.read_csv(reference / "summary.csv"))
