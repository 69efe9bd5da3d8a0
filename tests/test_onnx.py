"""ONNX: swrr-export --onnx writes a validated head.onnx the bundle lists, a failing one is refused,
swrr-predict --backend onnx gives the torch backend's numbers, and a missing extra is one line."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 'swrr[onnx]') is not installed")
pytestmark = pytest.mark.slow  # an export traces the head with torch.export: ~10-90 s on a loaded 2-core machine

from swrr.bundle import CONFIG, BundleError, load_bundle  # noqa: E402
from swrr.extras import MissingExtra, require  # noqa: E402
from swrr.predict.export import export_bundle  # noqa: E402
from swrr.predict.inputs import PredictError  # noqa: E402
from swrr.predict.onnx import HEAD_FILE, OnnxHead, validation_rows  # noqa: E402
from tests.test_bundle import make_bundle  # noqa: E402
from tests.test_predict import predict, trained  # noqa: E402,F401 (a fixture)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):  # noqa: F811
    """The trained run's bundle exported with --onnx by the real command; (folder, its stdout)."""
    out = tmp_path_factory.mktemp("export") / "onnx-bundle"
    done = subprocess.run([sys.executable, "-m", "swrr.predict.export", str(trained[0]), "--onnx", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_export_writes_a_validated_head_the_bundle_lists(exported):
    out, stdout = exported
    config = json.loads((out / CONFIG).read_text())
    assert config["onnx"]["head"] == HEAD_FILE and (out / HEAD_FILE).is_file()
    assert config["onnx"]["opset"] >= 17 and config["onnx"]["max_abs_logit_diff"] < 1e-4
    assert "max |logit difference| vs PyTorch" in stdout and "opset" in stdout
    assert not list(out.parent.glob("*.partial"))
    bundle = load_bundle(out)
    assert bundle.onnx_file("head") == out / HEAD_FILE
    # the exported graph has a dynamic batch and agrees with PyTorch on other rows than export checked
    head = OnnxHead(bundle, torch.device("cpu"))
    for inputs in validation_rows(bundle, seed=7):
        with torch.no_grad():
            np.testing.assert_allclose(head(*inputs).numpy(), bundle.model(*inputs).numpy(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="audio_len must be in"):  # the check the graph leaves out still runs
        bad = validation_rows(bundle)[0]
        head(bad[0], bad[1] * 0, bad[2], bad[3])


def test_an_export_that_disagrees_with_pytorch_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    import swrr.predict.onnx as onnx_module

    make_bundle(tmp_path / "small")  # a smaller head than the workflow's: its export is quicker
    monkeypatch.setattr(onnx_module, "TOLERANCE", 0.0)  # no difference is < 0: the check fails every export
    with pytest.raises(BundleError, match="disagrees with PyTorch"):
        export_bundle(tmp_path / "small", tmp_path / "out", onnx=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small"]


def backend_difference(tmp_path, model, rows):
    """swrr-predict of the demo test rows with `model` on the torch and the onnx backend:
    -> (max |probability difference|, whether every label agrees)."""
    manifest = tmp_path / "rows.csv"
    rows[rows["split"] == "test"][["utt_id", "path", "text"]].to_csv(manifest, index=False)
    _, torch_table = predict(tmp_path, model, [manifest], name="torch.csv")
    _, onnx_table = predict(tmp_path, model, [manifest], name="onnx.csv", backend="onnx")
    names = [c for c in torch_table.columns if c.startswith("prob_")]
    diff = np.abs(torch_table[names].to_numpy() - onnx_table[names].to_numpy()).max()
    print(f"onnx vs torch backend ({model.name}): max probability difference {diff:.2e}")
    return diff, (torch_table["label"] == onnx_table["label"]).all()


def test_predict_on_onnxruntime_equals_the_torch_backend(trained, exported, tmp_path):  # noqa: F811
    diff, same_labels = backend_difference(tmp_path, exported[0], trained[2])
    assert diff < 1e-5 and same_labels


def test_onnx_backend_without_an_exported_head_and_a_missing_extra_are_one_line(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    with pytest.raises(BundleError, match="has no ONNX head; export one with swrr-export"):
        predict(tmp_path, run_dir, [rows["path"][0]], texts=["x"], backend="onnx")
    with pytest.raises(PredictError, match="backend must be one of torch, onnx"):
        predict(tmp_path, run_dir, [rows["path"][0]], texts=["x"], backend="tensorrt")
    with pytest.raises(MissingExtra, match=r"pip install 'swrr\[onnx\]'"):
        require("onnx", "onnxruntime_that_is_not_installed")
    done = subprocess.run([sys.executable, "-m", "swrr.predict", "--model", str(run_dir), rows["path"][0],
                           "--text", "x", "--backend", "onnx", "--out", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "swrr-export" in done.stderr


def test_onnx_encoders_run_the_whole_model_on_onnxruntime_with_the_torch_numbers(trained, tmp_path):  # noqa: F811
    run_dir, _, rows = trained
    report = {}
    out = export_bundle(run_dir, tmp_path / "full", onnx_encoders=True, report=report)
    config = json.loads((out / CONFIG).read_text())["onnx"]
    assert config["audio_encoder"] == "audio_encoder.onnx" and config["text_encoder"] == "text_encoder.onnx"
    assert config["encoders_max_abs_logit_diff"] < 1e-4 and config["head"] == HEAD_FILE
    print(f"encoders: max |logit diff| {report['encoders_max_abs_logit_diff']:.2e}, "
          f"max |feature diff| {report['encoders_max_abs_feature_diff']:.2e}")
    from swrr.predict.engine import Predictor

    predictor = Predictor(load_bundle(out), "cpu", backend="onnx")
    assert predictor.onnx_encoders and not isinstance(predictor.audio.model, torch.nn.Module)
    diff, same_labels = backend_difference(tmp_path, out, rows)
    # features are rounded to the cache's float16 after the encoders: a float32 difference of ~1e-6
    # can move a value one float16 step, as between swrr-extract's and swrr-predict's batches
    assert diff < 1e-3 and same_labels
