"""swrr-predict: parity with the trainer's evaluation, inputs, error rows, bad requests.

One small real workflow is shared by the tests: 24 demo clips (speaker S1F: 16 train, 4 valid,
4 test) extracted with the tiny random encoders, a tiny head trained 2 epochs on it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from swrr.extract.pipeline import ExtractConfig
from swrr.extract.runner import run_extraction
from swrr.predict.inputs import PredictError, collect_inputs
from swrr.predict.runner import PredictConfig, run_predict
from swrr.bundle import load_bundle, write_bundle
from swrr.model import SWRR, ablation_config
from tests.conftest import write_wav
from swrr.train.config import TrainConfig
from swrr.train.runner import run

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "extract" / "demo_data"
TINY_MODEL = {"lstm_hidden": 8, "cnn_channels": [4, 8]}
# Parity tolerance on probabilities. The cache holds float16 features; predict rounds its own
# features to float16 too, but encodes the test clips in other batches than extraction did, so
# the float32 features differ by ~1e-6 before rounding and a few values round to the neighbouring
# float16 (one ulp: ~1e-3 relative). The head turns that into probability differences of ~1e-5;
# 1e-3 leaves margin and is still far below any change of a predicted label.
PARITY_ATOL = 1e-3


def demo_rows(speaker="S1F"):
    table = pd.read_csv(DEMO / "demo.csv", dtype=str, keep_default_na=False)
    return table[table["speaker"] == speaker].reset_index(drop=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, cache path, the manifest rows) of a tiny trained model on 24 demo clips."""
    root = tmp_path_factory.mktemp("workflow")
    rows = demo_rows()
    rows["path"] = [str(DEMO / p) for p in rows["path"]]
    manifest = root / "manifest.csv"
    rows.to_csv(manifest, index=False)
    cache = root / "demo.h5"
    run_extraction(ExtractConfig(dataset="manifest", root=manifest, out=cache, encoders="tiny", device="cpu",
                                 num_workers=0, progress=False))
    run_dir = run(TrainConfig(cache=str(cache), runs_dir=str(root / "runs"), name="parity", protocol="split",
                              epochs=2, batch_size=4, lr=2e-3, model=dict(TINY_MODEL), threads=1, progress=False,
                              device="cpu"))
    return run_dir, cache, rows


def metrics_of(run_dir, fold="fold01"):
    return json.loads((Path(run_dir) / fold / "metrics.json").read_text())


def predict(tmp_path, model, inputs, **kwargs):
    out = tmp_path / kwargs.pop("name", "predictions.csv")
    config = PredictConfig(model=str(model), inputs=[str(i) for i in inputs], out=out, device="cpu",
                           progress=False, **{"segment": "none", **kwargs})
    summary = run_predict(config)
    table = pd.read_json(out, lines=True) if config.format == "jsonl" else pd.read_csv(out, keep_default_na=False)
    return summary, table


def test_predictions_on_raw_audio_equal_the_trainers_evaluation(trained, tmp_path):
    run_dir, _, rows = trained
    test_rows = rows[rows["split"] == "test"][["utt_id", "path", "text", "label"]]
    manifest = tmp_path / "test_rows.csv"
    test_rows.to_csv(manifest, index=False)
    summary, table = predict(tmp_path, run_dir, [manifest])
    assert summary.predicted == len(test_rows) == 4 and not summary.errors

    trainer = pd.read_csv(run_dir / "fold01" / "predictions.csv")  # the evaluation's logits on cached rows
    bundle = load_bundle(run_dir / "fold01" / "model")
    names = bundle.label_names
    logits = trainer[[f"logit_{n}" for n in names]].to_numpy(np.float32)
    # the split run has validation rows: the bundle carries their temperature and predict applies it
    assert bundle.temperature == metrics_of(run_dir)["metrics"]["calibration"]["temperature"] != 1.0
    expected = torch.softmax(torch.from_numpy(logits) / bundle.temperature, -1).numpy()
    got = table.set_index("id").loc[trainer["utt_id"], [f"prob_{n}" for n in names]].to_numpy()
    print(f"parity: max |predict - trainer| probability difference {np.abs(got - expected).max():.2e}")
    np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=0)
    assert list(table.set_index("id").loc[trainer["utt_id"], "label"]) == [names[k] for k in expected.argmax(1)]
    assert (table["text_source"] == "given").all()
    metrics = json.loads((run_dir / "fold01" / "metrics.json").read_text())
    assert bundle.provenance["selected_epoch"] == metrics["selected_epoch"]  # the model the run reports
    # the manifest's label column is kept, renamed as it collides with the prediction's
    assert table["input_label"].tolist() == test_rows["label"].tolist()
    assert set(table.columns) >= {"id", "file", "start", "end", "transcript", "text_source", "notes", "error"}


def test_protocol_all_trains_one_model_on_every_row_and_writes_its_bundle(trained, tmp_path):
    _, cache, rows = trained
    run_dir = run(TrainConfig(cache=str(cache), runs_dir=str(tmp_path), name="deploy", protocol="all", epochs=1,
                              batch_size=8, model=dict(TINY_MODEL), threads=1, progress=False, device="cpu"))
    result = json.loads((run_dir / "fold01" / "metrics.json").read_text())
    assert result["sizes"] == {"train": len(rows), "valid": 0, "test": 0} and result["selection"] == "last epoch"
    bundle = load_bundle(run_dir)  # a run folder with one fold: its bundle
    assert bundle.provenance["protocol"] == "all" and bundle.provenance["test_group"] == ""
    assert bundle.recipe.config["encoders"] == "tiny" and bundle.recipe.random_encoders


def test_files_with_text_and_sidecars_and_a_folder(trained, tmp_path):
    run_dir, _, rows = trained
    clips = tmp_path / "clips"
    for i, row in rows.head(3).iterrows():
        target = clips / ("sub" if i == 2 else "") / Path(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(row["path"]).read_bytes())
        if i < 2:
            target.with_suffix(".txt").write_text(row["text"])
    _, table = predict(tmp_path, run_dir, [clips], name="folder.jsonl")
    by_id = table.set_index("id")
    first = Path(rows["path"][0]).stem
    assert by_id.loc[first, "text_source"] == "sidecar" and by_id.loc[first, "transcript"] == rows["text"][0]
    no_text = f"sub/{Path(rows['path'][2]).stem}"
    assert "no transcript" in by_id.loc[no_text, "error"]  # a row, not a crash

    one = Path(rows["path"][3])
    _, single = predict(tmp_path, run_dir, [one], texts=["hello there"], name="one.csv")
    assert single["text_source"].tolist() == ["given"] and single["transcript"].tolist() == ["hello there"]
    with pytest.raises(PredictError, match="ambiguous"):
        collect_inputs([str(clips)], ["some text"])


def test_bad_audio_becomes_error_rows(trained, tmp_path):
    run_dir, _, rows = trained
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio at all")
    write_wav(tmp_path / "short.wav", seconds=0.01)
    write_wav(tmp_path / "stereo8k.wav", seconds=0.6, sample_rate=8000, channels=2)
    manifest = tmp_path / "bad.csv"
    names = ["missing.wav", "empty.wav", "text.wav", "short.wav", "stereo8k.wav"]
    pd.DataFrame({"path": names, "text": "hello", "speaker": "x"}).to_csv(manifest, index=False)
    summary, table = predict(tmp_path, run_dir, [manifest])
    errors = dict(zip(table["id"], table["error"]))
    assert errors["missing"].startswith("missing audio file")
    assert errors["empty"].startswith("empty file")
    assert errors["text"].startswith("not an audio file")
    assert errors["short"].startswith("shorter than one WavLM frame")
    assert errors["stereo8k"] == "" and table.set_index("id").loc["stereo8k", "notes"] == \
        "resampled from 8000 Hz; 2 channels averaged"
    assert summary.predicted == 1 and sum(summary.errors.values()) == 4
    assert (table["input_speaker"] == "x").all()  # extra manifest columns are kept, prefixed


def test_audio_only_model_needs_no_text(trained, tmp_path):
    run_dir, _, rows = trained
    bundle = load_bundle(run_dir / "fold01" / "model")
    config = ablation_config(bundle.model_config, "audio-only")
    torch.manual_seed(0)
    folder = write_bundle(tmp_path / "audio-only", SWRR(config).state_dict(), config, bundle.task,
                          bundle.label_names, bundle.recipe, {"protocol": "split", "fold": 1})
    summary, table = predict(tmp_path, folder, [rows["path"][0]])
    assert summary.predicted == 1 and table["error"].tolist() == [""] and table["text_source"].tolist() == [""]


def test_missing_encoder_and_mismatching_override_are_one_clear_message(trained, tmp_path):
    from swrr.extract.encoders import build_tiny_audio

    run_dir, _, rows = trained
    bundle = load_bundle(run_dir / "fold01" / "model")
    recipe = replace(bundle.recipe, audio_encoder=str(tmp_path / "nowhere" / "wavlm"), config={})
    folder = write_bundle(tmp_path / "b", bundle.model.state_dict(), bundle.model_config, bundle.task,
                          bundle.label_names, recipe, {})
    with pytest.raises(PredictError, match="--audio-encoder PATH"):
        predict(tmp_path, folder, [rows["path"][0]], texts=["hi"])
    model, extractor = build_tiny_audio(hidden_size=32)
    model.save_pretrained(tmp_path / "wavlm32")
    extractor.save_pretrained(tmp_path / "wavlm32")
    with pytest.raises(PredictError, match="hidden_size 32 vs 64"):
        predict(tmp_path, run_dir, [rows["path"][0]], texts=["hi"], audio_encoder=str(tmp_path / "wavlm32"))


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "swrr.predict.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_cli_bad_requests_exit_2_with_one_line_and_write_nothing(trained, tmp_path):
    from click.testing import CliRunner

    from swrr.predict.cli import main

    run_dir, _, rows = trained
    clip = rows["path"][0]
    cases = [
        (["--model", run_dir, clip, "--text", "x", "--out", tmp_path / "no" / "p.csv"], "does not exist"),
        (["--model", run_dir, clip, "--text", "x", "--out", tmp_path], "is a folder"),
        (["--model", run_dir, DEMO / "wav", "--text", "x", "--out", tmp_path / "p.csv"], "ambiguous"),
        (["--model", tmp_path / "nothing", clip, "--out", tmp_path / "p.csv"], "no such model bundle"),
        (["--model", run_dir, clip, "--asr-all", "--out", tmp_path / "p.csv"], "--asr-all needs --asr"),
    ]
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((["--model", run_dir, clip, "--out", locked / "p.csv"], "not writable"))
    for args, message in cases:
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not (tmp_path / "p.csv").exists()

    # the real command line, in its own process
    ok = _cli("--model", run_dir, clip, "--text", "hello", "--out", tmp_path / "p.csv", "--no-progress",
              "--segment", "none", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "1 of 1 rows predicted" in ok.stdout and len(pd.read_csv(tmp_path / "p.csv")) == 1


def joined_clips(path, clips, gaps, rate=16000):
    """Clips joined by silences (gaps[0] before the first, gaps[i] after clip i); -> (start, end) of each clip."""
    import soundfile as sf

    parts, spans, t = [], [], 0.0
    for gap, clip in zip(gaps, clips + [None]):
        parts.append(np.zeros(int(gap * rate), np.float32))
        t += gap
        if clip is not None:
            wave, sr = sf.read(clip, dtype="float32")
            assert sr == rate
            parts.append(wave)
            spans.append((t, t + len(wave) / rate))
            t += len(wave) / rate
    sf.write(path, np.concatenate(parts), rate)
    return spans


def test_a_long_file_becomes_a_timeline_of_its_speech(trained, tmp_path):
    run_dir, _, rows = trained
    spans = joined_clips(tmp_path / "long.wav", list(rows["path"][:4]), [1.0, 1.5, 2.0, 1.0, 1.5])
    (tmp_path / "long.txt").write_text("the whole conversation")
    summary, table = predict(tmp_path, run_dir, [tmp_path / "long.wav"], segment="vad", aggregate="mean",
                             plot=True, name="long.csv")
    segments = table[table["kind"] == "segment"]
    assert len(segments) == len(spans) and (segments["error"] == "").all()  # silence gets no row
    for (start, end), (_, row) in zip(spans, segments.iterrows()):
        assert abs(row["start"] - start) <= 0.25 and abs(row["end"] - end) <= 0.25, (start, end, row)
    assert (segments["notes"] == "whole-file transcript").all()
    assert (segments["transcript"] == "the whole conversation").all()
    mean = table[table["kind"] == "file-mean"].iloc[0]
    probs = [c for c in table.columns if c.startswith("prob_")]
    np.testing.assert_allclose(mean[probs].to_numpy(float), segments[probs].mean().to_numpy(), rtol=1e-6)
    assert (tmp_path / "long.long.png").stat().st_size > 0

    # window mode: the whole file in windows of the span every --hop seconds, the last ending at the end
    _, windowed = predict(tmp_path, run_dir, [tmp_path / "long.wav"], segment="window", hop=2.0, name="w.csv")
    total = spans[-1][1] + 1.5
    starts = windowed["start"].tolist()
    assert starts[:3] == [0.0, 2.0, 4.0] and windowed["end"].iloc[-1] == pytest.approx(total, abs=1e-3)
    assert (windowed["end"] - windowed["start"]).max() == pytest.approx(81680 / 16000, abs=1e-3)

    # silence only: one error row, no prediction
    import soundfile as sf

    sf.write(tmp_path / "quiet.wav", np.zeros(16000 * 7, np.float32), 16000)
    _, quiet = predict(tmp_path, run_dir, [tmp_path / "quiet.wav"], texts=["x"], segment="vad", name="q.csv")
    assert quiet["error"].tolist() == ["no speech found (VAD)"]


def save_tiny_whisper(folder: Path) -> Path:
    from swrr.predict.asr import save_random_whisper

    return save_random_whisper(folder)


def test_asr_fills_missing_transcripts_and_asr_all_replaces_given_ones(trained, tmp_path):
    run_dir, _, rows = trained
    whisper = save_tiny_whisper(tmp_path / "whisper")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": rows["path"][:2], "text": ["given words", ""], "utt_id": ["given", "none"]}) \
        .to_csv(manifest, index=False)
    clip = tmp_path / "bare.wav"
    clip.write_bytes(Path(rows["path"][2]).read_bytes())  # no --text, no sidecar
    _, table = predict(tmp_path, run_dir, [manifest, clip], asr=str(whisper), name="asr.csv")
    source = dict(zip(table["id"], table["text_source"]))
    assert source == {"given": "given", "none": "given", "bare": "asr"} and (table["error"] == "").all()
    assert table.set_index("id").loc["given", "transcript"] == "given words"

    _, everything = predict(tmp_path, run_dir, [manifest, clip], asr=str(whisper), asr_all=True, name="all.csv")
    assert (everything["text_source"] == "asr").all() and (everything["error"] == "").all()


def test_a_file_that_fails_to_decode_errors_only_its_own_row(trained, tmp_path, monkeypatch):
    import swrr.extract.featurizer as featurizer
    from swrr.extract.audio import AudioError

    run_dir, _, rows = trained
    real = featurizer.load_audio
    broken = Path(rows["path"][1])

    def load(utt, *args, **kwargs):  # the header is fine, the samples are not (as a truncated chunk)
        if Path(utt.audio_path) == broken:
            raise AudioError(broken, "truncated or corrupt header", "simulated")
        return real(utt, *args, **kwargs)

    monkeypatch.setattr(featurizer, "load_audio", load)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": rows["path"][:3], "text": rows["text"][:3]}).to_csv(manifest, index=False)
    summary, table = predict(tmp_path, run_dir, [manifest], workers=0)
    errors = dict(zip(table["file"], table["error"]))
    assert errors[str(broken)] == "truncated or corrupt header (simulated)"
    assert summary.predicted == 2 and all(errors[p] == "" for p in rows["path"][[0, 2]])


def test_a_waveform_in_memory_scores_as_the_file_it_was_read_from(trained, tmp_path):
    """The in-memory path (the API's classify(waveform, sampling_rate, text)): the same features,
    hence the same outputs, and the same notes as the file, resampled and mixed down alike."""
    import soundfile as sf

    from swrr.predict.engine import Predictor
    from swrr.predict.inputs import Item

    run_dir, _, rows = trained
    clip = write_wav(tmp_path / "stereo.wav", seconds=1.4, sample_rate=44100, channels=2, freq=180.0)
    waveform, rate = sf.read(clip)
    predictor = Predictor(load_bundle(run_dir / "fold01" / "model"), "cpu")
    from_file = Item("file", clip, rows["text"][0], "given")
    in_memory = Item("memory", None, rows["text"][0], "given", waveform=waveform, sampling_rate=rate)
    expected, got = predictor.predict([from_file]), predictor.predict([in_memory])
    assert np.isfinite(expected).all() and not in_memory.error
    np.testing.assert_array_equal(got, expected)
    assert in_memory.notes == from_file.notes == ["resampled from 44100 Hz", "2 channels averaged"]
    broken = Item("broken", None, "x", "given", waveform=np.full(16000, np.nan), sampling_rate=16000)
    assert np.isnan(predictor.predict([broken])).all()
    assert broken.error == "non-finite samples (16000 NaN or inf samples)"


def test_the_vad_leaves_torchs_thread_count_as_it_was():
    """silero_vad sets torch's global thread count to 1 on import; that would slow and change every
    later computation of the process (e.g. an extraction after a prediction)."""
    from swrr.predict import segment

    segment._silero.cache_clear()
    for name in [m for m in sys.modules if m == "silero_vad" or m.startswith("silero_vad.")]:
        del sys.modules[name]  # so that this test imports it afresh
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # a count the import would change
    try:
        segment.speech_regions(np.zeros(16000, dtype=np.float32), 16000)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("start,end", [("0", "inf"), ("nan", "2"), ("-1", "2"), ("one", "")])
def test_manifest_times_that_are_not_finite_seconds_make_an_error_row(tmp_path, start, end):
    """As swrr-extract's manifest reader: start/end must be finite and >= 0 (an 'inf' end used to
    pass here and crash the whole run later, in the segment arithmetic)."""
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,text,start,end\nclip.wav,hello,{start},{end}\n")
    (item,) = collect_inputs([str(manifest)])
    assert item.error.startswith("start/end are not times in seconds (line 2:")


def test_a_multi_layer_bundle_of_a_non_default_pair_predicts_with_parity(tmp_path):
    """HuBERT (48-d) + DistilBERT (32-d, no token type ids), every hidden state cached, the head
    trained on a subset (--layers 1:2) with learned weights: swrr-predict extracts exactly those
    hidden states, mixes them with the bundle's weights and equals the trainer's evaluation."""
    import zoo
    from swrr.predict.engine import load_recipe_encoders

    audio_dir = zoo.save(lambda h: zoo.AUDIO["hubert"](48), tmp_path / "hubert")
    text_dir = zoo.save(zoo.TEXT["distilbert"], tmp_path / "distilbert")
    rows = demo_rows()
    rows["path"] = [str(DEMO / p) for p in rows["path"]]
    manifest = tmp_path / "manifest.csv"
    rows.to_csv(manifest, index=False)
    cache = tmp_path / "layers.h5"
    run_extraction(ExtractConfig(dataset="manifest", root=manifest, out=cache, audio_encoder=str(audio_dir),
                                 text_encoder=str(text_dir), layers="all", device="cpu", num_workers=0,
                                 progress=False))
    run_dir = run(TrainConfig(cache=str(cache), runs_dir=str(tmp_path / "runs"), name="layers", protocol="split",
                              epochs=2, batch_size=4, lr=2e-2, model=dict(TINY_MODEL), threads=1, progress=False,
                              device="cpu", layers="1:2"))
    bundle = load_bundle(run_dir / "fold01" / "model")
    assert bundle.recipe.stored_layers("audio") == [1, 2] == bundle.recipe.stored_layers("text")
    assert (bundle.model_config.audio_layers, bundle.model_config.layer_mix) == (2, "learned")
    weights = bundle.model.layer_weights()
    assert weights["audio"] != [0.5, 0.5]  # learned, and restored from model.safetensors
    audio, text = load_recipe_encoders(bundle)
    assert (audio.layers, text.layers, audio.family.label, text.family.label) == ([1, 2], [1, 2], "HuBERT", "DistilBERT")
    test_rows = rows[rows["split"] == "test"][["utt_id", "path", "text", "label"]]
    test_manifest = tmp_path / "test_rows.csv"
    test_rows.to_csv(test_manifest, index=False)
    summary, table = predict(tmp_path, run_dir, [test_manifest])
    assert summary.predicted == 4 and not summary.errors
    trainer = pd.read_csv(run_dir / "fold01" / "predictions.csv")
    names = bundle.label_names
    logits = torch.from_numpy(trainer[[f"logit_{n}" for n in names]].to_numpy(np.float32))
    expected = torch.softmax(logits / bundle.temperature, -1).numpy()  # the split run's fitted temperature
    got = table.set_index("id").loc[trainer["utt_id"], [f"prob_{n}" for n in names]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=0)
    assert "mixed by learned weights" in (run_dir / "fold01" / "model" / "README.md").read_text()


ONE_CLIP = """
import sys
from swrr.entry import predict
sys.argv = ["swrr-predict", *sys.argv[1:]]
try:
    predict()
finally:
    print("loaded:", *(m for m in ("silero_vad", "matplotlib", "transformers.pipelines", "librosa")
                       if m in sys.modules))
"""


def test_one_clip_from_the_command_line_loads_no_vad_asr_or_plotting(trained, tmp_path):
    """Start-up is most of a one-clip run (issue 22): what this run does not use (Silero VAD for
    clips within the model's span, the ASR pipeline, matplotlib) is imported only when used."""
    run_dir, _, rows = trained
    out = tmp_path / "one.csv"
    done = subprocess.run([sys.executable, "-c", ONE_CLIP, "--model", str(run_dir), rows["path"][0], "--text",
                           "hello there", "--out", str(out), "--no-progress"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "loaded:"  # none of them
    assert pd.read_csv(out, keep_default_na=False)["error"].tolist() == [""]
