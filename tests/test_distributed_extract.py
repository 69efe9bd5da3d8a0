"""Distributed extraction with real processes: `torchrun` (torch.distributed.run) launches 2 gloo
ranks on the CPU with the tiny encoders; no rank is mocked. Each test is a few small launches.

- equality: the 2-rank cache equals a single-process one, dataset for dataset (fp32);
- a rank SIGKILLed mid-way, then the same command again: it resumes and ends equal;
- a failing rank stops both with one line naming it; the written shards are kept, and a relaunch
  with another world size (1 process) finishes them: handled, ends equal.
"""
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import write_wav
from test_extract import assert_same_cache

from swrr.extract.batching import plan_batches
from swrr.extract.distributed import deal_batches
from swrr.extract.pipeline import ExtractConfig
from swrr.extract.runner import run_extraction
from swrr.cache import partial_path, shard_partials

REPO = Path(__file__).resolve().parents[1]
# 16 clips of 0.3-0.9 s; at 1.2 s per batch the plan has 8 batches of 1-3 rows
SECONDS = [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.5, 0.45, 0.4, 0.4, 0.35, 0.3, 0.3]
BATCH_SECONDS = 1.2
WORDS = ["good morning", "leave me alone", "thank you", "stop it now", "fine", "no", "see you", "why"]

# Every rank (and the single-process reference) runs this entry point: the worktree first on the
# import path, then optional faults injected into this real process, then the real CLI.
ENTRY = r"""
import os, signal, sys
sys.path.insert(0, REPO_PATH)
stage = sys.argv.pop(1)
rank = os.environ.get("RANK", "0")
if os.environ.get("SWRR_TEST_KILL_RANK") == rank and stage == "extract":  # SIGKILL before the Nth batch write
    from swrr import cache
    real_write, calls = cache.CacheWriter.write, []
    def write(self, *args):
        if len(calls) == int(os.environ["SWRR_TEST_KILL_AFTER"]):
            os.kill(os.getpid(), signal.SIGKILL)
        calls.append(1)
        return real_write(self, *args)
    cache.CacheWriter.write = write
if os.environ.get("SWRR_TEST_KILL_RANK") == rank and stage == "train":  # SIGKILL before the Nth checkpoint
    from swrr.train import checkpoint
    real_save, saves = checkpoint.save, []
    def save(*args, **kwargs):
        if len(saves) == int(os.environ["SWRR_TEST_KILL_AFTER"]):
            os.kill(os.getpid(), signal.SIGKILL)
        saves.append(1)
        return real_save(*args, **kwargs)
    checkpoint.save = save
if os.environ.get("SWRR_TEST_BREAK"):  # decoding this utterance fails although its header was fine
    from swrr.extract import featurizer
    from swrr.extract.audio import AudioError
    real_load = featurizer.load_audio
    def broken(utt, *args, **kwargs):
        if utt.name == os.environ["SWRR_TEST_BREAK"]:
            raise AudioError(utt.audio_path, "truncated or corrupt header", "unexpected end of data")
        return real_load(utt, *args, **kwargs)
    featurizer.load_audio = broken
if os.environ.get("SWRR_TEST_BREAK_FOLD"):  # this fold's training fails at once, on whichever rank has it
    from swrr.train import runner
    from swrr.train.config import TrainError
    real_train = runner.train_fold
    def failing(job, *args, **kwargs):
        if job.fold.number == int(os.environ["SWRR_TEST_BREAK_FOLD"]):
            raise TrainError(f"fold {job.fold.number}: injected failure")
        return real_train(job, *args, **kwargs)
    runner.train_fold = failing
if stage == "extract":
    from swrr.extract.cli import main
else:
    from swrr.train.cli import main
main()
"""


def entry_script(folder: Path) -> Path:
    path = folder / "swrr_entry.py"
    path.write_text(ENTRY.replace("REPO_PATH", repr(str(REPO))))
    return path


def launch(entry: Path, args, nproc: int = 2, **env) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N entry ...` (nproc 1: the plain single process)."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}  # torchrun gives each rank one thread too
    environ.pop("WORLD_SIZE", None)
    runner = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
              if nproc > 1 else [sys.executable])
    return subprocess.run(runner + [str(entry), *map(str, args)], capture_output=True, text=True, env=environ,
                          timeout=300)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(manifest path, entry script, reference cache made by one process with one thread, as each rank)."""
    root = tmp_path_factory.mktemp("clips")
    lines = ["path,text,label"]
    for i, seconds in enumerate(SECONDS):
        write_wav(root / f"c{i:02d}.wav", seconds=seconds, freq=140.0 + 30 * i)
        lines.append(f"c{i:02d}.wav,{WORDS[i % len(WORDS)]},{'calm' if i % 2 else 'angry'}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    reference = root / "reference.h5"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_extraction(ExtractConfig(dataset="manifest", root=root / "manifest.csv", out=reference, encoders="tiny",
                                     device="cpu", dtype="float32", batch_seconds=BATCH_SECONDS, num_workers=0,
                                     progress=False))
    finally:
        torch.set_num_threads(threads)
    return root / "manifest.csv", entry_script(root), reference


def extract_args(manifest: Path, out: Path):
    return ["extract", "--dataset", "manifest", "--root", manifest, "--out", out, "--encoders", "tiny",
            "--device", "cpu", "--dtype", "float32", "--batch-seconds", BATCH_SECONDS, "--workers", "0"]


def rank_of_each_row():
    """Which rank encodes each row in a fresh 2-rank run (the plan and deal are deterministic)."""
    plan = plan_batches([int(round(s * 16000)) for s in SECONDS], 16000, BATCH_SECONDS)
    shares, _ = deal_batches(plan.batches, plan.lengths, 2)
    owner = np.full(len(SECONDS), -1)
    for rank, share in enumerate(shares):
        for i in share:
            owner[plan.batches[i]] = rank
    return owner, plan, shares


def done_rows(part: Path) -> int:
    with h5py.File(part, "r") as h5:
        return int(h5["done"][:].sum())


def test_two_ranks_write_the_same_cache_as_one_process(corpus, tmp_path):
    manifest, entry, reference = corpus
    out = tmp_path / "two.h5"
    result = launch(entry, extract_args(manifest, out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_cache(out, reference)
    assert not shard_partials(out) and not partial_path(out).exists()  # the shards are gone once assembled
    assert result.stdout.count(f"wrote {out}") == 1  # rank 0 prints the summary, once
    assert "ranks: 2; padded audio per rank" in result.stdout and "assembly" in result.stdout


def test_the_deal_balances_padded_audio_across_ranks():
    _, plan, shares = rank_of_each_row()
    cost = [len(b) * plan.lengths[b].max() for b in plan.batches]
    loads = [sum(cost[i] for i in share) for share in shares]
    assert sorted(i for share in shares for i in share) == list(range(len(plan)))  # each batch once
    assert max(loads) - min(loads) <= max(cost)  # within one batch of each other
    assert all(share == sorted(share) for share in shares)  # each rank in plan order, longest first


def test_a_killed_rank_then_the_same_command_resumes_and_ends_equal(corpus, tmp_path):
    manifest, entry, reference = corpus
    out = tmp_path / "killed.h5"
    killed = launch(entry, extract_args(manifest, out), SWRR_TEST_KILL_RANK="1", SWRR_TEST_KILL_AFTER="2")
    assert killed.returncode != 0 and not out.exists()
    shard = partial_path(out.with_name(out.name + ".rank-1-of-2"))
    owner, _, _ = rank_of_each_row()
    assert 0 < done_rows(shard) < (owner == 1).sum()  # rank 1 died half way through its share
    kept = sum(done_rows(p) for p in shard_partials(out))
    result = launch(entry, extract_args(manifest, out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{kept} kept from an interrupted run" in result.stdout
    assert_same_cache(out, reference)
    assert not shard_partials(out)


def test_a_failing_rank_stops_all_ranks_with_one_line_and_keeps_the_shards(corpus, tmp_path):
    manifest, entry, reference = corpus
    out = tmp_path / "failing.h5"
    owner, _, _ = rank_of_each_row()
    bad = f"c{int(np.flatnonzero(owner == 1)[-1]):02d}"  # in rank 1's last batch: rank 0 is done by then
    result = launch(entry, extract_args(manifest, out), SWRR_TEST_BREAK=bad)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("swrr-extract: error:")]
    assert len(ours) == 1, result.stderr[-3000:]
    assert "rank 1 of 2 failed: " in ours[0] and f"{bad}.wav: truncated or corrupt header" in ours[0]
    assert "relaunch the same command to resume" in ours[0]
    assert "Traceback" not in result.stderr.split("swrr-extract: error:")[0]  # no rank died with a traceback
    kept = sum(done_rows(p) for p in shard_partials(out))
    assert kept >= done_rows(partial_path(out.with_name(out.name + ".rank-1-of-2"))) > 0  # batches before the bad one
    # fixed, and relaunched with another world size (one process): the shards of 2 ranks are finished
    result = launch(entry, extract_args(manifest, out), nproc=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{kept} kept from an interrupted run" in result.stdout
    assert_same_cache(out, reference)
    assert not shard_partials(out)


def _imported_modules(path: Path) -> set:
    """Every module `path` imports, at the top or inside functions (absolute names)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_ranks_layer_sits_over_the_pipeline_and_predict_only_over_the_featurizer():
    """extract/pipeline.py never imports the ranks layer, the entry above both or the CLI (the
    circle cli -> pipeline -> distributed -> pipeline is gone); the featurizer, shared with predict,
    imports neither the pipeline nor what sits on it, and predict reaches extraction only through it."""
    above = {"swrr.extract.distributed", "swrr.extract.runner", "swrr.extract.cli"}
    assert not _imported_modules(REPO / "extract" / "pipeline.py") & above
    assert not _imported_modules(REPO / "extract" / "featurizer.py") & (above | {"swrr.extract.pipeline"})
    assert "swrr.extract.pipeline" in _imported_modules(REPO / "extract" / "distributed.py")
    for module in (REPO / "predict").glob("*.py"):
        assert not {name for name in _imported_modules(module) if name.startswith("swrr.extract.pipeline")}, module
