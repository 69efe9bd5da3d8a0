"""Issue 18, prediction side: nothing overwritten, no fake success, no traceback on a user's file.

Shares the small real workflow of tests/test_predict.py (24 demo clips, tiny encoders, a tiny
head trained 2 epochs), built once for this module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from swrr.bundle import BundleError, load_bundle, write_bundle
from swrr.predict.cli import main as predict_main
from swrr.predict.inputs import collect_inputs
from tests.conftest import write_wav
from tests.test_predict import predict, trained  # noqa: F401  (trained: the shared module fixture)


def _refused(args, message):
    result = CliRunner().invoke(predict_main, [str(a) for a in args])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)


def _snapshot(folder: Path):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_never_replaces_an_input_or_the_model(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    clip = tmp_path / "clip.wav"
    clip.write_bytes(Path(rows["path"][0]).read_bytes())
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(clip)], "text": ["hello"]}).to_csv(manifest, index=False)
    model = run_dir / "fold01" / "model"
    before = {**_snapshot(run_dir), clip: clip.read_bytes(), manifest: manifest.read_bytes()}
    cases = [
        (["--model", run_dir, clip, "--text", "x", "--out", clip], "name the table .csv or .jsonl"),
        (["--model", run_dir, clip, "--text", "x", "--out", clip, "--format", "csv"], "contradicts --format csv"),
        (["--model", run_dir, manifest, "--out", manifest], "is not an earlier swrr-predict output"),
        (["--model", run_dir, clip, "--text", "x", "--out", model / "config.json"], "name the table .csv or .jsonl"),
        (["--model", run_dir, clip, "--text", "x", "--out", model / "config.json", "--format", "jsonl"],
         "contradicts"),
        (["--model", run_dir, clip, "--text", "x", "--out", model / "new.csv"], "inside the model's folder"),
        (["--model", model, clip, "--text", "x", "--out", run_dir / "preds.csv"], "inside the model's folder"),
        (["--model", run_dir, clip, "--text", "x", "--out", tmp_path / "p.json"], "name the table .csv or .jsonl"),
        (["--model", run_dir, clip, "--text", "x", "--out", tmp_path / "p.jsonl", "--format", "csv"],
         "contradicts --format csv"),
    ]
    for args, message in cases:
        _refused(args, message)
    assert {**_snapshot(run_dir), clip: clip.read_bytes(), manifest: manifest.read_bytes()} == before
    assert not list(tmp_path.glob("p.*")) and not (run_dir / "preds.csv").exists()
    # an earlier prediction is ours: replaced without a flag
    for _ in range(2):
        summary, table = predict(tmp_path, run_dir, [clip], texts=["hello"], name="again.csv")
        assert summary.predicted == 1 and len(table) == 1


def test_an_input_that_looks_like_a_prediction_is_not_replaced(trained, tmp_path):  # noqa: F811
    """A manifest that is itself an earlier output passes the "is ours" rule; it is still an input."""
    from swrr.predict.inputs import PredictError

    run_dir, _, rows = trained
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"id": ["a"], "file": ["x"], "start": [0], "end": [1], "kind": ["utterance"], "source_id": ["a"],
                  "path": [rows["path"][0]], "text": ["hi"]}).to_csv(manifest, index=False)
    before = manifest.read_bytes()
    with pytest.raises(PredictError, match="is one of the inputs"):
        predict(tmp_path, run_dir, [manifest], name="m.csv")
    assert manifest.read_bytes() == before


def test_the_same_file_twice_keeps_each_text(tmp_path):
    clip = write_wav(tmp_path / "a.wav")
    items = collect_inputs([str(clip), str(clip)], ["first words", "second words"])
    assert [(i.text, i.text_source) for i in items] == [("first words", "given"), ("second words", "given")]
    assert [i.item_id for i in items] == ["a", "a~2"]


def test_non_finite_weights_are_refused_on_load(trained, tmp_path):  # noqa: F811
    run_dir, _, _ = trained
    bundle = load_bundle(run_dir / "fold01" / "model")
    state = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    state["classifier.kernels.bias"] = torch.full_like(state["classifier.kernels.bias"], float("nan"))
    nan = write_bundle(tmp_path / "nan", state, bundle.model_config, bundle.task, bundle.label_names,
                       bundle.recipe, {})
    with pytest.raises(BundleError, match="NaN or inf.*classifier.kernels.bias"):
        load_bundle(nan)
    ints = {k: (v.round().to(torch.int64) if v.is_floating_point() else v) for k, v in bundle.model.state_dict().items()}
    with pytest.raises(BundleError, match="torch.int64 vs torch.float32"):
        load_bundle(write_bundle(tmp_path / "ints", ints, bundle.model_config, bundle.task, bundle.label_names,
                                 bundle.recipe, {}))


def test_audio_that_gives_non_finite_features_is_an_error_row(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    wave, rate = sf.read(rows["path"][0], dtype="float32")
    sf.write(tmp_path / "huge.wav", wave / np.abs(wave).max() * np.float32(3e38), rate, subtype="FLOAT")
    good = tmp_path / "good.wav"
    good.write_bytes(Path(rows["path"][1]).read_bytes())
    summary, table = predict(tmp_path, run_dir, [tmp_path / "huge.wav", good], texts=["a", "b"])
    errors = dict(zip(table["id"], table["error"]))
    assert errors["huge"].startswith("non-finite") and errors["good"] == ""
    assert summary.predicted == 1 and sum(summary.errors.values()) == 1
    assert table.set_index("id").loc["huge", "label"] == ""
    assert "1 of 2 rows predicted" in summary.lines()[0]


def test_a_long_file_with_nan_samples_is_an_error_row_under_vad(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    wave = np.concatenate([sf.read(p, dtype="float32")[0] for p in rows["path"][:4]] * 2)
    wave[len(wave) // 2: len(wave) // 2 + 100] = np.nan
    sf.write(tmp_path / "long.wav", wave, 16000, subtype="FLOAT")
    good = tmp_path / "good.wav"
    good.write_bytes(Path(rows["path"][1]).read_bytes())
    summary, table = predict(tmp_path, run_dir, [tmp_path / "long.wav", good], texts=["a", "b"], segment="vad")
    errors = dict(zip(table["id"], table["error"]))  # the VAD needs the whole file: one error row for it
    assert errors == {"long": errors["long"], "good": ""} and errors["long"].startswith("non-finite samples")
    assert summary.predicted == 1 and summary.errors == {"non-finite samples": 1}
    _, windows = predict(tmp_path, run_dir, [tmp_path / "long.wav"], texts=["a"], segment="window", name="w.csv")
    nan_at = len(wave) / 2 / 16000
    hit = (windows["start"] <= nan_at + 0.01) & (windows["end"] >= nan_at)
    assert hit.any() and windows.loc[hit, "error"].str.startswith("non-finite samples").all()
    assert (windows.loc[~hit, "error"] == "").all() and (~hit).any()  # the windows without NaN are predicted


def _long_file(path: Path, clips, repeat=2) -> Path:
    sf.write(path, np.concatenate([sf.read(p, dtype="float32")[0] for p in clips] * repeat), 16000)
    return path


def test_a_regression_bundle_with_a_label_column_and_file_means(trained, tmp_path):  # noqa: F811
    from dataclasses import replace

    from swrr.model import SWRR

    run_dir, _, rows = trained
    bundle = load_bundle(run_dir / "fold01" / "model")
    config = replace(bundle.model_config, num_outputs=1)
    torch.manual_seed(0)
    folder = write_bundle(tmp_path / "regression", SWRR(config).state_dict(), config, "regression", [],
                          replace(bundle.recipe, task="regression", label_names=[]), {}, objective="l1")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": rows["path"][:2], "text": ["a", "b"], "label": ["1.5", "-2"]}).to_csv(manifest, index=False)
    summary, table = predict(tmp_path, folder, [manifest], aggregate="mean")
    assert "label" not in table.columns and table["input_label"].tolist()[:2] == ["1.5", "-2"]
    means = table[table["kind"] == "file-mean"]
    assert len(means) == 2 and np.isfinite(means["score"]).all()
    assert summary.items == 2 and summary.file_means == 2 and "2 of 2 rows predicted and 2 file means" in summary.lines()[0]


def test_a_recipe_that_disagrees_with_the_model_is_refused_on_load(trained, tmp_path):  # noqa: F811
    from dataclasses import replace

    run_dir, _, _ = trained
    bundle = load_bundle(run_dir / "fold01" / "model")
    for key, value in (("max_frames", bundle.recipe.max_frames + 1), ("max_tokens", 7)):
        folder = write_bundle(tmp_path / key, bundle.model.state_dict(), bundle.model_config, bundle.task,
                              bundle.label_names, replace(bundle.recipe, **{key: value}), {})
        with pytest.raises(BundleError, match=f"recipe and the model disagree \\({key} {value} vs"):
            load_bundle(folder)


def test_tampered_bundle_configs_are_refused(trained, tmp_path, monkeypatch):  # noqa: F811
    import json
    import shutil

    run_dir, _, _ = trained
    source = run_dir / "fold01" / "model"
    cases = {"label_names": ("abcd", "distinct class names"), "format_version": ("1", "not an integer")}
    for key, (value, message) in cases.items():
        folder = tmp_path / key
        shutil.copytree(source, folder)
        config = json.loads((folder / "config.json").read_text())
        config[key] = value
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(BundleError, match=message):
            load_bundle(folder)
    folder = tmp_path / "duplicates"
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    config["label_names"] = ["ang", "ang", "sad", "neu"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="distinct class names"):
        load_bundle(folder)
    # a mistyped local folder is not a hub download
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleError, match="no such model bundle folder in runs"):
        load_bundle("runs/nope")


def test_plots_are_unique_per_input_and_a_full_disk_leaves_no_png(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    first = _long_file(tmp_path / "клип.wav", rows["path"][:2], repeat=2)
    second = _long_file(tmp_path / "звук.wav", rows["path"][2:4], repeat=2)
    _, table = predict(tmp_path, run_dir, [first, second], texts=["a", "b"], segment="window", plot=True,
                       name="t.csv")
    pngs = sorted(p.name for p in tmp_path.glob("t.*.png"))
    assert pngs == ["t.звук.png", "t.клип.png"]
    # a full disk while writing a PNG: one line, the CSV is whole, no PNG or .partial left
    for png in tmp_path.glob("t.*.png"):
        png.unlink()
    (tmp_path / "t.клип.png.partial").symlink_to("/dev/full")
    result = CliRunner().invoke(predict_main, ["--model", str(run_dir), str(first), "--text", "a", "--out",
                                               str(tmp_path / "t.csv"), "--segment", "window", "--plot",
                                               "--no-progress", "--device", "cpu"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "predictions are complete in" in lines[0], result.stderr
    assert not list(tmp_path.glob("t.*.png*")) and len(pd.read_csv(tmp_path / "t.csv")) > 1


def test_an_over_long_out_name_is_one_line(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    _refused(["--model", run_dir, rows["path"][0], "--text", "x", "--out", tmp_path / ("p" * 250 + ".csv")],
             "choose a shorter name")
    _refused(["--model", run_dir, rows["path"][0], "--text", "x", "--plot", "--out",
              tmp_path / ("p" * 235 + ".csv")], "--plot")
    assert not list(tmp_path.iterdir())


def test_the_summary_counts_rows_by_kind_and_groups_errors_by_reason(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": list(rows["path"][:4]), "text": ["a", "b", "", "d"],
                  "start": ["x", "-1", "", ""], "end": ["", "", "", ""]}).to_csv(manifest, index=False)
    (tmp_path / "none.wav").write_bytes(Path(rows["path"][5]).read_bytes())
    summary, table = predict(tmp_path, run_dir, [manifest, tmp_path / "none.wav"], aggregate="mean")
    assert summary.errors == {"start/end are not times in seconds": 2, "no transcript": 1}
    assert summary.items == 5 and summary.predicted == 2 and summary.file_means == 5


def _saved(folder: Path, built) -> Path:
    model, processor = built
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_encoder_weights_are_checked_by_digest_not_by_folder(trained, tmp_path):  # noqa: F811
    import shutil
    from dataclasses import replace

    from swrr.extract.encoders import build_tiny_audio, build_tiny_text, load_audio_encoder, load_text_encoder
    from swrr.predict.inputs import PredictError

    run_dir, _, rows = trained
    bundle = load_bundle(run_dir / "fold01" / "model")
    audio = _saved(tmp_path / "wavlm", build_tiny_audio())
    moved = Path(shutil.copytree(audio, tmp_path / "elsewhere" / "wavlm"))
    other = _saved(tmp_path / "other", build_tiny_audio(seed=7))  # same architecture, other weights
    text = _saved(tmp_path / "bert", build_tiny_text())
    digest = load_audio_encoder(str(audio)).weights_digest
    assert load_audio_encoder(str(moved)).weights_digest == digest != load_audio_encoder(str(other)).weights_digest
    recipe = replace(bundle.recipe, audio_encoder=str(audio), text_encoder=str(text), config={},
                     random_encoders=False, audio_encoder_revision=f"local:{audio.resolve()}",
                     text_encoder_revision=f"local:{text.resolve()}",
                     audio_encoder_digest=digest, text_encoder_digest=load_text_encoder(str(text)).weights_digest)
    folder = write_bundle(tmp_path / "b", bundle.model.state_dict(), bundle.model_config, bundle.task,
                          bundle.label_names, recipe, {})
    clip = rows["path"][0]
    summary, _ = predict(tmp_path, folder, [clip], texts=["hi"], audio_encoder=str(moved))
    assert summary.warnings == []  # a moved copy: the same weights, silent
    summary, _ = predict(tmp_path, folder, [clip], texts=["hi"], audio_encoder=str(other))
    (warning,) = summary.warnings
    assert str(other) in warning and str(audio) in warning and digest in warning
    with pytest.raises(PredictError, match="--strict"):
        predict(tmp_path, folder, [clip], texts=["hi"], audio_encoder=str(other), strict=True)
    # a recipe without digests (older caches) still falls back to the revision
    old = write_bundle(tmp_path / "old", bundle.model.state_dict(), bundle.model_config, bundle.task,
                       bundle.label_names, replace(recipe, audio_encoder_digest="", text_encoder_digest=""), {})
    summary, _ = predict(tmp_path, old, [clip], texts=["hi"], audio_encoder=str(moved))
    assert len(summary.warnings) == 1 and "no weights digest" in summary.warnings[0]
    # a recipe/encoder mismatch names the recipe's encoder, not an option that was never given
    odd = write_bundle(tmp_path / "odd", bundle.model.state_dict(), bundle.model_config, bundle.task,
                       bundle.label_names, replace(recipe, sample_rate=8000), {})
    with pytest.raises(PredictError, match="^the recipe's audio encoder .*sampling_rate 16000 vs 8000"):
        predict(tmp_path, odd, [clip], texts=["hi"])
    # a missing encoder is not told to use swrr-extract's --encoders tiny
    gone = write_bundle(tmp_path / "gone", bundle.model.state_dict(), bundle.model_config, bundle.task,
                        bundle.label_names, replace(recipe, audio_encoder=str(tmp_path / "nowhere")), {})
    with pytest.raises(PredictError, match="--audio-encoder PATH") as info:
        predict(tmp_path, gone, [clip], texts=["hi"])
    assert "--encoders" not in str(info.value)


def test_silent_input_problems_get_a_note_or_an_error(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    sf.write(tmp_path / "silence.wav", np.zeros(32000, np.float32), 16000)  # 2 s of digital silence
    clip = rows["path"][0]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"utt_id": ["empty", "long", "past", "negative", "silence"],
                  "path": [clip, clip, clip, clip, str(tmp_path / "silence.wav")],
                  "text": ["   ", " ".join(["word"] * 5000), "hi", "hi", "hi"],
                  "start": ["", "", "0", "-1", ""], "end": ["", "", "80", "2", ""]}).to_csv(manifest, index=False)
    _, table = predict(tmp_path, run_dir, [manifest])
    by_id = table.set_index("id")
    assert by_id.loc["empty", "notes"] == "empty transcript"
    assert by_id.loc["long", "notes"].startswith("transcript cut to its first 50 of ")
    duration = sf.info(clip).duration
    assert float(by_id.loc["past", "end"]) == pytest.approx(duration) and "past the file's end" in by_id.loc["past", "notes"]
    assert by_id.loc["negative", "error"].startswith("start/end are not times") and by_id.loc["negative", "start"] == ""
    assert by_id.loc["silence", "error"].startswith("no speech found") and by_id.loc["silence", "label"] == ""


def test_duplicate_manifest_ids_follow_extracts_rule(tmp_path):
    from swrr.predict.inputs import PredictError

    manifest = tmp_path / "m.csv"
    manifest.write_text("utt_id,path,text\nsame,a.wav,x\nsame,b.wav,y\n")
    with pytest.raises(PredictError, match="duplicate utterance ids same; make the utt_id values unique"):
        collect_inputs([str(manifest)])


def test_export_help_and_examples(trained, tmp_path):  # noqa: F811
    from swrr.predict.export import export_bundle

    run_dir, _, _ = trained
    with pytest.raises(BundleError, match="lies inside"):
        export_bundle(run_dir / "fold01" / "model", run_dir / "fold01" / "model" / "copy")
    assert not (run_dir / "fold01" / "model" / "copy").exists()
    text = CliRunner().invoke(predict_main, ["--help"]).output
    assert "demo-all" not in text and "A progress bar" in text and "--strict" in text


def test_export_copy_failures_are_words():
    import shutil

    from swrr.predict.export import copy_failure

    error = shutil.Error([("/runs/x/fold01/model/model.safetensors", "/out/model.safetensors",
                           "[Errno 28] No space left on device")])
    assert copy_failure(error) == "model.safetensors: [Errno 28] No space left on device"
    assert copy_failure(OSError(28, "No space left on device")) == "No space left on device"


def test_a_head_that_overflows_gives_counted_error_rows(trained, tmp_path):  # noqa: F811
    """Finite weights (loadable) whose outputs overflow to inf/NaN: error rows, never an empty success."""
    run_dir, _, rows = trained
    bundle = load_bundle(run_dir / "fold01" / "model")
    state = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    state["classifier.kernels.weight"] = state["classifier.kernels.weight"].sign() * 3e38
    folder = write_bundle(tmp_path / "overflow", state, bundle.model_config, bundle.task, bundle.label_names,
                          bundle.recipe, {})
    summary, table = predict(tmp_path, folder, [rows["path"][0], rows["path"][1]], texts=["a", "b"])
    assert table["error"].str.startswith("non-finite model output").all() and (table["label"] == "").all()
    assert summary.predicted == 0 and summary.errors == {"non-finite model output": 2}
