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
    with pytest.raises(CompareError, match="different tasks"):
        load_runs([tmp_path / "a", _hand_run(tmp_path / "c", "t2", "fp1")])
