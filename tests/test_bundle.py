"""Model bundles: round trip, validation on load, run folders with several folds, swrr-export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from swrr.predict.export import export_bundle
from swrr.bundle import (CONFIG, FORMAT_VERSION, WEIGHTS, BundleError, find_bundle, load_bundle,
                              write_bundle)
from swrr.cache import CacheMeta
from swrr.model import SWRR, SWRRConfig

CONFIG_SMALL = SWRRConfig(audio_dim=16, text_dim=16, max_frames=30, max_tokens=6, num_outputs=3, lstm_hidden=4,
                          cnn_channels=(2, 4))
RECIPE = CacheMeta(dataset="synthetic", task="classification", label_names=["a", "b", "c"], audio_encoder="wavlm-x",
                   text_encoder="bert-x", audio_dim=16, text_dim=16, max_frames=30, max_tokens=6,
                   audio_encoder_revision="abc123", config={"encoders": "pretrained"})


def make_bundle(folder, fold=1, wa=0.5, seed=0):
    torch.manual_seed(seed)
    model = SWRR(CONFIG_SMALL)
    write_bundle(folder, model.state_dict(), CONFIG_SMALL, "classification", ["a", "b", "c"], RECIPE,
                 {"protocol": "loso-speaker", "fold": fold, "test_group": f"spk{fold}", "metrics": {"wa": wa, "ua": wa}})
    return model


def inputs(batch=2):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 30, 16, generator=g), torch.tensor([30, 12]), torch.randn(batch, 6, 16, generator=g),
            torch.tensor([6, 3]))


def test_round_trip_gives_the_same_model_and_records_everything(tmp_path):
    model = make_bundle(tmp_path / "b").eval()
    bundle = load_bundle(tmp_path / "b")
    with torch.no_grad():
        assert torch.equal(bundle.model(*inputs()), model(*inputs()))
    assert bundle.label_names == ["a", "b", "c"] and bundle.task == "classification" and bundle.objective == "ce"
    assert bundle.recipe == RECIPE and bundle.provenance["fold"] == 1 and bundle.provenance["swrr_version"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["README.md", CONFIG, WEIGHTS]
    assert (tmp_path / "b" / WEIGHTS).read_bytes()[:8] != b"PK\x03\x04"  # safetensors, not a torch zip/pickle
    card = (tmp_path / "b" / "README.md").read_text()
    assert "a, b, c" in card and "wavlm-x" in card and "swrr-predict" in card
    assert not (tmp_path / "b.partial").exists()


def _edit_config(folder: Path, **changes):
    config = json.loads((folder / CONFIG).read_text())
    config.update(changes)
    (folder / CONFIG).write_text(json.dumps(config))


@pytest.mark.parametrize("damage, message", [
    ("no folder", "no such model bundle"),
    ("no weights", "missing model.safetensors"),
    ("no config", "missing config.json"),
    ("newer version", f"version {FORMAT_VERSION + 1} is newer than this swrr reads"),
    ("bad json", "not valid JSON"),
    ("shapes", "do not match config.json"),
    ("foreign", "not an swrr model bundle"),
])
def test_damaged_bundles_are_refused_with_one_clear_message(tmp_path, damage, message):
    folder = tmp_path / "b"
    make_bundle(folder)
    if damage == "no folder":
        folder = tmp_path / "missing"
    elif damage == "no weights":
        (folder / WEIGHTS).unlink()
    elif damage == "no config":
        (folder / CONFIG).unlink()
    elif damage == "newer version":
        _edit_config(folder, format_version=FORMAT_VERSION + 1)
    elif damage == "bad json":
        (folder / CONFIG).write_text("{not json")
    elif damage == "shapes":  # config.json says lstm_hidden 8, the weights were made with 4
        config = json.loads((folder / CONFIG).read_text())
        _edit_config(folder, model={**config["model"], "lstm_hidden": 8})
    elif damage == "foreign":
        _edit_config(folder, format="something-else")
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(folder)
    assert "\n" not in str(info.value)


def test_a_run_folder_with_several_folds_needs_a_fold(tmp_path):
    run = tmp_path / "run"
    make_bundle(run / "fold01" / "model", fold=1, wa=0.61)
    make_bundle(run / "fold02" / "model", fold=2, wa=0.72, seed=1)
    with pytest.raises(BundleError, match="choose one with --fold") as info:
        find_bundle(run)
    assert "fold01: spk1 wa 0.61" in str(info.value) and "fold02: spk2 wa 0.72" in str(info.value)
    assert find_bundle(run, 2) == run / "fold02" / "model"
    with pytest.raises(BundleError, match="no fold 3"):
        find_bundle(run, 3)
    assert find_bundle(run / "fold01" / "model") == run / "fold01" / "model"

    out = export_bundle(run, tmp_path / "exported", fold=2)
    assert load_bundle(out).provenance["fold"] == 2
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(run, out, fold=2)
    (run / "fold01" / "model" / WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(BundleError, match="not readable safetensors"):
        export_bundle(run, tmp_path / "broken", fold=1)
    assert not (tmp_path / "broken").exists()


def test_a_fold_with_several_seeds_names_its_units(tmp_path):
    run = tmp_path / "run"  # a run with --seeds 0,1: unit folders fold01-seed0, fold01-seed1
    make_bundle(run / "fold01-seed0" / "model", fold=1, wa=0.61)
    make_bundle(run / "fold01-seed1" / "model", fold=1, wa=0.64, seed=1)
    for fold in (None, 1):
        with pytest.raises(BundleError, match="give one unit's bundle folder instead") as info:
            find_bundle(run, fold)
        assert "fold01-seed0: spk1 wa 0.61" in str(info.value) and "fold01-seed1: spk1 wa 0.64" in str(info.value)
    assert find_bundle(run / "fold01-seed1" / "model") == run / "fold01-seed1" / "model"
