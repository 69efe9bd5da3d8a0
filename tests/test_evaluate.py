"""swrr-evaluate: a model trained on one corpus' cache scored on another's (tiny encoders, the
miniature MELD / MSP-Podcast / IEMOCAP trees): label maps, counted skips, recipe refusals,
rescaled dimensions; the reported metrics equal those recomputed from predictions.csv."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import swrr
from swrr import metrics as M
from swrr.extract.pipeline import ExtractConfig
from swrr.extract.runner import run_extraction
from swrr.train.config import TrainConfig
from swrr.train.evaluate import EvaluateError, parse_label_map
from swrr.train.runner import run

pytest.importorskip("av")
TINY_MODEL = {"lstm_hidden": 8, "cnn_channels": [4, 8]}


def _extract(name, root, out, **kw):
    run_extraction(ExtractConfig(dataset=name, root=root, out=out, encoders="tiny", device="cpu", num_workers=0,
                                 progress=False, **kw))
    return out


def _train(cache, runs, **kw):
    config = dict(cache=str(cache), runs_dir=str(runs), protocol="all", epochs=2, batch_size=4, lr=1e-3,
                  model=dict(TINY_MODEL), threads=1, progress=False, seed=0, device="cpu")
    config.update(kw)
    return run(TrainConfig(**config))


def test_label_map_parsing():
    assert parse_label_map("joy=hap, anger = ang") == {"joy": "hap", "anger": "ang"}
    assert parse_label_map(None) == {}
    with pytest.raises(EvaluateError, match="expected CACHE_CLASS=MODEL_CLASS, got 'joy'"):
        parse_label_map("joy")
    with pytest.raises(EvaluateError, match="names 'joy' twice"):
        parse_label_map("joy=hap,joy=neu")


@pytest.mark.slow
def test_meld_model_on_msp_podcast_with_a_label_map(meld_tree, msp_podcast_tree, tmp_path):
    meld = _extract("meld", meld_tree.root, tmp_path / "meld.h5")
    msp = _extract("msp-podcast", msp_podcast_tree.root, tmp_path / "msp.h5")
    run_dir = _train(meld, tmp_path / "runs")
    out = swrr.evaluate(run_dir, msp, label_map="N=neutral,H=joy,A=anger,S=sadness,U=surprise",
                        out=tmp_path / "eval", device="cpu")
    results = json.loads((out / "results.json").read_text())
    assert results["trained_on"] == "meld" and results["evaluated_on"] == "msp-podcast"
    assert results["skipped"] == {"label D: no counterpart": 1}  # C and F rows are not in the cache at all
    assert results["scored_rows"] == 5
    table = pd.read_csv(out / "unit01" / "predictions.csv")
    names = ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
    truth = dict(zip(table["utt_id"], table["label"]))
    assert names[truth["MSP-PODCAST_0001_0019"]] == "joy" and names[truth["MSP-PODCAST_0004_0010"]] == "surprise"
    metrics = json.loads((out / "unit01" / "metrics.json").read_text())["metrics"]
    recomputed = M.classification_metrics(table["label"], table[[f"logit_{n}" for n in names]].to_numpy().argmax(1), 7)
    assert metrics["wa"] == pytest.approx(recomputed["wa"]) and metrics["ua"] == pytest.approx(recomputed["ua"])
    assert metrics["confusion"] == recomputed["confusion"]
    assert (out / "confusion.png").exists()
    assert pd.read_csv(out / "summary.csv").set_index("key").loc["ua", "mean"] == pytest.approx(100 * metrics["ua"])

    other = _extract("msp-podcast", msp_podcast_tree.root, tmp_path / "msp40.h5", max_tokens=40)
    with pytest.raises(EvaluateError, match=r"another recipe .*differs in: max_tokens \(50 vs 40\)"):
        swrr.evaluate(run_dir, other, out=tmp_path / "eval2", device="cpu")
    assert not (tmp_path / "eval2").exists()
    with pytest.raises(EvaluateError, match="no class of .* matches one of the model's"):
        swrr.evaluate(run_dir, msp, out=tmp_path / "eval3", device="cpu")
    cli = subprocess.run([sys.executable, "-m", "swrr.train.evaluate_cli", "--model", str(run_dir), "--cache", str(msp),
                          "--label-map", "N=neutral,Q=joy", "--out", str(tmp_path / "eval4")],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "Q not among the cache's classes" in cli.stderr
    assert "Traceback" not in cli.stderr


@pytest.mark.slow
def test_a_dimensional_model_on_another_scale(iemocap_tree, msp_podcast_tree, tmp_path):
    """IEMOCAP valence/arousal (1-5) scored on MSP-Podcast (1-7): predictions mapped onto 1-7."""
    iemocap = _extract("iemocap", iemocap_tree.root, tmp_path / "iemocap.h5")
    msp = _extract("msp-podcast", msp_podcast_tree.root, tmp_path / "msp.h5")
    run_dir = _train(iemocap, tmp_path / "runs", target="valence,arousal")
    bundle = run_dir / "fold01" / "model"
    out = swrr.evaluate(bundle, msp, out=tmp_path / "eval", device="cpu")
    results = json.loads((out / "results.json").read_text())
    assert results["notes"] and "mapped linearly" in results["notes"][0]
    table = pd.read_csv(out / "unit01" / "predictions.csv")
    assert list(table.columns) == ["utt_id", "label_valence", "prediction_valence", "label_arousal",
                                   "prediction_arousal"]
    raw = swrr.evaluate(bundle, iemocap, out=tmp_path / "eval_self", device="cpu")
    assert not json.loads((raw / "results.json").read_text())["notes"]  # same scale: no mapping
    metrics = json.loads((out / "unit01" / "metrics.json").read_text())["metrics"]
    for dim in ("valence", "arousal"):
        assert metrics[f"ccc_{dim}"] == pytest.approx(M.ccc(table[f"label_{dim}"], table[f"prediction_{dim}"]),
                                                      abs=1e-6)
    # the same model's raw outputs on the msp rows, mapped 1-5 -> 1-7 by hand
    from swrr.bundle import load_bundle
    from swrr.cache import FeatureCache

    model, cache = load_bundle(bundle).model, FeatureCache(msp)
    row = list(cache.utt_id).index(table["utt_id"][0])
    data = cache.read_rows([row])
    import torch

    with torch.no_grad():
        raw_out = model(*(torch.from_numpy(np.asarray(data[k])) for k in ("audio", "audio_len", "text", "text_len")))
    assert table["prediction_valence"][0] == pytest.approx(1 + (float(raw_out[0, 0]) - 1) * 6 / 4, abs=1e-4)


@pytest.mark.slow
def test_swrr_predict_writes_one_score_column_per_dimension(iemocap_tree, tmp_path):
    """A dimensional bundle through swrr-predict on a wav and on an mp4 clip: score_<dim> columns, the
    wav's scores equal to the model's outputs on that utterance's cache row (the trainer's view)."""
    import torch

    from corpora_trees import write_mp4
    from swrr.bundle import load_bundle
    from swrr.cache import FeatureCache
    from swrr.predict.runner import PredictConfig, run_predict

    cache_path = _extract("iemocap", iemocap_tree.root, tmp_path / "iemocap.h5")
    bundle = _train(cache_path, tmp_path / "runs", target="valence,arousal") / "fold01" / "model"
    wav = iemocap_tree.root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    clip = write_mp4(tmp_path / "clip.mp4", seconds=0.5)
    out = tmp_path / "p.csv"
    run_predict(PredictConfig(model=str(bundle), inputs=[str(wav), str(clip)], texts=["Excuse me.", "hello"],
                              out=out, device="cpu", progress=False, segment="none", workers=0))
    table = pd.read_csv(out, keep_default_na=False)
    assert {"score_valence", "score_arousal"} <= set(table.columns) and "score" not in table.columns
    assert (table["error"] == "").all() and np.isfinite(table[["score_valence", "score_arousal"]].to_numpy()).all()
    cache = FeatureCache(cache_path)
    data = cache.read_rows([list(cache.utt_id).index("Ses01F_impro01_F000")])
    with torch.no_grad():
        expected = load_bundle(bundle).model(*(torch.from_numpy(np.asarray(data[k]))
                                               for k in ("audio", "audio_len", "text", "text_len")))[0]
    got = table.iloc[0][["score_valence", "score_arousal"]].to_numpy(dtype=float)
    assert got == pytest.approx(expected.numpy(), abs=1e-3)


def test_swrr_evaluate_and_targets_import_no_media_or_transformers_library():
    blocked = ("import sys\n"
               "for name in ('librosa', 'soundfile', 'transformers', 'av'):\n"
               "    sys.modules[name] = None\n"
               "import swrr.train.evaluate_cli, swrr.targets, swrr.train.runner\n"
               "print(swrr.evaluate.__module__)\n")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "swrr.train.evaluate"


@pytest.mark.slow
def test_a_model_of_another_label_kind_is_scored_on_that_kind(meld_tree, tmp_path):
    """A MELD model trained with --target sentiment is scored on the cache's sentiment classes."""
    meld = _extract("meld", meld_tree.root, tmp_path / "meld.h5")
    run_dir = _train(meld, tmp_path / "runs", target="sentiment")
    out = swrr.evaluate(run_dir, meld, out=tmp_path / "eval", device="cpu")
    results = json.loads((out / "results.json").read_text())
    assert results["scored_rows"] == 11 and results["skipped"] == {}
    table = pd.read_csv(out / "unit01" / "predictions.csv")
    sentiments = ["negative", "neutral", "positive"]
    truth = {u: sentiments[k] for u, k in zip(table["utt_id"], table["label"])}
    assert truth["train_dia1_utt0"] == "positive" and truth["valid_dia0_utt1"] == "negative"
