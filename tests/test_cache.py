"""The cache contract: round trip, resume, refusals and damaged files."""
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import to_old_layout
from swrr import cache as cache_mod
from swrr.cache import (SCHEMA_VERSION, CacheError, CacheMeta, CacheWriter, FeatureCache, RowInfo,
                             partial_path)

REPO = Path(__file__).resolve().parents[1]
N_ROWS, FRAMES, TOKENS, DIM_A, DIM_T = 6, 7, 4, 8, 5


def make_meta(**overrides):
    kwargs = dict(dataset="toy", task="classification", label_names=["a", "b", "c"], audio_encoder="enc-a",
                  text_encoder="enc-t", audio_dim=DIM_A, text_dim=DIM_T, max_frames=FRAMES, max_tokens=TOKENS,
                  config={"layer": -1, "batch": "x"})
    kwargs.update(overrides)
    return CacheMeta(**kwargs)


def make_rows():
    return [RowInfo(utt_id=f"utt{i}", label=i % 3, speaker=f"spk{i % 2}", session="s1",
                    split="train" if i < 4 else "test", transcript=f"héllo {i}", source=f"/x/{i}.wav")
            for i in range(N_ROWS)]


def features(rows, seed=0):
    """Deterministic per-row features with row-dependent lengths."""
    rng = np.random.default_rng(seed)
    a_len = np.array([FRAMES - (r % 3) for r in rows])
    t_len = np.array([TOKENS - (r % 2) for r in rows])
    audio = rng.standard_normal((len(rows), FRAMES, DIM_A)).astype(np.float32)
    text = rng.standard_normal((len(rows), TOKENS, DIM_T)).astype(np.float32)
    for i in range(len(rows)):
        audio[i, a_len[i]:] = 0
        text[i, t_len[i]:] = 0
    return audio, a_len, text, t_len


def write_all(path, meta=None, batches=((0, 1, 2), (3, 4, 5))):
    writer = CacheWriter.open(path, meta or make_meta(), make_rows())
    for rows in batches:
        writer.write(list(rows), *features(list(rows), seed=rows[0]))
    return writer.finalize()


def test_round_trip_keeps_values_lengths_and_columns(tmp_path):
    path = write_all(tmp_path / "toy.h5")
    assert not partial_path(path).exists()
    cache = FeatureCache(path)
    assert len(cache) == N_ROWS
    assert cache.meta.label_names == ["a", "b", "c"] and cache.meta.config == {"layer": -1, "batch": "x"}
    assert list(cache.transcript) == [f"héllo {i}" for i in range(N_ROWS)]
    assert list(cache.split).count("test") == 2
    data = cache.load()
    assert data["audio"].shape == (N_ROWS, FRAMES, DIM_A) and data["audio"].dtype == np.float16
    expected_audio, expected_alen, _, expected_tlen = features([3, 4, 5], seed=3)
    np.testing.assert_array_equal(data["audio_len"][3:], expected_alen)
    np.testing.assert_array_equal(data["text_len"][3:], expected_tlen)
    np.testing.assert_allclose(data["audio"][3:].astype(np.float32), expected_audio, atol=2e-3)
    np.testing.assert_array_equal(data["label"], [i % 3 for i in range(N_ROWS)])


def test_read_rows_keeps_the_requested_order_and_duplicates(tmp_path):
    cache = FeatureCache(write_all(tmp_path / "toy.h5"))
    everything = cache.load()
    got = cache.read_rows([5, 0, 5, 2])
    np.testing.assert_array_equal(got["audio"], everything["audio"][[5, 0, 5, 2]])
    np.testing.assert_array_equal(got["label"], everything["label"][[5, 0, 5, 2]])


def test_short_rows_are_zero_padded_and_float32_is_kept(tmp_path):
    meta = make_meta(dtype="float32")
    writer = CacheWriter.open(tmp_path / "f32.h5", meta, make_rows())
    writer.write(list(range(N_ROWS)), np.ones((N_ROWS, 3, DIM_A)), [3] * N_ROWS, np.ones((N_ROWS, 2, DIM_T)),
                 [2] * N_ROWS)
    data = FeatureCache(writer.finalize()).load()
    assert data["audio"].dtype == np.float32
    assert (data["audio"][:, 3:] == 0).all() and (data["audio"][:, :3] == 1).all()


def test_too_long_batch_is_refused(tmp_path):
    writer = CacheWriter.open(tmp_path / "toy.h5", make_meta(), make_rows())
    with pytest.raises(CacheError, match="audio batch"):
        writer.write([0], np.ones((1, FRAMES + 1, DIM_A)), [FRAMES], np.ones((1, 2, DIM_T)), [2])


def test_interrupted_write_resumes_to_the_same_file(tmp_path):
    whole = write_all(tmp_path / "whole.h5")
    path = tmp_path / "resumed.h5"
    writer = CacheWriter.open(path, make_meta(), make_rows())
    writer.write([0, 1, 2], *features([0, 1, 2], seed=0))
    writer.close()  # as if killed: the partial file stays, the final path does not exist
    assert not path.exists() and partial_path(path).exists()
    with pytest.raises(CacheError, match="interrupted extraction"):
        FeatureCache(path)
    writer = CacheWriter.open(path, make_meta(), make_rows())
    assert writer.resumed_rows == 3
    np.testing.assert_array_equal(np.flatnonzero(~writer.done_mask()), [3, 4, 5])
    writer.write([3, 4, 5], *features([3, 4, 5], seed=3))
    writer.finalize()
    a, b = FeatureCache(whole).load(), FeatureCache(path).load()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_resume_with_another_config_is_refused_naming_the_keys(tmp_path):
    path = tmp_path / "toy.h5"
    CacheWriter.open(path, make_meta(), make_rows()).close()
    with pytest.raises(CacheError, match="differs in: batch"):
        CacheWriter.open(path, make_meta(config={"layer": -1, "batch": "y"}), make_rows())
    writer = CacheWriter.open(path, make_meta(config={"layer": -1, "batch": "y"}), make_rows(), overwrite=True)
    assert writer.resumed_rows == 0


def test_finalize_refuses_missing_rows(tmp_path):
    writer = CacheWriter.open(tmp_path / "toy.h5", make_meta(), make_rows())
    writer.write([0], *features([0]))
    with pytest.raises(CacheError, match="5 rows are still missing"):
        writer.finalize()
    assert not (tmp_path / "toy.h5").exists()


def test_existing_complete_cache_is_not_overwritten_silently(tmp_path):
    path = write_all(tmp_path / "toy.h5")
    with pytest.raises(CacheError, match="already complete"):
        CacheWriter.open(path, make_meta(), make_rows())
    with pytest.raises(CacheError, match="differs in: layer"):
        CacheWriter.open(path, make_meta(config={"layer": 3, "batch": "x"}), make_rows())
    assert FeatureCache(path).meta.config["layer"] == -1


def test_an_unreadable_partial_file_is_kept_unless_overwrite(tmp_path):
    """A .partial that cannot be reopened may hold finished rows: refused naming the cause, bytes kept."""
    path = tmp_path / "toy.h5"
    damaged = b"\x89HDF\r\n\x1a\n" + b"\0" * 40
    partial_path(path).write_bytes(damaged)
    with pytest.raises(CacheError, match="cannot be reopened, it is damaged .* nothing was deleted: pass --overwrite"):
        CacheWriter.open(path, make_meta(), make_rows())
    assert partial_path(path).read_bytes() == damaged
    writer = CacheWriter.open(path, make_meta(), make_rows(), overwrite=True)
    assert writer.resumed_rows == 0
    writer.close()


def test_a_layout_cut_short_is_never_a_partial_file(tmp_path, monkeypatch):
    """The layout is built in .partial.new and renamed: a kill there leaves no .partial to mistake for rows."""
    path = tmp_path / "toy.h5"

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_create_layout", killed)
    with pytest.raises(KeyboardInterrupt):
        CacheWriter.open(path, make_meta(), make_rows())
    monkeypatch.undo()
    assert not partial_path(path).exists() and (tmp_path / "toy.h5.partial.new").exists()
    writer = CacheWriter.open(path, make_meta(), make_rows())
    assert writer.resumed_rows == 0 and not (tmp_path / "toy.h5.partial.new").exists()
    writer.close()


TRY_LOCK = """
import sys
sys.path.insert(0, sys.argv[1])
from swrr.cache import CacheError, _lock_output
try:
    _lock_output(__import__("pathlib").Path(sys.argv[2]))
except CacheError as exc:
    print(exc)
    sys.exit(2)
"""


def test_the_writer_holds_the_output_lock_until_finalize_or_close(tmp_path):
    """Another process cannot take the output lock while a writer is open (fcntl locks are per process)."""
    path = tmp_path / "toy.h5"

    def other_process():
        return subprocess.run([sys.executable, "-c", TRY_LOCK, str(REPO), str(path)], capture_output=True, text=True)

    writer = CacheWriter.open(path, make_meta(), make_rows())
    refused = other_process()
    assert refused.returncode == 2 and f"another swrr-extract (pid {os.getpid()}) is writing {path}" in refused.stdout
    writer.close()
    assert other_process().returncode == 0
    writer = CacheWriter.open(path, make_meta(), make_rows())
    for rows in ((0, 1, 2), (3, 4, 5)):
        writer.write(list(rows), *features(list(rows), seed=rows[0]))
    assert other_process().returncode == 2
    writer.finalize()
    assert other_process().returncode == 0


def test_only_an_swrr_cache_is_replaced_even_with_overwrite(tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("path,text,label\n")
    with pytest.raises(CacheError, match="is not an swrr feature cache; swrr-extract replaces only its own caches"):
        CacheWriter.open(notes, make_meta(), make_rows(), overwrite=True)
    assert notes.read_text() == "path,text,label\n"
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="not an swrr feature cache"):
        CacheWriter.open(foreign, make_meta(), make_rows(), overwrite=True)
    cache = write_all(tmp_path / "toy.h5")
    writer = CacheWriter.open(cache, make_meta(), make_rows(), overwrite=True)  # an swrr cache is replaced
    writer.close()


def test_a_partial_with_the_same_config_resumes_with_or_without_overwrite(tmp_path):
    """An interrupted --overwrite run over a finished cache: the new config's .partial resumes either way."""
    path = write_all(tmp_path / "toy.h5", meta=make_meta(config={"layer": 0}))
    writer = CacheWriter.open(path, make_meta(), make_rows(), overwrite=True)
    writer.write([0, 1, 2], *features([0, 1, 2], seed=0))
    writer.close()  # interrupted: the old cache is still at the final path
    assert FeatureCache(path).meta.config == {"layer": 0}
    for overwrite in (True, False):
        writer = CacheWriter.open(path, make_meta(), make_rows(), overwrite=overwrite)
        assert writer.resumed_rows == 3
        writer.close()
    writer = CacheWriter.open(path, make_meta(), make_rows())
    writer.write([3, 4, 5], *features([3, 4, 5], seed=3))
    writer.finalize()
    assert FeatureCache(path).meta.config == {"layer": -1, "batch": "x"}


def test_output_folder_that_cannot_be_created_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheError, match="cannot create the output folder"):
        CacheWriter.open(blocker / "toy.h5", make_meta(), make_rows())


def test_not_enough_disk_is_reported_before_any_work(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda _: usage(10, 10, 10))
    with pytest.raises(CacheError, match="needs about 912 bytes but .* has 10 bytes free"):
        CacheWriter.open(tmp_path / "toy.h5", make_meta(), make_rows())
    assert list(tmp_path.iterdir()) == []


def test_missing_file_and_non_hdf5_are_refused(tmp_path):
    with pytest.raises(CacheError, match="no such cache file"):
        FeatureCache(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("hello")
    with pytest.raises(CacheError, match="not an HDF5 file"):
        FeatureCache(junk)


def test_truncated_cache_is_refused(tmp_path):
    path = write_all(tmp_path / "toy.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="damaged|truncated|not an HDF5"):
        FeatureCache(path).load()


def test_corrupted_embedding_bytes_fail_the_checksum(tmp_path):
    path = write_all(tmp_path / "toy.h5")
    with h5py.File(path, "r") as h5:
        offset = h5["audio"].id.get_chunk_info(2).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 10: offset + 20] = bytes(10 * [0xAB])
    path.write_bytes(bytes(raw))
    cache = FeatureCache(path)  # the small columns are intact
    with pytest.raises(CacheError, match="damaged"):
        cache.load()
    with pytest.raises(CacheError, match="damaged"):
        cache.read_rows([2])


def test_foreign_hdf5_other_schema_and_bad_shapes_are_refused(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="not an swrr feature cache"):
        FeatureCache(foreign)

    old = write_all(tmp_path / "old.h5")
    with h5py.File(old, "r+") as h5:
        h5.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(CacheError, match="schema version"):
        FeatureCache(old)

    bad = write_all(tmp_path / "bad.h5")
    with h5py.File(bad, "r+") as h5:
        h5.attrs["audio_dim"] = DIM_A + 1
    with pytest.raises(CacheError, match="'audio' has shape"):
        FeatureCache(bad)


def test_incomplete_marker_is_refused(tmp_path):
    path = write_all(tmp_path / "toy.h5")
    copy = tmp_path / "copy.h5"
    shutil.copy(path, copy)
    with h5py.File(copy, "r+") as h5:
        h5.attrs["complete"] = False
    with pytest.raises(CacheError, match="incomplete"):
        FeatureCache(copy)


def test_reader_reopens_its_file_after_pickling(tmp_path):
    import pickle

    cache = FeatureCache(write_all(tmp_path / "toy.h5"))
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.read_rows([1])["audio"], cache.read_rows([1])["audio"])


@pytest.mark.parametrize("value", ["no", "False", 0, 1])
def test_a_complete_attribute_that_is_not_a_boolean_is_refused(tmp_path, value):
    path = write_all(tmp_path / "toy.h5")
    with h5py.File(path, "r+") as h5:
        h5.attrs["complete"] = value
    with pytest.raises(CacheError, match="attribute 'complete' is .* not a boolean"):
        FeatureCache(path)


@pytest.mark.parametrize("case", ["index out of range", "fewer label_names than classes", "negative index"])
def test_label_indices_outside_label_names_are_refused_on_open(tmp_path, case):
    path = write_all(tmp_path / "toy.h5")
    with h5py.File(path, "r+") as h5:
        if case == "fewer label_names than classes":
            h5.attrs["label_names"] = '["a", "b"]'  # labels use 0, 1, 2
        else:
            h5["label"][3] = 7 if case == "index out of range" else -1
    with pytest.raises(CacheError, match="rows have a label index outside the .* label_names .* utt"):
        FeatureCache(path)


def test_a_missing_cache_says_how_to_make_one(tmp_path):
    with pytest.raises(CacheError, match="no such cache file; make one with: swrr-extract --dataset DATASET"):
        FeatureCache(tmp_path / "missing.h5")


def write_the_old_way(path, version):
    """A cache as schema 1/2 wrote it (conftest.to_old_layout)."""
    path = to_old_layout(write_all(path), version)
    if version == 1:
        with h5py.File(path, "r+") as h5:
            del h5.attrs["source_root"]
    return path


def test_a_schema_1_cache_still_opens(tmp_path):
    path = write_the_old_way(tmp_path / "toy.h5", 1)
    assert FeatureCache(path).meta.source_root == ""


def test_a_schema_2_cache_opens_as_a_one_layer_cache(tmp_path):
    new = FeatureCache(write_all(tmp_path / "new.h5"))
    old = FeatureCache(write_the_old_way(tmp_path / "old.h5", 2))
    assert old.meta.stored_layers("audio") == [-1] == old.meta.stored_layers("text")
    assert old.layers == {"audio": [-1], "text": [-1]}
    for got, want in ((old.load(), new.load()), (old.read_rows([4, 1]), new.read_rows([4, 1]))):
        assert got["audio"].shape == want["audio"].shape and got["audio"].ndim == 3
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    assert len(old.nonfinite_rows()) == 0


LAYERS_A, LAYERS_T = [0, 3, 4, 5], [2, 6]


def layered_features(rows, seed=0):
    """features() with a layer axis: layer j of a row is (j + 1) x its one-layer features."""
    audio, a_len, text, t_len = features(rows, seed)
    stack = lambda x, n: np.stack([(j + 1) * x for j in range(n)], axis=1)
    return stack(audio, len(LAYERS_A)), a_len, stack(text, len(LAYERS_T)), t_len


def test_a_multi_layer_cache_reads_only_the_selected_layers(tmp_path, monkeypatch):
    meta = make_meta(audio_layers=LAYERS_A, text_layers=LAYERS_T)
    writer = CacheWriter.open(tmp_path / "layers.h5", meta, make_rows())
    writer.write(list(range(N_ROWS)), *layered_features(list(range(N_ROWS))))
    cache = FeatureCache(writer.finalize())
    assert cache.meta.stored_layers("audio") == LAYERS_A and cache.meta.stored_layers("text") == LAYERS_T
    audio, _, text, _ = layered_features(list(range(N_ROWS)))
    whole = cache.read_rows([5, 0])
    assert whole["audio"].shape == (2, 4, FRAMES, DIM_A) and whole["text"].shape == (2, 2, TOKENS, DIM_T)
    np.testing.assert_array_equal(whole["audio"], audio[[5, 0]].astype(np.float16))
    cache.select_layers(audio=[1, 3], text=[1])
    assert cache.layers == {"audio": [3, 5], "text": [6]}
    reads = []
    real = h5py.Dataset.read_direct
    monkeypatch.setattr(h5py.Dataset, "read_direct", lambda ds, dest, source_sel=None, dest_sel=None:
                        reads.append((ds.name, source_sel)) or real(ds, dest, source_sel, dest_sel))
    some = cache.read_rows([2])
    np.testing.assert_array_equal(some["audio"], audio[[2]][:, [1, 3]].astype(np.float16))
    np.testing.assert_array_equal(some["text"], text[[2], 1].astype(np.float16))  # one layer: no layer axis
    assert sorted(reads, key=str) == sorted([("/audio", np.s_[2, 1]), ("/audio", np.s_[2, 3]),
                                             ("/text", np.s_[2, 1:2])], key=str)
    np.testing.assert_array_equal(cache.load([3])["audio"], audio[[3]][:, [1, 3]].astype(np.float16))
    with pytest.raises(CacheError, match="outside the 2 stored text layers"):
        cache.select_layers(text=[2])
    with h5py.File(cache.path) as h5:  # the layout: one chunk per row and layer
        assert h5["audio"].chunks == (1, 1, FRAMES, DIM_A) and h5["audio"].shape == (N_ROWS, 4, FRAMES, DIM_A)
    assert cache_mod.estimated_bytes(cache.meta, N_ROWS) == 2 * N_ROWS * (4 * FRAMES * DIM_A + 2 * TOKENS * DIM_T)


def test_a_batch_with_another_number_of_layers_is_refused(tmp_path):
    writer = CacheWriter.open(tmp_path / "layers.h5", make_meta(audio_layers=LAYERS_A), make_rows())
    audio, a_len, text, t_len = layered_features([0])
    with pytest.raises(CacheError, match=r"expected \(B, 4, <= 7, D\)"):
        writer.write([0], audio[:, :3], a_len, text[:, 0], t_len)
    writer.close()
