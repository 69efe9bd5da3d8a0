"""CPU threads (swrr.threads): the training thread rule, where it is recorded, and the console
scripts' passive OpenMP waiting, set before torch loads (real subprocesses)."""
import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

from swrr.threads import SMALL_RECURRENT_STEP, recurrent_step_work, training_threads
from swrr.train.config import TrainConfig, resolve

from test_train import _meta

REPO = Path(__file__).resolve().parents[1]


def test_a_small_head_trains_on_one_thread_and_the_paper_head_on_torchs_default():
    assert recurrent_step_work(8, 64) == 8 * 64 * 256 == 131_072  # the demo preset: batch 8, LSTM 64
    assert recurrent_step_work(32, 384) == 18_874_368  # the paper's head at batch 32
    assert training_threads(8, 64) == 1
    assert training_threads(32, 384) is None
    assert training_threads(32, 88) == 1 and training_threads(32, 89) is None  # 991,232 vs 1,013,888
    assert recurrent_step_work(32, 88) < SMALL_RECURRENT_STEP < recurrent_step_work(32, 89)


def test_the_rule_fills_only_a_missing_threads_and_is_resolved_into_the_config():
    demo = resolve(TrainConfig(cache="x"), _meta("demo"), "split")  # preset: batch 8, lstm_hidden 64
    assert (demo.batch_size, demo.model["lstm_hidden"], demo.threads) == (8, 64, 1)
    assert resolve(TrainConfig(cache="x", threads=2), _meta("demo"), "split").threads == 2  # --threads wins
    assert resolve(TrainConfig(cache="x"), _meta("iemocap"), "split").threads is None  # paper head
    small = resolve(TrainConfig(cache="x", model={"lstm_hidden": 16}), _meta("iemocap"), "split")
    assert small.threads == 1
    assert json.loads(json.dumps(demo.to_dict()))["threads"] == 1  # what config.json records


CHILD = """
import os, sys
from swrr import entry
assert "torch" not in sys.modules, "importing swrr.entry loaded torch"
entry.wait_passively()
import torch
print(os.environ.get("OMP_WAIT_POLICY"))
"""


def _child(env_policy=None):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy:
        env["OMP_WAIT_POLICY"] = env_policy
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_entry_points_make_openmp_wait_passively_before_torch_loads_and_keep_a_users_choice():
    assert _child() == "PASSIVE"
    assert _child("ACTIVE") == "ACTIVE"
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    scripts = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].strip().splitlines())
    assert set(scripts) == {"swrr-extract", "swrr-train", "swrr-predict", "swrr-export", "swrr-compare",
                            "swrr-evaluate"}
    assert all(target.startswith("swrr.entry:") for target in scripts.values())
    for stage in ("extract", "train", "predict"):  # python -m swrr.<stage> goes through it too
        assert f"from swrr.entry import {stage}" in (REPO / stage / "__main__.py").read_text()


def test_swrr_train_help_runs_through_the_entry_point_and_explains_the_thread_rule():
    done = subprocess.run([sys.executable, "-m", "swrr.train", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 for a small head" in " ".join(done.stdout.split())
