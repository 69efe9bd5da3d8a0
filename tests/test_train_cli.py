"""`swrr-train` from the command line: help, bad input (one line, exit 2, nothing written),
a run with librosa/soundfile/transformers blocked, and a SIGKILLed run resumed to the same result."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from swrr.cache import CacheMeta, CacheWriter, RowInfo
from test_train import cache_path, fold_metrics, make_cache  # noqa: F401 (cache_path is a fixture)
from swrr.train.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--protocol", "loso-speaker", "--folds", "1,2", "--epochs", "3", "--batch-size", "8", "--lr", "2e-3",
             "--lstm-hidden", "8", "--model-set", "cnn_channels=[4,8]", "--threads", "1", "--seed", "0",
             "--no-progress"]
BLOCKED = ("import sys\n"
           "for name in ('librosa', 'soundfile', 'transformers', 'av'):\n"
           "    sys.modules[name] = None  # any import of them now fails\n"
           "from swrr.train.cli import main\n"
           "main()\n")


def cli_runner():
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()


def invoke(args):
    return cli_runner().invoke(main, [str(a) for a in args])


def swrr_train(*args, **popen):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", BLOCKED, *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.fixture(scope="module")
def blocked_run(cache_path, tmp_path_factory):
    """A whole run through the CLI in a process where librosa, soundfile and transformers cannot load."""
    runs = tmp_path_factory.mktemp("runs")
    proc = swrr_train("--cache", cache_path, "--runs-dir", runs, "--name", "whole", *TINY_ARGS)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err, runs / "whole"


def test_training_needs_no_audio_or_text_libraries(blocked_run):
    code, out, err, run_dir = blocked_run
    assert code == 0, err
    assert (run_dir / "summary.csv").exists() and not (run_dir / "INCOMPLETE").exists()
    lines = out.splitlines()
    assert sum(line.startswith("fold ") for line in lines) == 2  # one line per fold
    assert "RANDOM encoders" in out and all("[random encoders]" in l for l in lines if l.startswith("fold "))


def test_a_sigkilled_run_resumes_to_the_uninterrupted_result(blocked_run, cache_path, tmp_path):
    _, _, _, whole = blocked_run
    proc = swrr_train("--cache", cache_path, "--runs-dir", tmp_path, "--name", "killed", *TINY_ARGS)
    log = tmp_path / "killed" / "fold01" / "log.jsonl"
    deadline = time.time() + 240
    while not (log.exists() and log.read_text().count("\n") >= 1) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    killed = tmp_path / "killed"
    assert (killed / "INCOMPLETE").exists() and not (killed / "summary.csv").exists(), "the run ended before the kill"
    result = invoke(["--resume", killed])
    assert result.exit_code == 0, result.output
    assert fold_metrics(killed) == fold_metrics(whole)
    assert not (killed / "INCOMPLETE").exists()


def test_help_explains_every_option():
    result = invoke(["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split()).replace("- ", "-")  # undo click's wrapping
    for option in ("--device", "--stream", "--workers", "--parallel-folds", "--threads", "--progress/--no-progress",
                   "--cuda-graphs/--no-cuda-graphs", "--cache may name another path to the same cache"):
        assert option in text.split("--resume DIRECTORY")[1].split("--protocol")[0], option  # under --resume
    for param in main.params:
        if not param.hidden and param.name != "help":
            assert param.opts[0] in result.output
            assert param.help, f"{param.opts[0]} has no help text"


def _foreign(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as h5:
        h5["x"] = np.zeros(3)
    return path


def _truncated(tmp_path, cache_path):
    path = tmp_path / "truncated.h5"
    data = Path(cache_path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _interrupted(tmp_path):
    """An extraction that never finished: only <path>.partial exists."""
    meta = CacheMeta(dataset="x", task="classification", label_names=["a", "b"], audio_encoder="a",
                     text_encoder="t", audio_dim=4, text_dim=4, max_frames=5, max_tokens=3)
    writer = CacheWriter.open(tmp_path / "partial.h5", meta, [RowInfo("u0", 0), RowInfo("u1", 1)])
    writer.write([0], np.ones((1, 5, 4), np.float32), [5], np.ones((1, 3, 4), np.float32), [3])
    writer.close()
    return tmp_path / "partial.h5"


@pytest.mark.parametrize("case,message", [
    ("missing", "no such cache file"),
    ("foreign", "not an swrr feature cache"),
    ("truncated", "truncated"),
    ("interrupted", "interrupted extraction"),
    ("loso-on-regression", "makes no sense.*regression"),
    ("split-without-splits", "needs 'train' and 'test' rows"),
    ("unknown-ablation", "Invalid value for '--ablation'"),
    ("fold-out-of-range", "out of range"),
    ("select-valid-without-valid", "has no validation rows"),
    ("no-cache", "give --cache"),
    ("resume-nothing", "not a run folder"),
    ("resume-with-new-lr", "cannot be given with it: --lr"),
    ("bad-device", "is not a device name"),
    ("resume-with-name", r"cannot be given with it: --name$"),
    ("resume-with-runs-dir", r"cannot be given with it: --runs-dir$"),
    ("beta1-2", r"--beta1 must be in \[0, 1\), got 2.0"),
    ("beta2-negative", r"--beta2 must be in \[0, 1\), got -1.0"),
    ("weight-decay-negative", r"--weight-decay must be a number >= 0, got -1.0"),
    ("lr-decay-factor-negative", r"--lr-decay-factor must be in \(0, 1\], got -1.0"),
    ("lr-decay-factor-0", r"--lr-decay-factor must be in \(0, 1\], got 0.0"),
    ("lr-inf", r"--lr must be a number > 0, got inf"),
    ("name-escapes", r"--name must be a plain folder name, without path separators or '..', got '../../x'"),
    ("name-dotdot", r"--name must be a plain folder name.*got '..'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, message, tmp_path, cache_path):
    runs = tmp_path / "runs"
    args = {
        "missing": ["--cache", tmp_path / "nope.h5"],
        "foreign": ["--cache", _foreign(tmp_path)],
        "truncated": ["--cache", _truncated(tmp_path, cache_path)],
        "interrupted": ["--cache", _interrupted(tmp_path)],
        "loso-on-regression": ["--cache", make_cache(tmp_path / "r.h5", n=8, task="regression"),
                               "--protocol", "loso-speaker"],
        "split-without-splits": ["--cache", make_cache(tmp_path / "s.h5", n=8, splits=False), "--protocol", "split"],
        "unknown-ablation": ["--cache", cache_path, "--ablation", "no-such-thing"],
        "fold-out-of-range": ["--cache", cache_path, "--protocol", "loso-speaker", "--folds", "9"],
        "select-valid-without-valid": ["--cache", cache_path, "--protocol", "loso-speaker", "--select", "valid"],
        "no-cache": [],
        "resume-nothing": ["--resume", tmp_path],
        "resume-with-new-lr": ["--resume", tmp_path, "--lr", "0.1"],
        "bad-device": ["--cache", cache_path, "--device", "gpu9"],
        "resume-with-name": ["--resume", tmp_path, "--name", "x"],
        "resume-with-runs-dir": ["--resume", tmp_path, "--runs-dir", tmp_path / "elsewhere"],
        "beta1-2": ["--cache", cache_path, "--beta1", "2"],
        "beta2-negative": ["--cache", cache_path, "--beta2", "-1"],
        "weight-decay-negative": ["--cache", cache_path, "--weight-decay", "-1"],
        "lr-decay-factor-negative": ["--cache", cache_path, "--lr-decay-factor", "-1"],
        "lr-decay-factor-0": ["--cache", cache_path, "--lr-decay-factor", "0"],
        "lr-inf": ["--cache", cache_path, "--lr", "inf"],
        "name-escapes": ["--cache", cache_path, "--name", "../../x"],
        "name-dotdot": ["--cache", cache_path, "--name", ".."],
    }[case]
    result = invoke(args if "--resume" in args else [*args, "--runs-dir", runs])  # --resume names its folder
    stderr = result.stderr
    assert result.exit_code == 2, result.output
    assert stderr.startswith("swrr-train: error: ") and len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr and __import__("re").search(message, stderr), stderr
    assert not runs.exists() or not any(runs.iterdir())
