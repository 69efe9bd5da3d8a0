"""Issue 18, training side: the cache's task and feature digests, --resume and swrr-compare on
changed data, config contradictions, atomic comparison outputs."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from swrr.cache import FEATURE_DIGEST_ATTR, ROW_DIGEST, CacheWriter, FeatureCache, RowInfo
from swrr.train.compare import CompareError, load_runs
from swrr.train.config import TrainError
from swrr.train.loop import RunInterrupted
from swrr.train.runner import _cache_fingerprint, resume, run
from tests.test_train import make_cache, tiny_config


def rewritten(source: Path, out: Path, labels=None, split=None, audio_offset: float = 0.0) -> Path:
    """`source` extracted again into `out` with other labels / splits / features, same ids and config."""
    with FeatureCache(source) as cache:
        data = cache.load()
        rows = [RowInfo(utt_id=cache.utt_id[i], label=int(cache.label[i] if labels is None else labels[i]),
                        speaker=cache.speaker[i], session=cache.session[i],
                        split=cache.split[i] if split is None else split[i]) for i in range(len(cache))]
        writer = CacheWriter.open(out, cache.meta, rows)
    writer.write(np.arange(len(rows)), data["audio"] + np.float16(audio_offset), data["audio_len"], data["text"],
                 data["text_len"])
    return writer.finalize()


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """(original, labels permuted with train/test swapped, features changed) — same ids and config."""
    root = tmp_path_factory.mktemp("digests")
    original = make_cache(root / "a.h5")
    with FeatureCache(original) as cache:
        labels = np.random.default_rng(1).permutation(cache.label)
        split = np.array([{"train": "test", "test": "train"}.get(s, s) for s in cache.split], dtype=object)
    relabelled = rewritten(original, root / "relabelled.h5", labels=labels, split=split)
    other_features = rewritten(original, root / "features.h5", audio_offset=0.5)
    return original, relabelled, other_features


def test_the_digests_see_labels_splits_and_features(caches):
    original, relabelled, other_features = (FeatureCache(p) for p in caches)
    # the old fingerprint (meta + ids) could not tell these apart
    assert _cache_fingerprint(original) == _cache_fingerprint(relabelled) == _cache_fingerprint(other_features)
    assert original.task_digest() != relabelled.task_digest()
    assert original.feature_digest() == relabelled.feature_digest()  # the same features
    assert original.task_digest() == other_features.task_digest()
    assert original.feature_digest() != other_features.feature_digest()


def test_a_cache_without_stored_digests_computes_the_same_one(caches, tmp_path):
    original = caches[0]
    stored = FeatureCache(original).feature_digest()
    old = tmp_path / "old.h5"
    old.write_bytes(original.read_bytes())
    with h5py.File(old, "r+") as h5:  # as a cache written before issue 18
        del h5[ROW_DIGEST]
        del h5.attrs[FEATURE_DIGEST_ATTR]
    with FeatureCache(old) as cache:
        assert FEATURE_DIGEST_ATTR not in cache._file().attrs
        assert cache.feature_digest(chunk_rows=7) == stored


def test_resume_refuses_a_cache_with_other_labels_or_features(caches, tmp_path):
    original, relabelled, other_features = caches
    with pytest.raises(RunInterrupted):
        run(tiny_config(original, tmp_path, name="r", folds=[1], stop_after_epochs=1))
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["cache"]
    assert saved["task_digest"] == FeatureCache(original).task_digest()
    with pytest.raises(TrainError, match="labels, splits, speakers or sessions differ"):
        resume(tmp_path / "r", cache=str(relabelled))
    with pytest.raises(TrainError, match="its features differ"):
        resume(tmp_path / "r", cache=str(other_features))
    copy = tmp_path / "copy.h5"  # another path to the same cache is fine
    copy.write_bytes(original.read_bytes())
    resume(tmp_path / "r", cache=str(copy))
    assert (tmp_path / "r" / "summary.csv").exists()


def _hand_run(path: Path, task_digest, fingerprint="abc"):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "train": {"protocol": "loso-speaker", "seed": 0},
        "cache": {"fingerprint": fingerprint, "task_digest": task_digest, "task": "classification"},
        "folds": [{"number": f, "name": f"S{f}", "test": 10} for f in (1, 2)]}))
    for fold in (1, 2):
        (path / f"fold{fold:02d}").mkdir()
        (path / f"fold{fold:02d}" / "metrics.json").write_text(json.dumps({"fold": fold, "metrics": {"ua": 0.5}}))
    return path


def test_compare_pairs_by_the_task_digest_only(tmp_path):
    # other encoders (another fingerprint), same rows and labels: comparable
    load_runs([_hand_run(tmp_path / "a", "t1", "fp1"), _hand_run(tmp_path / "b", "t1", "fp2")])
    with pytest.raises(CompareError, match="different rows or labels"):
        load_runs([tmp_path / "a", _hand_run(tmp_path / "c", "t2", "fp1")])


def _train_cli(args):
    from click.testing import CliRunner

    from swrr.train.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr.strip().splitlines()


def test_seed_and_seeds_contradictions_are_refused(caches, tmp_path):
    import yaml

    original = caches[0]
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"cache": str(original), "seed": 3, "seeds": [0, 1]}))
    code, lines = _train_cli(["--config", both, "--runs-dir", tmp_path / "runs"])
    assert code == 2 and len(lines) == 1 and "both seed (3) and seeds ([0, 1])" in lines[0], lines
    seeded = tmp_path / "seeded.json"  # what a seeded run's config.json holds
    seeded.write_text(json.dumps({"train": {"cache": str(original), "seed": 0, "seeds": [0, 1]}}))
    code, lines = _train_cli(["--config", seeded, "--seed", "5", "--runs-dir", tmp_path / "runs"])
    assert code == 2 and len(lines) == 1 and "--seed 5 contradicts seeds [0, 1]" in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_yaml_floats_written_without_a_dot_are_numbers(caches, tmp_path):
    from swrr.train.config import load_config_file

    path = tmp_path / "lr.yaml"
    path.write_text(f"cache: {caches[0]}\nlr: 1e-3\nweight_decay: 5E-5\nepochs: 2\n")
    assert load_config_file(path)["lr"] == 1e-3 and load_config_file(path)["weight_decay"] == 5e-5
    path.write_text(f"cache: {caches[0]}\nlr: fast\n")
    with pytest.raises(TrainError, match="lr: expected float or null, got 'fast'"):
        load_config_file(path)


def test_an_over_long_name_is_refused_before_any_folder(caches, tmp_path):
    with pytest.raises(TrainError, match="name is 252 bytes long"):
        run(tiny_config(caches[0], tmp_path / "runs", name="n" * 252))
    assert not (tmp_path / "runs").exists()


def test_compare_outputs_are_all_or_nothing_and_never_replace_another_comparison(tmp_path, monkeypatch):
    import swrr.train.compare as compare
    from swrr.train.compare import run_compare

    a, b = _hand_run(tmp_path / "x" / "A", "t"), _hand_run(tmp_path / "x" / "B", "t")
    with pytest.raises(CompareError, match="--resamples must be >= 100"):
        run_compare([a, b], resamples=2)
    assert not list((tmp_path / "x").glob("compare*"))
    _, out = run_compare([a, b], resamples=100)
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.json", "compare.md", "compare.png"]
    run_compare([a, b], resamples=100)  # the same comparison again replaces it
    # other runs with the same folder names would get the same default folder: refused
    a2, b2 = _hand_run(tmp_path / "y" / "A", "t"), _hand_run(tmp_path / "y" / "B", "t")
    with pytest.raises(CompareError, match="holds the comparison of other runs"):
        run_compare([a2, b2], out=out, resamples=100)
    with pytest.raises(CompareError, match="not a comparison folder"):
        run_compare([a2, b2], out=tmp_path / "y", resamples=100)
    # a full disk: nothing half written, the earlier comparison stays whole
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full = tmp_path / "full"
    real_markdown = compare.markdown

    def markdown_to_full_disk(rows, runs):  # the folder's second file lands on a full device (/dev/full)
        (full.with_name("full.partial") / "compare.md").symlink_to("/dev/full")
        return real_markdown(rows, runs)

    monkeypatch.setattr(compare, "markdown", markdown_to_full_disk)
    with pytest.raises(CompareError, match="nothing was written"):
        run_compare([a, b], out=full, resamples=100)
    assert not full.exists() and not (tmp_path / "full.partial").exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_full_disk_while_checkpointing_is_one_line_and_resumes(caches, tmp_path):
    from swrr.rundir import INCOMPLETE

    original = caches[0]
    with pytest.raises(RunInterrupted):
        run(tiny_config(original, tmp_path, name="full", folds=[1], stop_after_epochs=1))
    fold = tmp_path / "full" / "fold01"
    kept = (fold / "last.pt").read_bytes()
    (fold / "last.pt.tmp").symlink_to("/dev/full")  # the next checkpoint lands on a full device
    code, lines = _train_cli(["--resume", tmp_path / "full"])
    assert code == 2 and "cannot write the checkpoint" in lines[-1] and "--resume" in lines[-1], lines
    assert not (fold / "last.pt.tmp").exists() and not (fold / "last.pt.tmp").is_symlink()
    assert (fold / "last.pt").read_bytes() == kept and (tmp_path / "full" / INCOMPLETE).exists()
    resume(tmp_path / "full")  # space freed: the run finishes
    assert not (tmp_path / "full" / INCOMPLETE).exists()


def test_an_assembled_shard_leaves_no_lock_file_unless_it_is_held(tmp_path):
    import subprocess
    import sys

    from swrr.cache import discard_shard, shard_path
    from swrr.guards import lock_path
    from tests.test_cache import make_meta, make_rows

    out = tmp_path / "c.h5"
    for rank in (0, 1):
        CacheWriter.open(shard_path(out, rank, 2), make_meta(), make_rows()).close()
    partials = sorted(tmp_path.glob("c.h5.rank-*.partial"))
    assert len(partials) == 2 and lock_path(shard_path(out, 1, 2)).exists()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from swrr.guards import OutputLock; "
                               "OutputLock(sys.argv[1], 'x').acquire(); print('held', flush=True); time.sleep(60)",
                               str(shard_path(out, 1, 2))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for partial in partials:
            discard_shard(partial)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5.rank-1-of-2.lock"]  # rank 1's is held
    finally:
        holder.kill()
        holder.wait()
