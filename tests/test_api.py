"""The Python API (`import swrr`): lazy, one SwrrError family, and the same results as the commands.

extract_features vs swrr-extract (the same cache contents), train_model vs swrr-train (the same
summary), compare vs compare.csv, Run, unknown options refused, the option rules of the CLIs.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import swrr
from swrr.errors import OptionError, SwrrError
from tests.test_predict import DEMO, TINY_MODEL, demo_rows
from tests.test_train import make_cache

REPO = Path(__file__).resolve().parents[1]
TRAIN = dict(protocol="split", epochs=1, batch_size=4, lr=2e-3, threads=1, device="cpu", progress=False)
TRAIN_FLAGS = ["--protocol", "split", "--epochs", "1", "--batch-size", "4", "--lr", "2e-3", "--threads", "1",
               "--device", "cpu", "--no-progress", "--lstm-hidden", "8", "--model-set", "cnn_channels=[4,8]"]
MODEL = dict(lstm_hidden=8, model_set={"cnn_channels": [4, 8]})
HEAVY = ("torch", "numpy", "pandas", "h5py", "transformers", "librosa", "soundfile", "swrr.api", "swrr.extract")


def run_python(code: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def invoke(main, args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# ------------------------------------------------------------------ the face
def test_import_swrr_loads_no_stage_and_no_heavy_library():
    done = run_python(f"import sys, swrr; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_face_lists_its_names_and_refuses_unknown_ones():
    names = {"extract_features", "ExtractResult", "train_model", "open_run", "Run", "compare", "open_cache",
             "EmotionRecognizer", "Prediction", "SwrrError", "__version__"}
    assert set(swrr.__all__) == names and names <= set(dir(swrr))
    for name in swrr.__all__:
        assert getattr(swrr, name) is not None
    assert swrr.open_cache is __import__("swrr.cache", fromlist=["open_cache"]).open_cache
    with pytest.raises(AttributeError, match="no attribute 'extract_feature'"):
        swrr.extract_feature  # noqa: B018 (a typo stays an AttributeError)


def test_every_user_error_is_a_swrr_error():
    from swrr.rundir import RunFolderError
    from swrr.bundle import BundleError
    from swrr.cache import CacheError
    from swrr.device import DeviceError
    from swrr.extract.audio import AudioError
    from swrr.extract.datasets import DatasetError
    from swrr.extract.encoders import EncoderError
    from swrr.predict.inputs import PredictError
    from swrr.ranks import RankError
    from swrr.train.compare import CompareError
    from swrr.train.config import TrainError
    from swrr.train.evaluate import EvaluateError

    for error in (AudioError, BundleError, CacheError, CompareError, DatasetError, DeviceError, EncoderError,
                  EvaluateError, OptionError, PredictError, RankError, RunFolderError, TrainError):
        assert issubclass(error, SwrrError), error
    assert issubclass(DeviceError, ValueError)  # as before: callers catching ValueError still do


# ------------------------------------------------------------------ extraction
@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """16 demo clips of one speaker: 2 per class and split (8 train, 4 valid, 4 test)."""
    rows = demo_rows().groupby(["split", "label"]).head(2).copy()
    rows["path"] = [str(DEMO / p) for p in rows["path"]]
    path = tmp_path_factory.mktemp("data") / "manifest.csv"
    rows.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def extracted(manifest):
    """The API's cache and swrr-extract's cache of the same request."""
    from swrr.extract.cli import main

    folder = manifest.parent
    result = swrr.extract_features("manifest", root=manifest, out=folder / "api.h5", encoders="tiny",
                                   device="cpu", workers=0, progress=False, labels=["ang", "hap", "neu", "sad"])
    done = invoke(main, ["--dataset", "manifest", "--root", manifest, "--out", folder / "cli.h5",
                         "--encoders", "tiny", "--device", "cpu", "--workers", "0", "--labels", "ang,hap,neu,sad"])
    assert done.exit_code == 0, done.output
    return result, folder / "cli.h5"


def test_extract_features_writes_the_cache_swrr_extract_writes(extracted, manifest):
    result, cli_cache = extracted
    assert isinstance(result, swrr.ExtractResult) and result.cache == manifest.parent / "api.h5"
    rows = pd.read_csv(manifest)
    assert result.rows == len(rows) and result.skipped == {} and result.resumed_rows == 0
    assert sum(result.per_class.values()) == len(rows) and set(result.per_split) <= {"train", "valid", "test"}
    assert result.summary.lines()[0].startswith(f"wrote {result.cache}")
    api, cli = swrr.open_cache(result.cache), swrr.open_cache(cli_cache)
    assert api.meta.to_attrs() == cli.meta.to_attrs()
    for column in ("audio_len", "text_len", "label"):
        np.testing.assert_array_equal(getattr(api, column), getattr(cli, column))
    assert {k: list(v) for k, v in api.columns.items()} == {k: list(v) for k, v in cli.columns.items()}
    for a, b in zip(api.load(), cli.load()):  # the features themselves, bit for bit
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("call, message", [
    (lambda: swrr.extract_features("demo", encoder="tiny"), "unknown option encoder; valid options: audio_encoder"),
    (lambda: swrr.extract_features("demo", encoders="tiny", audio_encoder="x"),
     "encoders='tiny' builds its own random encoders; leave out audio_encoder/text_encoder"),
    (lambda: swrr.extract_features("demo", labels=" , "), "labels: give at least one class"),
    (lambda: swrr.extract_features("demo", dtype="int8"), "dtype must be one of"),
    (lambda: swrr.extract_features("demo", batch_seconds="fast"), "batch seconds must be 'auto' or a number"),
    (lambda: swrr.extract_features("demo", workers=-1), "workers must be a whole number >= 0"),
    (lambda: swrr.extract_features("nope"), "nope"),
])
def test_bad_extraction_requests_are_swrr_errors_worded_for_python(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SwrrError) as caught:
        call()
    assert message in str(caught.value) and "--" not in str(caught.value).split(";")[0]
    assert not list(tmp_path.glob("**/*.h5*"))


# ------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def runs(extracted, tmp_path_factory):
    """The same run through train_model and through swrr-train; a variant (another lr) for compare."""
    from swrr.train.cli import main

    result, _ = extracted
    folder = tmp_path_factory.mktemp("runs")
    api = swrr.train_model(result.cache, runs_dir=folder, name="api", **TRAIN, **MODEL)
    done = invoke(main, ["--cache", result.cache, "--runs-dir", folder, "--name", "cli", *TRAIN_FLAGS])
    assert done.exit_code == 0, done.output
    other = swrr.train_model(result.cache, runs_dir=folder, name="lr1e-3", **{**TRAIN, "lr": 1e-3}, **MODEL)
    return api, folder / "cli", other


def test_train_model_gives_the_summary_swrr_train_gives(runs):
    api, cli_dir, _ = runs
    assert isinstance(api, swrr.Run) and api.path.name == "api"
    pd.testing.assert_frame_equal(api.summary, pd.read_csv(cli_dir / "summary.csv"))
    assert api.summary.equals(swrr.open_run(cli_dir).summary)
    saved = json.loads((api.path / "config.json").read_text())["train"]
    assert saved["model"] == TINY_MODEL and saved["epochs"] == 1


def test_a_run_has_its_units_and_its_recognizer(runs):
    api, _, _ = runs
    units = api.units
    metrics = json.loads((api.path / "fold01" / "metrics.json").read_text())
    assert len(units) == 1 and units.loc[0, "fold"] == 1 and units.loc[0, "seed"] == 0
    assert units.loc[0, "test_rows"] == metrics["sizes"]["test"]
    assert {k: units.loc[0, k] for k in metrics["metrics"]} == pytest.approx(metrics["metrics"])
    recognizer = api.recognizer(device="cpu", workers=0)
    clip = demo_rows().iloc[0]
    got = recognizer.classify_file(DEMO / clip["path"], text=clip["text"])
    assert got.label in recognizer.label_names and sum(got.probs.values()) == pytest.approx(1, abs=1e-5)


def test_compare_returns_the_rows_of_compare_csv(runs, tmp_path):
    api, _, other = runs
    table = swrr.compare(api, other.path, metric="UA", out=tmp_path / "cmp", resamples=200)
    assert table.to_csv(index=False) == (tmp_path / "cmp" / "compare.csv").read_text()
    assert table["metric"].tolist() == ["UA"] and len(table) == 1
    with pytest.raises(OptionError, match="unknown option metrics"):
        swrr.compare(api, other, metrics=["UA"])
    with pytest.raises(SwrrError, match="give two or more runs"):
        swrr.compare()


def test_options_of_swrr_train_have_their_rules_in_the_api(runs, tmp_path):
    api, _, _ = runs
    cache = json.loads((api.path / "config.json").read_text())["train"]["cache"]
    cases = [
        (dict(cache=cache, epoch=2), "train_model: unknown option epoch;"),
        (dict(cache=cache, seed=1, seeds="3"), "seed and seeds exclude each other (seeds='3,' runs seed 3 alone)"),
        (dict(cache=cache, seeds="0"), "seeds: a count of seeds must be >= 1"),
        (dict(cache=cache, seeds=[1, 1]), "seeds lists 1 more than once"),
        (dict(cache=cache, folds="a"), "folds: expected fold numbers like 1,3"),
        (dict(cache=cache, folds=1.5), "folds: expected fold numbers like 1,3"),
        (dict(cache=cache, seeds=2.5), "seeds: expected whole numbers, got [2.5]"),
        (dict(cache=cache, model_set=["dropout"]), "model_set: expected KEY=VALUE"),
        (dict(cache=cache, epochs="5"), "epochs: expected int"),
        (dict(cache=cache, beta1=2.0), "beta1 must be in [0, 1), got 2.0"),  # swrr-train says --beta1
        (dict(cache=cache, name="../x"), "name must be a plain folder name, without path separators or '..', "
                                         "got '../x'; runs_dir chooses where run folders go"),
        (dict(resume=api.path, lr=0.1, name="x"), "resume uses the run's saved config; these options cannot be "
                                                  "given with it: lr, name"),
        (dict(), "give cache (a cache made by swrr-extract), config or resume"),
    ]
    for options, message in cases:
        with pytest.raises(SwrrError) as caught:
            swrr.train_model(**options, runs_dir=tmp_path) if "resume" not in options else \
                swrr.train_model(**options)
        assert message in str(caught.value), (options, str(caught.value))
    assert not any(tmp_path.iterdir())


def test_a_rerun_from_a_config_file_overrides_only_what_is_given(runs, tmp_path):
    api, _, _ = runs
    again = swrr.train_model(config=api.path / "config.json", runs_dir=tmp_path, name="again", seeds=1,
                             lstm_hidden=6, progress=False)
    saved = json.loads((again.path / "config.json").read_text())
    assert saved["train"]["seeds"] == [0] and saved["train"]["model"] == {**TINY_MODEL, "lstm_hidden": 6}
    assert saved["rerun"]["overrides"] == {"runs_dir": str(tmp_path), "name": "again", "seeds": [0],
                                           "model": {**TINY_MODEL, "lstm_hidden": 6}, "progress": False}
    assert saved["train"]["epochs"] == 1 and saved["train"]["batch_size"] == 4  # from the file


def test_an_ablation_folder_opens_with_its_table_and_variants(tmp_path):
    from swrr.model import ABLATIONS

    cache = make_cache(tmp_path / "iemocap.h5", n=24, dataset="iemocap")
    grid = swrr.train_model(cache, runs_dir=tmp_path, ablation="all", folds=[1], epochs=1, batch_size=8,
                            threads=1, device="cpu", progress=False, **MODEL)
    assert grid.variants == ["swrr", *ABLATIONS]
    assert grid.summary["variant"].tolist() == grid.variants  # ablations.csv
    units = grid.units
    assert units["variant"].tolist() == grid.variants and (units["fold"] == 1).all()
    text_only = grid.variant("text-only")
    assert text_only.units.loc[0, "ua"] == units.set_index("variant").loc["text-only", "ua"]
    assert text_only.summary.equals(pd.read_csv(tmp_path / grid.path.name / "text-only" / "summary.csv"))
    with pytest.raises(SwrrError, match="no variant 'nope'"):
        grid.variant("nope")
    with pytest.raises(SwrrError, match="ablation all folder: take one variant's model"):
        grid.recognizer()


def test_open_run_refuses_what_is_not_a_finished_run(tmp_path):
    with pytest.raises(SwrrError, match="not a run folder"):
        swrr.open_run(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "INCOMPLETE").write_text("")
    with pytest.raises(SwrrError, match="has not finished.*train_model\\(resume="):
        swrr.open_run(tmp_path)


def test_train_model_needs_no_audio_or_text_library(tmp_path):
    """`import swrr; swrr.train_model(...)` in a process where librosa, soundfile and transformers cannot
    load; its report reaches the caller's logging configuration."""
    cache = make_cache(tmp_path / "synthetic.h5", n=24)
    code = ("import logging, sys\n"
            "for name in ('librosa', 'soundfile', 'transformers'):\n"
            "    sys.modules[name] = None\n"
            "logging.basicConfig(level=logging.INFO, format='%(name)s| %(message)s')\n"
            "import swrr\n"
            f"run = swrr.train_model({str(cache)!r}, runs_dir={str(tmp_path)!r}, folds=[1], epochs=1, batch_size=8,"
            " lstm_hidden=8, model_set={'cnn_channels': [4, 8]}, threads=1, device='cpu', progress=False)\n"
            "print(len(run.summary), len(run.units))\n")
    done = run_python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].split()[1] == "1"
    assert "swrr.train| summary over 1 fold(s), swrr" in done.stderr  # reported through logging
    assert all(line.startswith("swrr.train| ") for line in done.stderr.splitlines())  # progress=False: no bars


def test_api_verbs_document_their_options():
    for verb in (swrr.extract_features, swrr.train_model, swrr.compare, swrr.open_run,
                 swrr.EmotionRecognizer.from_pretrained, swrr.EmotionRecognizer.predict):
        assert inspect.getdoc(verb) and len(inspect.getdoc(verb)) > 60, verb


@pytest.mark.slow
def test_the_quickstart_example_runs(tmp_path):
    """docs/examples/quickstart.py as a user runs it: its own process, a neutral folder."""
    done = subprocess.run([sys.executable, str(REPO / "docs" / "examples" / "quickstart.py"), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "96 clips" in out and "from the file:" in out and "from memory:" in out
    assert "['resampled from 8000 Hz', '2 channels averaged']" in out
    assert (tmp_path / "runs" / "base" / "summary.csv").exists() and (tmp_path / "runs" / "lr-2e-3").exists()
    assert list((tmp_path / "runs").glob("compare-base-vs-lr-2e-3/compare.csv"))
