"""swrr.EmotionRecognizer: its Predictions and tables are swrr-predict's rows (a real swrr-predict
process), a waveform in memory (the featurizer's in-memory path) scores as the file holding it,
bad calls are one clear SwrrError."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from swrr.errors import OptionError, SwrrError
from swrr.predict.inputs import PredictError
from swrr.predict.recognizer import EmotionRecognizer, Prediction
from tests.conftest import write_wav
from tests.test_predict import _cli, trained  # noqa: F401 (trained is a fixture)

PROBS_ATOL = 1e-6  # the bound; the same code path gives equal numbers


@pytest.fixture(scope="module")
def recognizer(trained):  # noqa: F811
    run_dir, _, _ = trained
    return EmotionRecognizer.from_pretrained(run_dir, device="cpu", workers=0)


@pytest.fixture(scope="module")
def clips(trained, tmp_path_factory):  # noqa: F811
    """(manifest of 3 test clips with text, an 8 kHz stereo file, swrr-predict's table of both)."""
    run_dir, _, rows = trained
    folder = tmp_path_factory.mktemp("clips")
    manifest = folder / "test_rows.csv"
    rows[rows["split"] == "test"][["utt_id", "path", "text"]].head(3).to_csv(manifest, index=False)
    stereo = write_wav(folder / "stereo8k.wav", seconds=0.6, sample_rate=8000, channels=2)
    (folder / "stereo8k.txt").write_text("a sidecar transcript")
    out = folder / "cli.csv"
    done = _cli("--model", run_dir, manifest, stereo, "--out", out, "--no-progress", "--segment", "none",
                "--workers", "0", "--device", "cpu", cwd=folder)
    assert done.returncode == 0, done.stderr
    return manifest, stereo, out


def test_predict_returns_exactly_the_table_swrr_predict_writes(recognizer, clips):
    manifest, stereo, cli_out = clips
    table = recognizer.predict([manifest, stereo], segment="none", progress=False)
    assert isinstance(table, pd.DataFrame) and len(table) == 4
    assert table.to_csv(index=False) == cli_out.read_text()  # same rows, columns, values, order


def test_classify_file_equals_the_cli_row_of_the_same_clip(recognizer, clips):
    manifest, stereo, cli_out = clips
    cli = pd.read_csv(cli_out, keep_default_na=False).set_index("id")
    names = recognizer.label_names
    for _, row in pd.read_csv(manifest, keep_default_na=False).iterrows():
        got = recognizer.classify_file(row["path"], text=row["text"])
        expected = cli.loc[row["utt_id"]]
        assert got.label == expected["label"] and got.text_source == "given" and got.transcript == row["text"]
        np.testing.assert_allclose([got.probs[n] for n in names], [expected[f"prob_{n}"] for n in names],
                                   atol=PROBS_ATOL, rtol=0)
        assert got.score is None and sum(got.probs.values()) == pytest.approx(1.0, abs=1e-5)
    sidecar = recognizer.classify_file(stereo)
    assert sidecar.text_source == "sidecar" and sidecar.transcript == "a sidecar transcript"
    assert sidecar.notes == ["resampled from 8000 Hz", "2 channels averaged"] == \
        cli.loc["stereo8k", "notes"].split("; ")
    np.testing.assert_allclose([sidecar.probs[n] for n in names], [cli.loc["stereo8k", f"prob_{n}"] for n in names],
                               atol=PROBS_ATOL, rtol=0)


def test_a_waveform_in_memory_scores_as_the_file_that_holds_it(recognizer, clips):
    import soundfile as sf
    import torch

    _, stereo, _ = clips
    from_file = recognizer.classify_file(stereo, text="hello")
    samples, rate = sf.read(str(stereo), dtype="float32", always_2d=True)  # (samples, 2) at 8 kHz
    for waveform in (samples.T, samples, torch.from_numpy(np.ascontiguousarray(samples.T))):  # either layout
        got = recognizer.classify(waveform, rate, text="hello")
        assert got.label == from_file.label and got.notes == from_file.notes == ["resampled from 8000 Hz",
                                                                                 "2 channels averaged"]
        assert got.probs == pytest.approx(from_file.probs, abs=PROBS_ATOL)
    mono = recognizer.classify(samples.mean(axis=1), rate, text="hello")  # mixed down by the caller
    assert mono.notes == ["resampled from 8000 Hz"] and mono.probs == pytest.approx(from_file.probs, abs=1e-4)
    pcm = (samples.T * 32768).round().astype(np.int16)  # integer PCM is read at full scale 2 ** 15
    assert recognizer.classify(pcm, rate, text="hello").probs == pytest.approx(from_file.probs, abs=1e-4)


def test_prediction_from_a_regression_row():
    row = {"score": 1.25, "transcript": "great", "text_source": "asr", "notes": "cut to the first 5.1 s"}
    got = Prediction.from_row(row, [])
    assert (got.label, got.probs, got.score, got.notes) == (None, None, 1.25, ["cut to the first 5.1 s"])


@pytest.mark.parametrize("call, error, message", [
    (lambda r: r.predict([], device="cuda"), OptionError, "unknown option device"),
    (lambda r: r.predict([], segmnet="none"), OptionError, "unknown option segmnet; valid options: aggregate"),
    (lambda r: r.predict(["x.wav"], hop=-1.0), PredictError, "hop must be > 0 seconds, got -1.0"),  # CLI: --hop
    (lambda r: r.predict(["x.wav"], asr_all=True), PredictError, "asr_all needs asr='MODEL'"),
    (lambda r: r.predict(["x.wav"], out="/no/such/folder/p.csv"), PredictError,
     "out='/no/such/folder/p.csv': the folder /no/such/folder does not exist"),
    (lambda r: r.classify(np.zeros((2, 2, 8)), 16000, text="x"), PredictError, "waveform: not a waveform"),
    (lambda r: r.classify(np.zeros(8000, np.float32), 0, text="x"), PredictError,
     "waveform: sampling rate is not a positive number of Hz"),
    (lambda r: r.classify(np.zeros(100, np.float32), 16000, text="x"), PredictError, "waveform: shorter than one"),
    (lambda r: r.classify(np.full(8000, np.nan, np.float32), 16000, text="x"), PredictError,
     "waveform: non-finite samples"),
    (lambda r: r.classify(np.zeros(8000, np.float32), 16000), PredictError, "pass text="),
    (lambda r: r.classify_file("/no/such.wav", text="x"), PredictError, "/no/such.wav: missing audio file"),
])
def test_bad_calls_are_one_clear_swrr_error(recognizer, call, error, message):
    with pytest.raises(error) as caught:
        call(recognizer)
    assert isinstance(caught.value, SwrrError) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_model_is_a_swrr_error(tmp_path):
    with pytest.raises(SwrrError, match="no such model bundle"):
        EmotionRecognizer.from_pretrained(tmp_path / "nothing")
