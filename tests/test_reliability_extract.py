"""Reliability of the extraction stage, end to end with the tiny random encoders on small data.

Hard kills (SIGKILL of a subprocess) at four points of the cache's life, disk full before and
during the run, outputs that cannot be written, and awkward dataset trees through the whole
pipeline. Companions: tests/test_extract.py (Ctrl-C and a kill between batches, config refusal,
CLI mistakes), tests/test_cache.py (corrupted, truncated, foreign, other-schema and mis-shaped
caches), tests/test_readers.py and tests/test_audio.py (the same trees reader by reader).
The catalogue with outcomes is docs/RELIABILITY.md.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_wav
from test_extract import assert_same_cache

from swrr.extract import featurizer
from swrr.extract.encoders import AudioEncoder
from swrr.extract.batching import plan_batches
from swrr.extract.cli import main
from swrr.extract.pipeline import ExtractConfig
from swrr.extract.runner import run_extraction
from swrr import cache as cache_mod
from swrr.cache import CacheError, open_cache, partial_path
from swrr.cli import console_output
from swrr.model import SWRR, SWRRConfig

REPO = Path(__file__).resolve().parents[1]
DiskUsage = namedtuple("DiskUsage", "total used free")
# name, seconds (16 kHz mono), label, transcript: 8 rows in 4 planned batches of 2, 2, 3 and 1 rows
CLIPS = [("a", 0.7, "calm", "good morning"), ("b", 0.7, "angry", "leave me alone"),
         ("c", 0.6, "calm", "thank you"), ("d", 0.6, "angry", "stop it now"),
         ("e", 0.5, "calm", "fine"), ("f", 0.5, "angry", "no"), ("g", 0.4, "calm", "see you"),
         ("h", 0.35, "angry", "why")]
BATCH_SECONDS = 1.5


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    lines = ["path,text,label"]
    for i, (name, seconds, label, text) in enumerate(CLIPS):
        write_wav(root / f"{name}.wav", seconds=seconds, freq=150.0 + 40 * i)
        lines.append(f"{name}.wav,{text},{label}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def settings(root, out, **kwargs) -> dict:
    values = dict(dataset="manifest", root=str(root), out=str(out), encoders="tiny", device="cpu",
                  batch_seconds=BATCH_SECONDS, num_workers=0, progress=False)
    values.update(kwargs)
    return values


def config(root, out, **kwargs) -> ExtractConfig:
    values = settings(root, out, **kwargs)
    return ExtractConfig(**{**values, "root": Path(values["root"]), "out": Path(values["out"])})


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must end up equal to."""
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    run_extraction(config(clips, out))
    return out


def first_batch_rows() -> int:
    samples = [int(round(seconds * 16000)) for _, seconds, _, _ in CLIPS]
    plan = plan_batches(samples, 16000, BATCH_SECONDS)
    assert [len(b) for b in plan.batches] == [2, 2, 3, 1]  # the kill points below rely on it
    return len(plan.batches[0])


# ---------------------------------------------------------------------------------- hard kills
# The child runs a normal extraction with hooks that SIGKILL the process at one point.
KILL_CHILD = r"""
import json, os, signal, sys
repo, point, values = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, repo)
from pathlib import Path
import h5py
from swrr.extract import pipeline, runner
from swrr import cache

def die():
    os.kill(os.getpid(), signal.SIGKILL)

writes = []  # CacheWriter.write calls so far (one per planned batch)
real_write, real_create, real_setitem = cache.CacheWriter.write, h5py.Group.create_dataset, h5py.Dataset.__setitem__
real_replace = os.replace

def write(self, *args):
    writes.append(1)
    return real_write(self, *args)

def create_dataset(self, name, *args, **kwargs):
    if point == "layout" and name == "label":  # the embedding datasets exist, labels/ids/done not yet
        die()
    return real_create(self, name, *args, **kwargs)

def setitem(self, key, value):
    if point == "done-mask" and self.name == "/done" and len(writes) == 2:
        die()  # the second batch's embeddings are written and flushed, its done flags not yet
    real_setitem(self, key, value)
    if point == "row-write" and self.name == "/text" and len(writes) == 2:
        die()  # inside the second batch's HDF5 write: one row's embeddings in, the rest not, no flush

def replace(src, dst):
    if point == "rename" and not str(dst).endswith(".partial"):
        die()  # the file is complete and closed, the rename to the final path not done
    return real_replace(src, dst)

cache.CacheWriter.write, h5py.Group.create_dataset, h5py.Dataset.__setitem__ = write, create_dataset, setitem
os.replace = replace
values["root"], values["out"] = Path(values["root"]), Path(values["out"])
runner.run_extraction(pipeline.ExtractConfig(**values))
print("the kill hook never fired")
"""
KILL_POINTS = ["layout", "row-write", "done-mask", "rename"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_then_rerun_gives_the_uninterrupted_file(point, clips, reference, tmp_path):
    out = tmp_path / "killed.h5"
    child = subprocess.run([sys.executable, "-c", KILL_CHILD, str(REPO), point, json.dumps(settings(clips, out))],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr[-3000:]

    assert not out.exists()
    if point == "layout":  # the layout is built in .partial.new: no .partial that could be taken for rows
        assert not partial_path(out).exists() and Path(f"{out}.partial.new").exists()
    else:  # readers refuse the final path and point at the partial file
        assert partial_path(out).exists()
        with pytest.raises(CacheError, match="interrupted extraction is at .partial"):
            open_cache(out)
    if point == "rename":  # killed after the close: the partial file is already whole
        assert_same_cache(partial_path(out), reference)
    elif point != "layout":  # even opened by its own name, the half-written file is refused
        with pytest.raises(CacheError, match="incomplete|damaged|not an swrr feature cache|lacks the datasets"):
            open_cache(partial_path(out))

    summary = run_extraction(config(clips, out))
    expected_resumed = {"layout": 0, "row-write": first_batch_rows(), "done-mask": first_batch_rows(),
                        "rename": len(CLIPS)}[point]
    assert summary.resumed_rows == expected_resumed
    assert not partial_path(out).exists() and not Path(f"{out}.partial.new").exists()
    assert_same_cache(out, reference)


# ---------------------------------------------------------------------------------- output problems
def _cli(args):
    return CliRunner().invoke(main, args)


def _stderr(result) -> str:
    return result.stderr if hasattr(result, "stderr") else result.output


def error_line(result) -> str:
    """The one `swrr-extract: error:` line of a failed run (exit code 2, no traceback)."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in _stderr(result).split("\n") if line.startswith("swrr-extract: error: ")]
    assert len(lines) == 1, _stderr(result)
    return lines[0]


@pytest.fixture
def no_encoding(monkeypatch):
    """Fails the test if any batch reaches the encoders."""
    def encode_batch(*args, **kwargs):
        raise AssertionError("a batch was encoded although the output could not be written")

    monkeypatch.setattr(featurizer, "encode_batch", encode_batch)


BAD_OUTPUTS = [
    ("disk full", "1.0 kB free; free some space or choose another --out"),
    ("read-only folder", "the output folder is not writable; choose another --out"),
    ("out is a folder", "is a folder, not a cache file"),
    ("out is a folder, --overwrite", "is a folder, not a cache file"),
]


@pytest.mark.parametrize("case, message", BAD_OUTPUTS, ids=[c[0] for c in BAD_OUTPUTS])
def test_unusable_output_is_one_line_before_any_encoding(case, message, clips, tmp_path, monkeypatch, no_encoding):
    out = tmp_path / "cache" / "x.h5"
    args = ["--dataset", "manifest", "--root", str(clips), "--encoders", "tiny", "--device", "cpu", "--workers", "0"]
    if case == "disk full":
        monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda _: DiskUsage(10**6, 10**6 - 1000, 1000))
    elif case == "read-only folder":  # root ignores chmod, so the permission check itself is faked
        real_access = os.access
        monkeypatch.setattr(cache_mod.os, "access",
                            lambda path, mode: False if Path(path) == out.parent else real_access(path, mode))
    else:
        out.mkdir(parents=True)
        if case.endswith("--overwrite"):
            args.append("--overwrite")
    result = _cli(args + ["--out", str(out)])
    assert message in error_line(result) and len(_stderr(result).strip().splitlines()) == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written


def test_disk_full_during_the_run_keeps_the_written_rows_and_resumes(clips, reference, tmp_path, monkeypatch):
    """ENOSPC from HDF5 in the middle of the run: one line, the finished batches stay, a rerun completes."""
    out = tmp_path / "full.h5"
    real_write, real_setitem, writes = cache_mod.CacheWriter.write, h5py.Dataset.__setitem__, []

    def write(self, *args):
        writes.append(1)
        return real_write(self, *args)

    def setitem(self, key, value):
        if self.name == "/audio" and len(writes) == 2:
            raise OSError(errno.ENOSPC, "Can't write data (file write failed: No space left on device)")
        real_setitem(self, key, value)

    monkeypatch.setattr(cache_mod.CacheWriter, "write", write)
    monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)
    result = _cli(["--dataset", "manifest", "--root", str(clips), "--out", str(out), "--encoders", "tiny",
                   "--device", "cpu", "--workers", "0", "--batch-seconds", str(BATCH_SECONDS)])
    monkeypatch.undo()
    error = error_line(result)  # the progress bar shares stderr
    assert "full.h5.partial: writing rows failed" in error and "No space left on device" in error
    assert "rerun the same command to resume" in error
    assert not out.exists() and partial_path(out).exists()

    summary = run_extraction(config(clips, out))
    assert summary.resumed_rows == first_batch_rows()
    assert_same_cache(out, reference)


# ---------------------------------------------------------------------------------- awkward datasets
def tiny_head(meta) -> SWRR:
    torch.manual_seed(0)
    return SWRR(SWRRConfig(audio_dim=meta.audio_dim, text_dim=meta.text_dim, max_frames=meta.max_frames,
                           max_tokens=meta.max_tokens, num_outputs=max(1, len(meta.label_names)), lstm_hidden=8,
                           cnn_channels=(4, 8))).eval()


def head_outputs(path) -> np.ndarray:
    """The SWRR head (tiny, untrained) over every row of a cache: the rows are all usable inputs."""
    cache = open_cache(path)
    batch = {k: torch.from_numpy(v) for k, v in cache.load().items()}
    with torch.no_grad():
        return tiny_head(cache.meta)(batch["audio"], batch["audio_len"], batch["text"], batch["text_len"]).numpy()


def test_iemocap_tree_with_stray_bad_and_long_files_end_to_end(iemocap_tree, tmp_path):
    """The miniature release (stray macOS/Categorical files, a wav missing, labels fru/sur/fea/xxx, a dialog
    without transcriptions, a transcript line missing, an empty transcript) plus: a transcript byte that is
    not UTF-8, an empty wav and a 35 s wav."""
    root = iemocap_tree.root
    transcript = root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    transcript.write_bytes(transcript.read_bytes().replace(b"Excuse me.", b"Excuse me, caf\xe9."))
    (root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F001.wav").write_bytes(b"")
    write_wav(root / "Session2" / "sentences" / "wav" / "Ses02M_impro03" / "Ses02M_impro03_M000.wav", seconds=35.0)
    out = tmp_path / "iemocap.h5"
    summary = run_extraction(ExtractConfig(dataset="iemocap", root=root, out=out, encoders="tiny", device="cpu",
                                           num_workers=0, progress=False))

    labels = dict(iemocap_tree.expected["labels"])
    del labels["Ses01F_impro01_F001"]
    assert summary.skipped == dict(sorted({**iemocap_tree.expected["skipped"], "empty file (0 bytes)": 1}.items()))
    assert summary.rows == len(labels) == 7
    cache = open_cache(out)
    ids = list(cache.utt_id)
    assert ids == sorted(labels)
    assert [cache.meta.label_names[i] for i in cache.label] == [labels[u] for u in ids]
    assert list(cache.speaker) == [u[:5] + u.rsplit("_", 1)[1][0] for u in ids]
    row = {u: i for i, u in enumerate(ids)}
    assert cache.transcript[row["Ses01F_impro01_F000"]] == "Excuse me, caf\ufffd."  # undecodable byte replaced
    assert cache.transcript[row["Ses01M_script01_1_F001"]] == ""
    assert cache.text_len[row["Ses01M_script01_1_F001"]] == 2  # [CLS] [SEP]
    assert cache.audio_len[row["Ses02M_impro03_M000"]] == 255  # 35 s cut to the first 5.1 s
    assert {int(n) for i, n in enumerate(cache.audio_len) if ids[i] != "Ses02M_impro03_M000"} == {14}  # 0.3 s
    outputs = head_outputs(out)
    assert outputs.shape == (7, 4) and np.isfinite(outputs).all()


def test_mosei_raw_tree_end_to_end(mosei_raw_tree, tmp_path):
    """Regression labels, a NaN label, a segment without transcript, videos without audio, one in no fold."""
    out = tmp_path / "mosei.h5"
    summary = run_extraction(ExtractConfig(dataset="mosei", root=mosei_raw_tree.root, out=out, encoders="tiny",
                                           device="cpu", num_workers=0, progress=False))
    expected = mosei_raw_tree.expected
    assert summary.skipped == dict(sorted(expected["skipped"].items()))
    cache = open_cache(out)
    assert cache.meta.task == "regression" and cache.meta.label_names == [] and cache.label.dtype == np.float32
    assert sorted(cache.utt_id) == sorted(expected["utts"])
    for i, utt in enumerate(cache.utt_id):
        label, split, start, end, text = expected["utts"][utt]
        assert cache.label[i] == pytest.approx(label, abs=1e-4)
        assert (cache.split[i], cache.transcript[i]) == (split, text)
        assert cache.audio_len[i] == (int(round((end - start) * 16000)) - 400) // 320 + 1
    assert np.isfinite(head_outputs(out)).all()


def test_long_audio_long_text_and_empty_text_end_to_end(tmp_path):
    """A 35 s clip is cut to 255 frames and stores exactly what its first 5.105 s alone give; a transcript
    of 80 words is cut to 50 tokens; an empty one stores [CLS] [SEP]; the head takes every row."""
    root = tmp_path / "data"
    write_wav(root / "very_long.wav", seconds=35.0)
    write_wav(root / "first_part.wav", seconds=81680 / 16000)  # the samples the 255-frame cap keeps
    write_wav(root / "silent_text.wav", seconds=0.5)
    words = " ".join(["calm"] * 80)
    (root / "manifest.csv").write_text(f"path,text,label\nvery_long.wav,{words},calm\n"
                                       "first_part.wav,calm,calm\nsilent_text.wav,,angry\n")
    out = tmp_path / "long.h5"
    run_extraction(config(root / "manifest.csv", out, batch_seconds=160))
    cache = open_cache(out)
    assert list(cache.audio_len) == [255, 255, (8000 - 400) // 320 + 1]
    assert list(cache.text_len) == [50, 3, 2]
    data = cache.load()
    np.testing.assert_array_equal(data["audio"][0], data["audio"][1])
    assert data["text"][2, :2].any() and not data["text"][2, 2:].any()
    assert np.isfinite(head_outputs(out)).all()


MANIFEST_MISTAKES = [
    ("same path twice", "duplicate utterance ids a; add a unique utt_id column"),
    ("same utt_id twice", "duplicate utterance ids x; make the utt_id values unique"),
    ("transcript not UTF-8", "line 3 is not valid UTF-8"),
]


@pytest.mark.parametrize("case, message", MANIFEST_MISTAKES, ids=[c[0] for c in MANIFEST_MISTAKES])
def test_manifest_mistakes_stop_before_any_work(case, message, tmp_path, no_encoding):
    root = tmp_path / "data"
    for name in ("a", "b"):
        write_wav(root / f"{name}.wav", seconds=0.5)
    if case == "same path twice":
        content = b"path,text,label\na.wav,hi,calm\na.wav,hi again,angry\n"
    elif case == "same utt_id twice":
        content = b"utt_id,path,text,label\nx,a.wav,hi,calm\nx,b.wav,hi,angry\n"
    else:
        content = b"path,text,label\na.wav,hi,calm\nb.wav,caf\xe9,angry\n"
    (root / "manifest.csv").write_bytes(content)
    out = tmp_path / "out" / "x.h5"
    result = _cli(["--dataset", "manifest", "--root", str(root), "--out", str(out), "--encoders", "tiny",
                   "--device", "cpu", "--workers", "0"])
    assert message in error_line(result)
    assert not (tmp_path / "out").exists()


def test_a_dataset_that_changed_under_an_interrupted_run_is_refused_not_mixed(clips, tmp_path, monkeypatch):
    """A wav deleted between the interrupted run and the rerun: the partial file is kept as it is
    and the rerun asks for --overwrite instead of mixing two row lists."""
    data = tmp_path / "data"
    shutil.copytree(clips.parent, data)
    out = tmp_path / "changed.h5"
    def interrupted(self):  # Ctrl-C just before the finished file is marked complete
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.CacheWriter, "finalize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(config(data / "manifest.csv", out))
    monkeypatch.undo()
    before = partial_path(out).read_bytes()
    (data / "h.wav").unlink()
    with pytest.raises(CacheError, match="made differently \\(the dataset's utterance list changed\\); "
                                         "pass --overwrite to start again"):
        run_extraction(config(data / "manifest.csv", out))
    assert partial_path(out).read_bytes() == before and not out.exists()
    summary = run_extraction(config(data / "manifest.csv", out, overwrite=True))
    assert summary.rows == len(CLIPS) - 1 and summary.skipped == {"missing audio file": 1}
    assert list(open_cache(out).utt_id) == [c[0] for c in CLIPS if c[0] != "h"]


# ---------------------------------------------------------------------------------- concurrent runs (issue 13)
# A real extraction that stops before its second batch until the file `go` appears (it holds the lock).
HOLD_CHILD = r"""
import json, os, sys, time
repo, values, gate = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path.insert(0, repo)
from pathlib import Path
from swrr.extract import featurizer, pipeline, runner

real_encode, batches = featurizer.encode_batch, []

def encode_batch(*args, **kwargs):
    batches.append(1)
    if len(batches) == 2:
        Path(gate + ".ready").write_text(str(os.getpid()))
        while not Path(gate).exists():
            time.sleep(0.05)
    return real_encode(*args, **kwargs)

featurizer.encode_batch = encode_batch
values["root"], values["out"] = Path(values["root"]), Path(values["out"])
runner.run_extraction(pipeline.ExtractConfig(**values))
"""
CLI_CHILD = "import sys; sys.path.insert(0, sys.argv.pop(1)); from swrr.extract.cli import main; main()"


def hold_extraction(clips, out, gate: Path, **kwargs) -> subprocess.Popen:
    """Start a real extraction and return once it is parked before its second batch (lock held)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD_CHILD, str(REPO), json.dumps(settings(clips, out, **kwargs)),
                              str(gate)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = Path(f"{gate}.ready")
    for _ in range(1200):
        if ready.exists() or child.poll() is not None:
            break
        time.sleep(0.1)
    assert ready.exists(), child.communicate()[1][-3000:]
    return child


def cli_process(clips, out, *extra) -> subprocess.CompletedProcess:
    args = ["--dataset", "manifest", "--root", str(clips), "--out", str(out), "--encoders", "tiny",
            "--device", "cpu", "--workers", "0", "--batch-seconds", str(BATCH_SECONDS), *extra]
    return subprocess.run([sys.executable, "-c", CLI_CHILD, str(REPO), *args], capture_output=True, text=True,
                          timeout=300)


def test_a_second_extraction_to_the_same_out_is_refused_and_the_first_finishes_whole(clips, reference, tmp_path):
    """The issue's race with two real processes: B refuses naming A; A's .partial is untouched and A's
    finished file equals an uninterrupted run's (before: B deleted A's partial, A renamed B's half file)."""
    out, gate = tmp_path / "race.h5", tmp_path / "go"
    first = hold_extraction(clips, out, gate)
    try:
        before = partial_path(out).stat().st_ino
        second = cli_process(clips, out, "--overwrite")  # even --overwrite: the lock comes first
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip() == (f"swrr-extract: error: another swrr-extract (pid {first.pid}) is writing "
                                         f"{out}; wait for it to finish or stop it (the lock is {out}.lock)")
        assert partial_path(out).stat().st_ino == before and not out.exists()
    finally:
        gate.write_text("go")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert_same_cache(out, reference)


def _children(pid: int) -> set:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_decoding_workers_die_with_a_sigkilled_extraction_and_the_rerun_resumes(clips, reference, tmp_path):
    """SIGKILL of an extraction with 2 decoding workers: no worker outlives it by more than a few seconds,
    so none keeps the .partial open, and the rerun resumes it at once."""
    out, gate = tmp_path / "killed.h5", tmp_path / "go"
    child = hold_extraction(clips, out, gate, num_workers=2)
    workers = _children(child.pid)
    assert len(workers) >= 2 and all(_alive(w) for w in workers)
    child.kill()
    child.communicate()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "a decoding worker outlived its SIGKILLed extraction"
    run_extraction(config(clips, out))  # not refused as "held open": no worker holds the .partial
    assert_same_cache(out, reference)


def test_a_partial_held_open_by_another_process_is_refused_and_kept(clips, reference, tmp_path, monkeypatch):
    """The HDF5 lock of a leftover process: one line saying so, nothing deleted (before: deleted, restarted)."""
    out = tmp_path / "held.h5"
    real_write = cache_mod.CacheWriter.write

    def write_once(self, *args):
        real_write(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod.CacheWriter, "write", write_once)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(config(clips, out))
    monkeypatch.undo()
    kept = partial_path(out).read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, h5py; f = h5py.File(sys.argv[1], 'r'); "
                               "print('open', flush=True); time.sleep(300)", str(partial_path(out))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        result = _cli(["--dataset", "manifest", "--root", str(clips), "--out", str(out), "--encoders", "tiny",
                       "--device", "cpu", "--workers", "0", "--batch-seconds", str(BATCH_SECONDS)])
    finally:
        holder.kill()
        holder.wait()
    error = error_line(result)
    assert "is held open by another process" in error and "nothing was deleted" in error
    assert partial_path(out).read_bytes() == kept
    assert run_extraction(config(clips, out)).resumed_rows == first_batch_rows()
    assert_same_cache(out, reference)


# ---------------------------------------------------------------------------------- misuse (issue 13)
def test_out_naming_the_manifest_or_a_foreign_file_is_refused_even_with_overwrite(clips, tmp_path, no_encoding):
    data = tmp_path / "data"
    shutil.copytree(clips.parent, data)
    manifest = data / "manifest.csv"
    before = manifest.read_bytes()
    for target, message in ((manifest, f"is one of the dataset's input files ({manifest})"),
                            (data / "a.wav", "is one of the dataset's input files"),
                            (tmp_path / "notes.txt", "is not an swrr feature cache; swrr-extract replaces only")):
        if not target.exists():
            target.write_text("my notes")
        content = target.read_bytes()
        result = _cli(["--dataset", "manifest", "--root", str(manifest), "--out", str(target), "--encoders", "tiny",
                       "--device", "cpu", "--workers", "0", "--overwrite"])
        assert message in error_line(result)
        assert target.read_bytes() == content
    assert manifest.read_bytes() == before


def test_non_finite_audio_is_a_counted_skip(clips, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clips.parent, data)
    import soundfile as sf

    samples = np.full(8000, 0.1, dtype=np.float32)
    samples[4000] = np.nan
    sf.write(data / "nan.wav", samples, 16000, subtype="FLOAT")
    samples[4000] = np.inf
    sf.write(data / "inf.wav", samples, 16000, subtype="FLOAT")
    with open(data / "manifest.csv", "a") as f:
        f.write("nan.wav,hello,calm\ninf.wav,hello,angry\n")
    out = tmp_path / "x.h5"
    summary = run_extraction(config(data / "manifest.csv", out))
    assert summary.skipped == {"non-finite samples": 2} and summary.rows == len(CLIPS)
    assert np.isfinite(open_cache(out).load()["audio"]).all()


def test_features_that_overflow_float16_stop_the_run_naming_the_utterance(clips, tmp_path, monkeypatch):
    """Activations beyond float16's range (the row of clip h, scaled by 1e6) become inf in the cache dtype:
    the row is not written, the run stops naming it and suggesting float32, the other rows are kept."""
    real_call = AudioEncoder.__call__

    def loud(self, input_values, sample_lengths):
        features, frames = real_call(self, input_values, sample_lengths)
        scale = torch.where(sample_lengths == int(0.35 * 16000), 1e6, 1.0).to(features)
        return features * scale[:, None, None, None], frames  # (B, L, F, D)

    monkeypatch.setattr(AudioEncoder, "__call__", loud)
    out = tmp_path / "loud.h5"
    result = _cli(["--dataset", "manifest", "--root", str(clips), "--out", str(out), "--encoders", "tiny",
                   "--device", "cpu", "--workers", "0", "--batch-seconds", str(BATCH_SECONDS)])
    error = error_line(result)
    assert "1 utterances gave non-finite (NaN or inf) features: h;" in error and "--dtype float32" in error
    assert not out.exists()
    with h5py.File(partial_path(out), "r") as h5:
        assert list(h5["done"][:]) == [u != "h" for u in h5["utt_id"].asstr()[:]]
    summary = run_extraction(config(clips, out, dtype="float32", overwrite=True))
    assert summary.rows == len(CLIPS) and np.isfinite(open_cache(out).load()["audio"]).all()


def test_an_interrupted_overwrite_resumes_with_or_without_overwrite(clips, reference, tmp_path, monkeypatch):
    """Issue 13 P2.4: extract --layer 0, rerun with --overwrite (default layer), Ctrl-C after a batch."""
    out = tmp_path / "x.h5"
    run_extraction(config(clips, out, layer=0))
    real_write, writes = cache_mod.CacheWriter.write, []

    def write_then_stop(self, *args):
        if writes:
            raise KeyboardInterrupt
        writes.append(1)
        return real_write(self, *args)

    monkeypatch.setattr(cache_mod.CacheWriter, "write", write_then_stop)
    result = _cli(["--dataset", "manifest", "--root", str(clips), "--out", str(out), "--encoders", "tiny",
                   "--device", "cpu", "--workers", "0", "--batch-seconds", str(BATCH_SECONDS), "--overwrite"])
    monkeypatch.undo()
    assert result.exit_code == 130
    assert ("run the same command again (with or without --overwrite) to resume; "
            f"{out} is replaced only when the new cache is complete") in _stderr(result)
    assert open_cache(out).meta.layer == 0  # the old cache is intact until the new one is whole
    summary = run_extraction(config(clips, out))  # without --overwrite
    assert summary.resumed_rows == first_batch_rows()
    assert_same_cache(out, reference)


def test_labels_restricts_the_classes_and_rare_classes_are_named(clips, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(clips.parent, data)
    text = (data / "manifest.csv").read_text().replace("g.wav,see you,calm", "g.wav,see you,Calm")
    (data / "manifest.csv").write_text(text)
    with console_output():  # the class report is logged; the command line shows it on stderr
        run_extraction(config(data / "manifest.csv", tmp_path / "all.h5"))
    err = capsys.readouterr().err
    assert "swrr-extract: 3 classes: Calm 1, angry 4, calm 3" in err
    assert "warning: 3 classes have fewer than 5 rows: 'Calm' (1), 'angry' (4), 'calm' (3)" in err
    summary = run_extraction(config(data / "manifest.csv", tmp_path / "two.h5", labels=("calm", "angry")))
    assert summary.skipped == {"label Calm": 1} and summary.rows == len(CLIPS) - 1
    assert summary.per_class == {"angry": 4, "calm": 3}
    assert open_cache(tmp_path / "two.h5").meta.label_names == ["angry", "calm"]
    result = _cli(["--dataset", "manifest", "--root", str(data / "manifest.csv"), "--out", str(tmp_path / "z.h5"),
                   "--encoders", "tiny", "--device", "cpu", "--labels", "calm,happy"])
    assert "--labels: happy not among the dataset's classes (Calm, angry, calm)" in error_line(result)


def test_source_is_stored_relative_to_the_dataset_root(clips, reference, tmp_path):
    cache = open_cache(reference)
    assert cache.meta.source_root == str(clips.parent)
    assert list(cache.columns["source"]) == [f"{c[0]}.wav" for c in CLIPS]
    assert all((Path(cache.meta.source_root) / s).is_file() for s in cache.columns["source"])


def test_progress_in_a_log_is_whole_lines(clips, tmp_path):
    result = _cli(["--dataset", "manifest", "--root", str(clips), "--out", str(tmp_path / "x.h5"), "--encoders",
                   "tiny", "--device", "cpu", "--workers", "0"])  # stderr is captured, not a terminal
    err = _stderr(result)
    assert result.exit_code == 0 and "\r" not in err, err
    assert any(line.startswith("extract manifest: 100%") for line in err.splitlines()), err
