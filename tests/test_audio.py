"""Audio probing/loading: formats, resampling, segments, caps and every bad-file case."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from swrr.extract.audio import (BAD_HEADER, EMPTY, MAX_SAMPLES, MISSING, NOT_AUDIO, OUTSIDE, TOO_SHORT, AudioError,
                           check_utterances, load_audio, probe_audio)
from swrr.extract.datasets import Utterance, get_reader


def utt(path, start=None, end=None, utt_id="u"):
    return Utterance(utt_id=utt_id, audio_path=Path(path), transcript="", label="neu", start=start, end=end)


def test_probe_reads_the_header(tmp_path, wav_writer):
    info = probe_audio(wav_writer(tmp_path / "a.wav", seconds=1.5, sample_rate=22050, channels=2))
    assert (info.frames, info.sample_rate, info.channels) == (33075, 22050, 2)
    assert info.duration == pytest.approx(1.5)


def test_mono_16k_is_returned_unchanged(tmp_path, wav_writer):
    path = wav_writer(tmp_path / "a.wav", seconds=1.0, subtype="FLOAT")
    expected, _ = sf.read(path, dtype="float32")
    audio = load_audio(utt(path))
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    np.testing.assert_array_equal(audio, expected)


def test_stereo_is_averaged(tmp_path, wav_writer):
    path = wav_writer(tmp_path / "s.wav", seconds=0.5, channels=2, subtype="FLOAT")
    both, _ = sf.read(path, dtype="float32")
    audio = load_audio(utt(path))
    assert audio.ndim == 1
    np.testing.assert_allclose(audio, both.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("rate", [44100, 8000, 22050])
def test_other_rates_are_resampled(tmp_path, wav_writer, rate):
    path = wav_writer(tmp_path / f"r{rate}.wav", seconds=1.0, sample_rate=rate, freq=440.0)
    audio = load_audio(utt(path))
    assert audio.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)  # 1 s at 16 kHz: bin = Hz


def test_long_clip_is_truncated(tmp_path, wav_writer):
    path = wav_writer(tmp_path / "long.wav", seconds=31.0)
    assert load_audio(utt(path)).shape == (MAX_SAMPLES,)
    assert load_audio(utt(path), max_samples=None).shape == (31 * 16000,)
    assert load_audio(utt(path), max_samples=1000).shape == (1000,)


def test_truncated_resampled_clip_matches_full_resampling(tmp_path, wav_writer):
    path = wav_writer(tmp_path / "long44.wav", seconds=8.0, sample_rate=44100, freq=300.0)
    capped = load_audio(utt(path))
    full = load_audio(utt(path), max_samples=None)
    assert capped.shape == (MAX_SAMPLES,) and full.shape == (8 * 16000,)
    np.testing.assert_allclose(capped, full[:MAX_SAMPLES], atol=1e-5)  # the 10 ms margin keeps the cut exact


def test_segment_reads_only_its_frames(tmp_path, wav_writer):
    path = wav_writer(tmp_path / "a.wav", seconds=3.0, subtype="FLOAT")
    whole, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(load_audio(utt(path, start=0.5, end=1.25)), whole[8000:20000])
    np.testing.assert_array_equal(load_audio(utt(path, start=2.5)), whole[40000:])
    np.testing.assert_array_equal(load_audio(utt(path, end=0.1)), whole[:1600])
    assert load_audio(utt(path, start=2.0, end=9.0)).shape == (16000,)  # end past the file: clipped


@pytest.mark.parametrize("case, reason", [
    ("empty", EMPTY), ("text", NOT_AUDIO), ("truncated_header", BAD_HEADER),
    ("too_short", TOO_SHORT), ("too_short_8k", TOO_SHORT), ("missing", MISSING), ("outside", OUTSIDE),
])
def test_bad_files_raise_audio_error_naming_the_file(tmp_path, wav_writer, case, reason):
    path, start = tmp_path / f"{case}.wav", None
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is a transcript, not audio\n")
    elif case == "truncated_header":
        wav_writer(path, seconds=0.5)
        path.write_bytes(path.read_bytes()[:30])
    elif case == "too_short":
        wav_writer(path, seconds=0.0125)  # 200 samples
    elif case == "too_short_8k":
        wav_writer(path, seconds=0.024, sample_rate=8000)  # 192 samples -> 384 at 16 kHz
    elif case == "outside":
        wav_writer(path, seconds=1.0)
        start = 2.0
    with pytest.raises(AudioError) as err:
        load_audio(utt(path, start=start))
    assert err.value.reason == reason and err.value.path == path
    assert str(path) in str(err.value)


def test_truncated_data_is_read_up_to_where_it_stops(tmp_path, wav_writer):
    path = wav_writer(tmp_path / "cut.wav", seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 2 * 8000])  # header says 16000 samples, 8000 remain
    assert probe_audio(path).frames == 8000 and load_audio(utt(path)).shape == (8000,)
    path.write_bytes(data[: 44 + 2 * 100])  # so little left that it is a skip, found by the probe
    assert check_utterances([utt(path)]).skipped == {TOO_SHORT: 1}


def test_check_utterances_counts_skips(tmp_path, wav_writer):
    good_wav = wav_writer(tmp_path / "good.wav", seconds=2.0)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("hello")
    wav_writer(tmp_path / "short.wav", seconds=0.01)
    utts = [
        utt(good_wav, utt_id="a"),
        utt(good_wav, start=0.5, end=1.0, utt_id="b"),
        utt(good_wav, start=1.99, end=2.0, utt_id="c"),  # 160 samples
        utt(good_wav, start=3.0, end=4.0, utt_id="d"),
        utt(tmp_path / "empty.wav", utt_id="e"),
        utt(tmp_path / "notes.wav", utt_id="f"),
        utt(tmp_path / "short.wav", utt_id="g"),
        utt(tmp_path / "absent.wav", utt_id="h"),
    ]
    good, samples, skipped = check_utterances(utts)
    assert [u.utt_id for u in good] == ["a", "b"]
    assert samples.tolist() == [32000, 8000]  # the lengths the batch plan is built from
    assert skipped == {TOO_SHORT: 2, OUTSIDE: 1, EMPTY: 1, NOT_AUDIO: 1, MISSING: 1}
    for u in good:  # what passes the check loads
        assert load_audio(u).shape[0] >= 400


def test_demo_clips_all_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWRR_DATA", raising=False)
    utts = list(get_reader("demo").utterances())
    good, samples, skipped = check_utterances(utts)
    assert len(good) == 96 and not skipped
    lengths = [load_audio(u).shape[0] for u in utts[::6]]
    assert all(16000 * 0.5 <= n <= 16000 * 2.0 for n in lengths)
    assert lengths == samples[::6].tolist()  # the header check predicts the decoded length


def test_a_body_that_fails_to_decode_is_not_called_a_bad_header(tmp_path, wav_writer):
    """A flac whose header reads but whose frames are corrupt: the reason says the data failed."""
    from swrr.extract.audio import BAD_DATA

    path = wav_writer(tmp_path / "c.flac", seconds=2.0)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 3000] = bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8))
    path.write_bytes(bytes(raw))
    probe_audio(path)  # the header is fine
    with pytest.raises(AudioError) as err:
        load_audio(Utterance("c", path, "", "x"), max_samples=None)
    assert err.value.reason == BAD_DATA and str(path) in str(err.value)
