"""The extraction pipeline and `swrr-extract`: end to end on a small manifest dataset with the
tiny random encoders; resume after an interruption and after a hard kill; config refusal;
--overwrite; and the CLI's answers to user mistakes."""
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_wav

from swrr.extract import featurizer
from swrr.extract.audio import AudioError, load_audio
from swrr.extract.batching import (AUTO_LADDER, AUTO_MEMORY_SHARE, auto_batch_seconds, estimated_peak_bytes,
                              parse_batch_seconds)
from swrr.extract.cli import main
from swrr.extract.datasets import get_reader
from swrr.extract.encoders import tiny_encoders
from swrr.extract.pipeline import ExtractConfig
from swrr.extract.runner import run_extraction
from swrr.cache import CacheError, open_cache, partial_path

REPO = Path(__file__).resolve().parents[1]
# name, seconds, sample rate, channels, label, split, transcript
CLIPS = [
    ("long", 6.0, 16000, 1, "calm", "train", "this one is longer than the five second cap"),
    ("b", 1.0, 16000, 1, "angry", "train", "I am so angry"),
    ("stereo", 1.2, 44100, 2, "calm", "valid", "thank you"),
    ("low_rate", 0.8, 8000, 1, "angry", "test", "no"),
    ("e", 2.0, 16000, 1, "calm", "test", ""),
    ("f", 0.5, 16000, 1, "angry", "train", "okay okay"),
    ("g", 1.6, 16000, 1, "calm", "train", "hello there"),
    ("h", 0.3, 16000, 1, "angry", "valid", "hi"),
]
# Samples each usable clip has at 16 kHz after the 81,680-sample cap -> frames = (n - 400) // 320 + 1
SAMPLES = {"long": 81680, "b": 16000, "stereo": 19200, "low_rate": 12800, "e": 32000, "f": 8000,
           "g": 25600, "h": 4800}
BATCH_SECONDS = 3.0  # several batches on this tiny dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A manifest with 8 usable clips (one stereo 44.1 kHz, one 8 kHz) and 3 unusable files."""
    root = tmp_path_factory.mktemp("data")
    lines = ["path,text,label,split"]
    for i, (name, seconds, rate, channels, label, split, text) in enumerate(CLIPS):
        write_wav(root / f"{name}.wav", seconds=seconds, sample_rate=rate, channels=channels, freq=110.0 * (i + 1))
        lines.append(f"{name}.wav,{text},{label},{split}")
    write_wav(root / "too_short.wav", seconds=0.01)
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.wav").write_text("these are notes, not audio\n")
    lines += ["too_short.wav,x,calm,train", "empty.wav,x,calm,train", "notes.wav,x,angry,train"]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def config(dataset, out, **kwargs) -> ExtractConfig:
    settings = dict(dataset="manifest", root=dataset, out=out, encoders="tiny", device="cpu",
                    batch_seconds=BATCH_SECONDS, num_workers=0, progress=False)
    settings.update(kwargs)
    return ExtractConfig(**settings)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted run (audio decoded by two worker processes): (summary, path)."""
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    return run_extraction(config(dataset, out, num_workers=2)), out


def assert_same_cache(a: Path, b: Path) -> None:
    """Every dataset and attribute of two cache files is identical."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa) == sorted(fb)
        for name in fa:
            assert fa[name].dtype == fb[name].dtype, name
            assert np.array_equal(fa[name][()], fb[name][()]), name
        assert dict(fa.attrs) == dict(fb.attrs)


def break_decoding(monkeypatch, utt_id: str) -> None:
    """Decoding `utt_id` fails although its header passed the check."""
    real = featurizer.load_audio

    def broken(utt, *args, **kwargs):
        if utt.name == utt_id:
            raise AudioError(utt.audio_path, "truncated or corrupt header", "unexpected end of data")
        return real(utt, *args, **kwargs)

    monkeypatch.setattr(featurizer, "load_audio", broken)


def fail_encoding(monkeypatch, call: int, error: BaseException) -> None:
    """The `call`-th encode_batch raises `error` (e.g. Ctrl-C or a GPU error while a batch is encoded)."""
    real, calls = featurizer.encode_batch, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(featurizer, "encode_batch", failing)


def test_end_to_end_counts_shapes_lengths_labels(reference, dataset):
    summary, out = reference
    assert summary.out == out and summary.rows == 8 and summary.resumed_rows == 0
    assert summary.per_class == {"angry": 4, "calm": 4}
    assert summary.per_split == {"train": 4, "valid": 2, "test": 2}
    assert summary.skipped == {"empty file (0 bytes)": 1, "not an audio file": 1, "shorter than one WavLM frame": 1}
    assert summary.random_encoders and "RANDOM" in "\n".join(summary.lines())
    assert not partial_path(out).exists()

    cache = open_cache(out)
    assert len(cache) == 8 and cache.meta.random_encoders and cache.meta.audio_dim == cache.meta.text_dim == 64
    assert cache.meta.label_names == ["angry", "calm"] and cache.meta.dtype == "float16"
    ids = list(cache.utt_id)
    assert ids == [c[0] for c in CLIPS]
    assert list(cache.audio_len) == [(SAMPLES[i] - 400) // 320 + 1 for i in ids]
    assert cache.audio_len[0] == 255
    assert list(cache.label) == [["angry", "calm"].index(c[4]) for c in CLIPS]
    _, text = tiny_encoders()
    assert list(cache.text_len) == [len(text.tokenizer(c[6])["input_ids"]) for c in CLIPS]
    data = cache.load()
    assert data["audio"].shape == (8, 255, 64) and data["text"].shape == (8, 50, 64)
    for row in range(8):
        assert np.abs(data["audio"][row, : cache.audio_len[row]]).sum(axis=1).min() > 0
        assert not data["audio"][row, cache.audio_len[row]:].any()  # padding is zero
        assert not data["text"][row, cache.text_len[row]:].any()
    assert cache.meta.config["layer"] == -1 and cache.meta.config["encoders"] == "tiny"
    assert summary.batch_budget == "3 s" and summary.batches == 5
    assert 0 < summary.write_seconds < summary.seconds


def test_each_row_holds_its_own_utterance(reference, dataset):
    """Rows that were batched with others equal encoding their utterance alone (up to float16)."""
    data = open_cache(reference[1]).load()
    audio, text = tiny_encoders()
    utts = {u.utt_id: u for u in get_reader("manifest", dataset).utterances()}
    for row, name in [(1, "b"), (2, "stereo"), (7, "h")]:
        features, frames = audio(*audio.collate([audio.prepare(load_audio(utts[name]))]))
        np.testing.assert_allclose(data["audio"][row, : frames[0]], features[0].numpy(), atol=5e-3, rtol=5e-3)
        features, n = text(text.tokenize([utts[name].transcript]))
        np.testing.assert_allclose(data["text"][row, : n[0]], features[0].numpy(), atol=5e-3, rtol=5e-3)


def test_interrupted_run_resumes_to_the_same_file(reference, dataset, tmp_path, monkeypatch):
    out = tmp_path / "resumed.h5"
    fail_encoding(monkeypatch, 3, KeyboardInterrupt())  # Ctrl-C while the third batch is being encoded
    with pytest.raises(KeyboardInterrupt):
        run_extraction(config(dataset, out))
    monkeypatch.undo()
    assert not out.exists() and partial_path(out).exists()
    with pytest.raises(CacheError, match="interrupted extraction is at .partial"):
        open_cache(out)
    with pytest.raises(CacheError, match="config differs in: dtype"):
        run_extraction(config(dataset, out, dtype="float32"))

    summary = run_extraction(config(dataset, out))
    assert 0 < summary.resumed_rows < summary.rows
    assert_same_cache(out, reference[1])


def test_killed_run_resumes_to_the_same_file(reference, dataset, tmp_path):
    """A hard kill (no cleanup at all) after two batches were written, the third in flight."""
    out = tmp_path / "killed.h5"
    script = f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from swrr.extract import featurizer, pipeline, runner
from swrr import cache
real, calls = featurizer.encode_batch, []
real_write, written = cache.CacheWriter.write, []
def counted_write(self, *args):
    real_write(self, *args)
    written.append(1)
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:  # batches 1 and 2 were handed to the writer when batch 3 was launched
        deadline = time.time() + 120  # wait until the writer thread has written them
        while len(written) < 2 and time.time() < deadline:
            time.sleep(0.01)
        os._exit(9)
    return real(*args, **kwargs)
cache.CacheWriter.write = counted_write
featurizer.encode_batch = dying
runner.run_extraction(pipeline.ExtractConfig(dataset="manifest", root=Path({str(dataset)!r}),
    out=Path({str(out)!r}), encoders="tiny", device="cpu", batch_seconds={BATCH_SECONDS}, num_workers=0,
    progress=False))
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    assert not out.exists() and partial_path(out).exists()
    summary = run_extraction(config(dataset, out))
    assert summary.resumed_rows > 0
    assert_same_cache(out, reference[1])


def test_rerun_with_another_config_refuses_and_overwrite_replaces(reference, dataset, tmp_path):
    out = tmp_path / "copy.h5"
    shutil.copy(reference[1], out)
    with pytest.raises(CacheError, match=r"differs in: layer"):
        run_extraction(config(dataset, out, layer=1))
    with pytest.raises(CacheError, match="already complete with this config"):
        run_extraction(config(dataset, out))
    summary = run_extraction(config(dataset, out, layer=1, overwrite=True))
    cache = open_cache(out)
    assert summary.rows == 8 and cache.meta.layer == 1 and cache.meta.config["layer"] == 1


def test_a_file_that_fails_to_decode_stops_with_its_name(dataset, tmp_path, monkeypatch):
    """Headers are checked before the cache opens; a file that still fails while decoding is an
    error naming it (the row list is fixed by then), and no complete-looking cache appears."""
    break_decoding(monkeypatch, "g")
    out = tmp_path / "broken.h5"
    result = _cli(["--dataset", "manifest", "--root", str(dataset), "--out", str(out), "--encoders", "tiny",
                   "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 2
    assert "g.wav: truncated or corrupt header" in _stderr(result) and "Traceback" not in result.output
    assert not out.exists()


# ---------------------------------------------------------------------------------- pipelined encoding
def test_batch_i_is_waited_for_only_after_batch_i_plus_1_is_launched(monkeypatch):
    events = []

    class Pending:
        def __init__(self, i):
            self.i = i

        def get(self):
            events.append(f"get {self.i}")
            return self.i

    def launch(batch, *args):
        events.append(f"launch {batch}")
        return Pending(batch)

    monkeypatch.setattr(featurizer, "encode_batch", launch)
    assert list(featurizer.encode_ahead(iter([1, 2, 3]), None, None, "float16")) == [1, 2, 3]
    assert events == ["launch 1", "launch 2", "get 1", "launch 3", "get 2", "get 3"]
    assert list(featurizer.encode_ahead(iter([]), None, None, "float16")) == []


@pytest.mark.parametrize("failure, rows_kept", [("decode", ["long", "e", "g"]), ("encoder", ["long"])])
def test_an_error_in_a_later_batch_keeps_the_earlier_batches_and_resumes(failure, rows_kept, reference, dataset,
                                                                         tmp_path, monkeypatch):
    """Planned batches: [long] [e] [g] [stereo b] [low_rate f h]. A decoding failure in batch 5, or an
    encoder error in batch 3: the batches handed over before are written and marked done, the one in
    flight is not, and the rerun (same row list) ends equal to the uninterrupted file."""
    out = tmp_path / f"{failure}.h5"
    if failure == "decode":
        break_decoding(monkeypatch, "f")
        expected = AudioError
    else:
        fail_encoding(monkeypatch, 3, RuntimeError("CUDA out of memory (simulated)"))
        expected = RuntimeError
    with pytest.raises(expected):
        run_extraction(config(dataset, out))
    monkeypatch.undo()

    ids = [c[0] for c in CLIPS]
    with h5py.File(partial_path(out), "r") as h5, h5py.File(reference[1], "r") as ref:
        done = h5["done"][()]
        assert [ids[i] for i in np.flatnonzero(done)] == sorted(rows_kept, key=ids.index)
        for row in np.flatnonzero(done):
            assert np.array_equal(h5["audio"][row], ref["audio"][row])
    summary = run_extraction(config(dataset, out))
    assert summary.resumed_rows == len(rows_kept)
    assert_same_cache(out, reference[1])


# ---------------------------------------------------------------------------------- batch budget
def test_auto_batch_budget_follows_the_cards_total_memory():
    gb = 10**9
    assert auto_batch_seconds(None) == auto_batch_seconds(None, "float32") == 160
    assert 160 <= auto_batch_seconds(11264 * 2**20) <= 200  # RTX 2080 Ti
    for total in (80 * gb, 141 * gb):
        assert auto_batch_seconds(total) == auto_batch_seconds(total, "float32") == 400
    sizes = [2 * gb, 6 * gb, 8 * gb, 11 * gb, 16 * gb, 24 * gb, 40 * gb, 80 * gb, 141 * gb]
    for dtype in ("float16", "float32"):
        budgets = [auto_batch_seconds(total, dtype) for total in sizes]
        assert budgets == sorted(budgets) and set(budgets) <= set(AUTO_LADDER)
        for total, seconds in zip(sizes, budgets):
            if seconds > AUTO_LADDER[0]:  # below the smallest rung: the smallest rung
                assert estimated_peak_bytes(seconds, dtype) <= AUTO_MEMORY_SHARE * total
    assert all(auto_batch_seconds(t, "float32") <= auto_batch_seconds(t) for t in sizes)
    assert auto_batch_seconds(24 * gb, "float32") < auto_batch_seconds(24 * gb) == 400


def test_auto_budget_is_resolved_from_the_card_and_named(monkeypatch):
    class Properties:
        total_memory = 141 * 10**9

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Properties)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert featurizer.resolve_batch_seconds("auto", cuda, "float16") == (400, "400 s (auto, 131 GiB card, float16)")
    assert featurizer.resolve_batch_seconds("auto", cpu, "float16") == (160, "160 s (auto, cpu)")
    assert featurizer.resolve_batch_seconds(120.0, cuda, "float16") == (120, "120 s")


def test_batch_seconds_values():
    assert parse_batch_seconds("auto") == parse_batch_seconds(" AUTO ") == "auto"
    assert parse_batch_seconds("12.5") == 12.5 and parse_batch_seconds(0) == 0.0
    for bad in ("-1", "fast", "nan", None):
        with pytest.raises(ValueError, match="'auto' or a number >= 0"):
            parse_batch_seconds(bad)
    with pytest.raises(ValueError, match="'auto' or a number >= 0"):
        ExtractConfig(dataset="demo", batch_seconds=-3)
    assert ExtractConfig(dataset="demo").batch_seconds == "auto"


# ---------------------------------------------------------------------------------- CLI
def _cli(args):
    return CliRunner().invoke(main, args)


def _stderr(result) -> str:
    return result.stderr if hasattr(result, "stderr") else result.output


def test_cli_runs_and_prints_the_summary(dataset, tmp_path):
    out = tmp_path / "cli.h5"
    result = _cli(["--dataset", "manifest", "--root", str(dataset), "--out", str(out), "--encoders", "tiny",
                   "--device", "cpu", "--workers", "0", "--batch-seconds", "0", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "WARNING: random encoders" in result.stdout
    assert "skipped: 3" in result.stdout and "classes: angry 4, calm 4" in result.stdout
    assert "batch budget: 0 s (one utterance per batch): 8 batches" in result.stdout
    assert open_cache(out).meta.dtype == "float32"


def test_cli_help_explains_every_option():
    result = _cli(["--help"])
    assert result.exit_code == 0
    for option in ("--dataset", "--root", "--out", "--audio-encoder", "--text-encoder", "--encoders", "--layer",
                   "--device", "--dtype", "--batch-seconds", "--workers", "--overwrite"):
        assert option in result.output
    assert "auto|SECONDS" in result.output and "[default: auto]" in result.output


def test_cli_auto_batch_budget_runs_and_is_reported(dataset, reference, tmp_path):
    out = tmp_path / "auto.h5"
    result = _cli(["--dataset", "manifest", "--root", str(dataset), "--out", str(out), "--encoders", "tiny",
                   "--device", "cpu", "--workers", "0", "--batch-seconds", "auto"])
    assert result.exit_code == 0, result.output
    assert "batch budget: 160 s (auto, cpu): 1 batches" in result.stdout
    ref = open_cache(reference[1]).load()  # batched differently: equal up to float16 rounding
    for key, value in open_cache(out).load().items():
        np.testing.assert_allclose(value.astype(np.float32), ref[key].astype(np.float32), atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("case", ["missing root", "no default root", "missing columns", "unwritable out",
                                  "tiny with an id", "bad batch seconds"])
def test_cli_user_mistakes_exit_2_with_one_clear_line(case, dataset, tmp_path, monkeypatch):
    args = ["--encoders", "tiny", "--device", "cpu", "--workers", "0"]
    if case == "missing root":
        args += ["--dataset", "manifest", "--root", str(tmp_path / "nope.csv")]
        expected = "nope.csv does not exist"
    elif case == "no default root":
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("SWRR_DATA", str(tmp_path / "datasets"))
        args += ["--dataset", "iemocap"]
        expected = "no iemocap data found: looked in"
    elif case == "missing columns":
        bad = tmp_path / "bad.csv"
        bad.write_text("path,label\nb.wav,calm\n")
        args += ["--dataset", "manifest", "--root", str(bad)]
        expected = f"{bad}: missing required column(s) text"
    elif case == "unwritable out":
        (tmp_path / "a_file").write_text("")
        args += ["--dataset", "manifest", "--root", str(dataset), "--out", str(tmp_path / "a_file" / "x.h5")]
        expected = "cannot create the output folder"
    elif case == "bad batch seconds":
        args += ["--dataset", "demo", "--batch-seconds", "fast"]
        expected = "batch seconds must be 'auto' or a number >= 0, got 'fast'"
    else:
        args += ["--dataset", "demo", "--audio-encoder", "microsoft/wavlm-base-plus"]
        expected = "--encoders tiny builds its own random encoders"
    result = _cli(args)
    assert result.exit_code == 2
    assert expected in _stderr(result)
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("**/*.h5"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_cache_matches_cpu(tmp_path):
    """The demo set (16 kHz mono: no resampling needed) on CUDA with fp16 autocast vs on the CPU in fp32."""
    caches = {}
    for device in ("cpu", "cuda"):
        run_extraction(ExtractConfig(dataset="demo", out=tmp_path / f"{device}.h5", encoders="tiny", device=device,
                                     num_workers=0, progress=False))
        caches[device] = open_cache(tmp_path / f"{device}.h5")
    gpu, cpu = caches["cuda"].load(), caches["cpu"].load()
    assert caches["cuda"].meta.config["precision"] == "fp16-autocast"
    assert np.array_equal(gpu["audio_len"], cpu["audio_len"]) and np.array_equal(gpu["text_len"], cpu["text_len"])
    for key in ("audio", "text"):
        a, b = gpu[key].astype(np.float32).reshape(-1, 64), cpu[key].astype(np.float32).reshape(-1, 64)
        used = np.abs(b).sum(axis=1) > 0
        assert np.array_equal(used, np.abs(a).sum(axis=1) > 0), key
        cosine = (a[used] * b[used]).sum(1) / np.linalg.norm(a[used], axis=1) / np.linalg.norm(b[used], axis=1)
        assert cosine.min() >= 0.999, (key, cosine.min())


def test_cli_help_states_the_demo_clip_count():
    from swrr.extract.datasets.demo import BUNDLED_ROOT

    clips = len((BUNDLED_ROOT / "demo.csv").read_text().strip().splitlines()) - 1
    output = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    assert f"demo ({clips} bundled clips" in output and clips == 96
