"""Audio probing and loading: any soundfile-readable file, or a waveform in memory -> float32 mono at 16 kHz.

soundfile decodes (wav, flac, ogg, ...), only the frames needed are read (segment start/end
and the max_samples cap); the audio track of a video file (.mp4, ...) is decoded with PyAV
(extract/video.py); channels are averaged, other sample rates are resampled with
librosa (imported only then). A waveform in memory (`load_waveform`) takes the same steps
from the point where a file's frames have been read, so it gives the samples of the file it
was read from. soundfile and librosa are imported lazily: the rest of the
package, and the trainer, never needs them.

Every problem with one file is an `AudioError(path, reason)`; `reason` is one of the fixed
phrases below so that `check_utterances` can count skips by reason before extraction starts.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
from swrr.errors import SwrrError

from swrr.extract.video import VideoError, decode_audio_track, is_video

SAMPLE_RATE = 16000
MAX_SAMPLES = 81680  # 255 WavLM frames: 254 * 320 + 400
MIN_SAMPLES = 400  # one WavLM frame (25 ms at 16 kHz)

MISSING = "missing audio file"
EMPTY = "empty file (0 bytes)"
NOT_AUDIO = "not an audio file"
BAD_HEADER = "truncated or corrupt header"
BAD_DATA = "audio data cannot be decoded"
NON_FINITE = "non-finite samples"
NO_SAMPLES = "no samples"
OUTSIDE = "segment outside the audio"
TOO_SHORT = "shorter than one WavLM frame"
NOT_A_WAVEFORM = "not a waveform"
BAD_RATE = "sampling rate is not a positive number of Hz"
MAX_CHANNELS = 16  # a 2-d waveform's channel axis is its shorter one, and holds at most this many
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # soundfile subtypes that can hold non-finite samples
EXAMPLES = 3  # files named per skip reason


class AudioError(SwrrError):
    """An audio file that cannot be used; `reason` is a short fixed phrase, the message names the file."""

    def __init__(self, path, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = Path(path), reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class AudioInfo:
    """What the header says: frames per channel, sample rate, channels, soundfile subtype."""

    path: Path
    frames: int
    sample_rate: int
    channels: int
    subtype: str = ""

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe_audio(path) -> AudioInfo:
    """Read only the header of `path`; AudioError when it is missing, empty, not audio or holds no samples."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, MISSING)
    if path.stat().st_size == 0:
        raise AudioError(path, EMPTY)
    if is_video(path):
        samples, rate = _decode_video(path)
        if samples.shape[0] == 0:
            raise AudioError(path, NO_SAMPLES)
        return AudioInfo(path, samples.shape[0], rate, samples.shape[1], "video")
    try:
        info = sf.info(str(path))
    except RuntimeError as err:  # soundfile's LibsndfileError is a RuntimeError
        with open(path, "rb") as f:
            magic = f.read(4)
        reason = BAD_HEADER if magic in (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM") else NOT_AUDIO
        raise AudioError(path, reason, str(err).strip()) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, NO_SAMPLES)
    return AudioInfo(path, int(info.frames), int(info.samplerate), int(info.channels), str(info.subtype))


def resampled_length(n: int, orig_sr: int, target_sr: int) -> int:
    """Samples that `n` samples at orig_sr become at target_sr (librosa.resample's length)."""
    return n if orig_sr == target_sr else int(math.ceil(n * target_sr / orig_sr))


def segment_frames(info: AudioInfo, start: Optional[float], end: Optional[float]) -> Tuple[int, int]:
    """[first, stop) frame range of a segment, clipped to the file; AudioError if it lies outside."""
    first = 0 if start is None else int(round(start * info.sample_rate))
    stop = info.frames if end is None else min(info.frames, int(round(end * info.sample_rate)))
    if first >= stop:
        raise AudioError(info.path, OUTSIDE, f"{start}-{end} s in a {info.duration:.2f} s file")
    return first, stop


def min_samples(sample_rate: int = SAMPLE_RATE) -> int:
    """One WavLM frame (MIN_SAMPLES at 16 kHz) at `sample_rate`: the shortest usable audio."""
    return MIN_SAMPLES * sample_rate // SAMPLE_RATE


def check_audio(info: AudioInfo, start=None, end=None, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples the segment will have at `sample_rate` (before any max_samples cap); AudioError if too short."""
    first, stop = segment_frames(info, start, end)
    n = resampled_length(stop - first, info.sample_rate, sample_rate)
    if n < min_samples(sample_rate):
        raise AudioError(info.path, TOO_SHORT, f"{n} samples at {sample_rate} Hz, need {MIN_SAMPLES}")
    return n


def load_audio(utt, sample_rate: int = SAMPLE_RATE, max_samples: Optional[int] = MAX_SAMPLES) -> np.ndarray:
    """Samples of one utterance, (n,) float32 mono at `sample_rate`, n <= max_samples (None = no cap).

    `utt` has audio_path, start and end (an Utterance, a featurizer Source). AudioError on any unusable file.
    """
    info = probe_audio(utt.audio_path)
    check_audio(info, utt.start, utt.end, sample_rate)
    samples = _read_frames(info.path, *frames_to_read(info, utt.start, utt.end, sample_rate, max_samples))
    return _mono_at_rate(samples, info, sample_rate, max_samples)


def waveform_frames(waveform, name: str = "waveform") -> np.ndarray:
    """A waveform in memory (numpy array or tensor) -> (frames, channels) float32, as soundfile reads a file.

    1-d: mono samples; 2-d: samples x channels or channels x samples (the shorter axis is the
    channels, at most MAX_CHANNELS). Integer samples are scaled as soundfile scales PCM (int16 /
    2**15, int32 / 2**31), so a waveform read with `dtype="int16"` equals the float one.
    AudioError(name, NOT_A_WAVEFORM) for anything else.
    """
    if hasattr(waveform, "detach"):  # a torch tensor (torch is not needed to take numpy arrays)
        waveform = waveform.detach().cpu().numpy()
    array = np.asarray(waveform)
    if array.dtype.kind not in "fi" or array.ndim not in (1, 2) or array.size == 0:
        raise AudioError(name, NOT_A_WAVEFORM, "need 1-d samples or 2-d samples x channels, float or signed "
                                               f"integer; got shape {array.shape} of {array.dtype}")
    if array.ndim == 2 and array.shape[0] < array.shape[1]:
        array = array.T  # channels x samples (torchaudio's layout) -> samples x channels
    if array.ndim == 2 and array.shape[1] > MAX_CHANNELS:
        raise AudioError(name, NOT_A_WAVEFORM, f"shape {array.shape}: more than {MAX_CHANNELS} channels")
    if array.dtype.kind == "i":
        array = array.astype(np.float64) / -float(np.iinfo(array.dtype).min)
    frames = np.asarray(array, dtype=np.float32)
    return frames[:, None] if frames.ndim == 1 else frames


def waveform_info(frames: np.ndarray, sampling_rate, name: str = "waveform") -> AudioInfo:
    """The AudioInfo a file holding `frames` (from `waveform_frames`) at `sampling_rate` would have;
    AudioError(name, BAD_RATE) for a rate that is not a positive whole number of Hz."""
    rate = sampling_rate.item() if hasattr(sampling_rate, "item") else sampling_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0 or rate != int(rate):
        raise AudioError(name, BAD_RATE, f"got {sampling_rate!r}")
    return AudioInfo(Path(name), int(frames.shape[0]), int(rate), int(frames.shape[1]), "FLOAT")


def load_waveform(waveform, sampling_rate, start: Optional[float] = None, end: Optional[float] = None,
                  sample_rate: int = SAMPLE_RATE, max_samples: Optional[int] = MAX_SAMPLES,
                  name: str = "waveform") -> np.ndarray:
    """`load_audio` for a waveform in memory at `sampling_rate`: the same segment, cap, mixdown and
    resampling, so the samples equal those of a file the waveform was read from. AudioError (naming
    `name`) when it is not a waveform, holds NaN/inf, or its segment is too short."""
    frames = waveform_frames(waveform, name)
    info = waveform_info(frames, sampling_rate, name)
    check_audio(info, start, end, sample_rate)
    first, stop = frames_to_read(info, start, end, sample_rate, max_samples)
    return _mono_at_rate(_finite(frames[first:stop], info.path), info, sample_rate, max_samples)


def _mono_at_rate(samples: np.ndarray, info: AudioInfo, sample_rate: int, max_samples: Optional[int]) -> np.ndarray:
    """Read frames (n, channels) -> (n',) float32 mono at `sample_rate`, cut to max_samples."""
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if info.sample_rate != sample_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=info.sample_rate, target_sr=sample_rate)
    if mono.shape[0] < min_samples(sample_rate):  # a data chunk shorter than its header said
        raise AudioError(info.path, TOO_SHORT, f"{mono.shape[0]} samples at {sample_rate} Hz after decoding")
    return np.ascontiguousarray(mono[:max_samples], dtype=np.float32)


def frames_to_read(info: AudioInfo, start, end, sample_rate: int, max_samples: Optional[int]) -> Tuple[int, int]:
    """[first, stop) frames of the file that loading reads: the segment, cut to what the cap keeps
    plus 10 ms so resampling sees real samples at the cut."""
    first, stop = segment_frames(info, start, end)
    if max_samples is not None:
        needed = int(math.ceil(max_samples * info.sample_rate / sample_rate)) + info.sample_rate // 100
        stop = min(stop, first + needed)
    return first, stop


def _read_frames(path: Path, first: int, stop: int) -> np.ndarray:
    """Frames [first, stop) as (n, channels) float32; AudioError when the body does not decode or
    holds NaN/inf (a float file can; such samples would become NaN features)."""
    if is_video(path):
        samples = _decode_video(path)[0][first:stop]
    else:
        import soundfile as sf

        try:
            samples, _ = sf.read(str(path), start=first, stop=stop, dtype="float32", always_2d=True)
        except RuntimeError as err:  # the header was read already: the failure is in the data
            raise AudioError(path, BAD_DATA, str(err).strip()) from None
    if samples.shape[0] == 0:
        raise AudioError(path, NO_SAMPLES)
    return _finite(samples, path)


def _finite(samples: np.ndarray, path: Path) -> np.ndarray:
    """`samples` itself; AudioError(NON_FINITE) if any is NaN or inf (they would become NaN features)."""
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(path, NON_FINITE, f"{bad} NaN or inf samples")
    return samples


def _decode_video(path: Path):
    """The whole audio track of a video file (see extract/video.py), its failures as AudioError."""
    try:
        return decode_audio_track(path)
    except VideoError as err:
        raise AudioError(path, err.reason, err.detail) from None


def check_samples(info: AudioInfo, start=None, end=None) -> None:
    """For float files only (integer PCM cannot hold NaN/inf): read the whole segment and raise
    AudioError(NON_FINITE) if any sample is not finite."""
    if info.subtype in FLOAT_SUBTYPES:
        _read_frames(info.path, *segment_frames(info, start, end))


class SkipCounts(Counter):
    """Skips by reason (a Counter) that also names the first EXAMPLES files of each reason."""

    def __init__(self):
        super().__init__()
        self.examples: Dict[str, List[str]] = {}

    def add(self, reason: str, path) -> None:
        self[reason] += 1
        named = self.examples.setdefault(reason, [])
        if len(named) < EXAMPLES:
            named.append(str(path))


class CheckedUtterances(NamedTuple):
    """What `check_utterances` found: the usable utterances, their lengths, the skips."""

    utterances: List  # the usable utterances, in input order
    samples: np.ndarray  # (n,) int64: samples each will have at the sample rate, before any max_samples cap
    skipped: "SkipCounts"  # reason -> count of utterances left out (and the first files of each)


def check_utterances(utts: Iterable, sample_rate: int = SAMPLE_RATE) -> CheckedUtterances:
    """Probe every file's header once: the usable utterances with their lengths, and the skips by reason.

    Run it before the cache is opened, so bad files become counted skips in the summary instead
    of a crash mid-run. Headers of files shared by several segments are read once. Float files
    are also read whole for NaN/inf samples.
    """
    good, samples, skipped = [], [], SkipCounts()
    infos = {}  # path -> AudioInfo, or the AudioError its probe raised
    for utt in utts:
        path = Path(utt.audio_path)
        if path not in infos:
            try:
                infos[path] = probe_audio(path)
            except AudioError as err:
                infos[path] = err
        try:
            if isinstance(infos[path], AudioError):
                raise infos[path]
            n = check_audio(infos[path], utt.start, utt.end, sample_rate)
            check_samples(infos[path], utt.start, utt.end)
        except AudioError as err:
            skipped.add(err.reason, path)
        else:
            good.append(utt)
            samples.append(n)
    return CheckedUtterances(good, np.array(samples, dtype=np.int64), skipped)
