"""The featurizer (extract/featurizer.py): one code path from sources to encoded batches.

A waveform in memory gives exactly the samples and features of the file it was read from
(resampled, mixed down and cut as the file is), in any layout and dtype soundfile or torchaudio
hand out; a batch with a file that fails to decode either raises (extraction) or reports only that
row (prediction); bad waveforms are one-line AudioErrors naming the source.
"""
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_wav

from swrr.extract import featurizer as featurizer_module
from swrr.extract.audio import BAD_RATE, NON_FINITE, NOT_A_WAVEFORM, TOO_SHORT, AudioError
from swrr.extract.encoders import tiny_encoders
from swrr.extract.featurizer import Featurizer, Source

# name, seconds, sample rate, channels: one long clip over the 5.1 s cut, resampled and stereo ones
CLIPS = [("long44", 6.0, 44100, 2), ("mono16", 1.0, 16000, 1), ("low8", 0.7, 8000, 1), ("stereo22", 1.3, 22050, 2)]
TEXTS = ["this one is long", "hello there", "no", "thank you"]


@pytest.fixture(scope="module")
def featurizer():
    audio, text = tiny_encoders()
    featurizer = Featurizer(audio, text, "float16", max_frames=255, max_tokens=50, sample_rate=16000)
    featurizer.to(torch.device("cpu"))
    return featurizer


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return [write_wav(root / f"{name}.wav", seconds=s, sample_rate=rate, channels=ch, freq=150.0 * (i + 1))
            for i, (name, s, rate, ch) in enumerate(CLIPS)]


def file_sources(clips, **kwargs):
    return [Source(p.stem, audio_path=p, transcript=t, **kwargs) for p, t in zip(clips, TEXTS)]


def memory_sources(clips, read, **kwargs):
    sources = []
    for p, t in zip(clips, TEXTS):
        waveform, rate = read(p)
        sources.append(Source(p.stem, waveform=waveform, sampling_rate=rate, transcript=t, **kwargs))
    return sources


def encode_all(featurizer, sources, batch_seconds=3.0):
    plan = featurizer.plan([featurizer.check(s)[1] for s in sources], batch_seconds)
    return {row: (b.audio[k], b.audio_len[k], b.text[k], b.text_len[k])
            for b in featurizer.encode(sources, plan.batches) for k, row in enumerate(b.rows)}


READERS = {  # how users get waveforms: soundfile in its dtypes, torchaudio's channels-first tensors
    "float64": lambda p: sf.read(p),
    "float32": lambda p: sf.read(p, dtype="float32"),
    "int16": lambda p: sf.read(p, dtype="int16"),
    "torch channels-first": lambda p: (torch.from_numpy(sf.read(p, dtype="float32", always_2d=True)[0].T.copy()),
                                       sf.info(str(p)).samplerate),
}


@pytest.fixture(scope="module")
def from_files(featurizer, clips):
    return encode_all(featurizer, file_sources(clips))


@pytest.mark.parametrize("reader", list(READERS))
def test_a_waveform_read_from_a_file_gives_the_files_features(featurizer, clips, from_files, reader):
    from_memory = encode_all(featurizer, memory_sources(clips, READERS[reader]))
    assert sorted(from_files) == sorted(from_memory) == list(range(len(CLIPS)))
    for row in from_files:
        for got, expected in zip(from_memory[row], from_files[row]):
            np.testing.assert_array_equal(got, expected)
    assert from_files[0][1] == 255  # the long clip was cut to max_frames, in memory as from the file


def test_a_segment_of_a_waveform_equals_the_same_segment_of_the_file(featurizer, clips):
    file = Source("f", audio_path=clips[0], start=1.25, end=4.0)
    waveform, rate = sf.read(clips[0])
    memory = Source("m", waveform=waveform, sampling_rate=rate, start=1.25, end=4.0)
    assert featurizer.check(file)[1] == featurizer.check(memory)[1] == 44000
    np.testing.assert_array_equal(memory.load(16000, None), file.load(16000, None))
    assert memory.probe().channels == 2 and memory.probe().sample_rate == 44100


@pytest.mark.parametrize("waveform, rate, reason", [
    (np.full(16000, np.nan, dtype=np.float32), 16000, NON_FINITE),
    (np.zeros((2, 3, 16000), dtype=np.float32), 16000, NOT_A_WAVEFORM),
    (np.array(["a", "b"]), 16000, NOT_A_WAVEFORM),
    (np.zeros((16000, 40), dtype=np.float32), 16000, NOT_A_WAVEFORM),  # 40 "channels": not a layout we know
    (np.zeros(16000, dtype=np.float32), 0, BAD_RATE),
    (np.zeros(16000, dtype=np.float32), 44100.5, BAD_RATE),
    (np.zeros(100, dtype=np.float32), 16000, TOO_SHORT),
])
def test_an_unusable_waveform_is_an_audio_error_naming_it(waveform, rate, reason):
    source = Source("clip-7", waveform=waveform, sampling_rate=rate)
    with pytest.raises(AudioError) as err:
        source.load(16000, None)
    assert err.value.reason == reason and str(err.value).startswith("clip-7: ")


def test_a_source_is_a_file_or_a_waveform(clips):
    with pytest.raises(ValueError, match="exactly one of audio_path and waveform"):
        Source("x")
    with pytest.raises(ValueError, match="exactly one of audio_path and waveform"):
        Source("x", audio_path=clips[1], waveform=np.zeros(16000), sampling_rate=16000)


def test_a_file_failing_to_decode_raises_or_reports_only_its_row(featurizer, clips, monkeypatch):
    real = featurizer_module.load_audio

    def broken(source, *args, **kwargs):  # the header was fine, the data is not
        if source.name == "low8":
            raise AudioError(source.audio_path, "truncated or corrupt header", "simulated")
        return real(source, *args, **kwargs)

    monkeypatch.setattr(featurizer_module, "load_audio", broken)
    sources = file_sources(clips)
    batches = [[0, 1, 2, 3]]
    with pytest.raises(AudioError, match=r"low8.wav: truncated or corrupt header \(simulated\)"):
        list(featurizer.encode(sources, batches))
    failed = {}
    rows = [r for b in featurizer.encode(sources, batches, on_failure=lambda row, f: failed.update({row: f.message}))
            for r in b.rows]
    assert rows == [0, 1, 3] and failed == {2: "truncated or corrupt header (simulated)"}


def test_workers_decode_in_memory_waveforms_like_files(featurizer, clips):
    sources = memory_sources(clips, READERS["float32"])
    plan = featurizer.plan([featurizer.check(s)[1] for s in sources], 1.0)
    assert len(plan) > 2
    here = {r: b.audio[k] for b in featurizer.encode(sources, plan.batches) for k, r in enumerate(b.rows)}
    workers = {r: b.audio[k] for b in featurizer.encode(sources, plan.batches, workers=2) for k, r in enumerate(b.rows)}
    for row in here:
        np.testing.assert_array_equal(workers[row], here[row])

