"""The audio track of a video file (MELD and MMSA clips are .mp4), decoded with PyAV.

PyAV's wheels carry FFmpeg, so no system ffmpeg is needed. It is an optional dependency
(`pip install 'swrr[video]'`), imported only when a video file is read; the trainer never
imports this module. extract/audio.py sends every file whose suffix is in VIDEO_SUFFIXES here,
so probing, skipping and loading work as for wav files.

Decision: a clip is decoded whole, once when its header is probed (the exact sample count is
known only after decoding compressed audio) and again when it is loaded; clips are a few
seconds long, so both cost milliseconds.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Tuple

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
NO_AUDIO_TRACK = "video without an audio track"
UNREADABLE_VIDEO = "unreadable video file"
INSTALL_HINT = "reading video clips needs PyAV: pip install 'swrr[video]' (or pip install av)"


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def have_pyav() -> bool:
    return importlib.util.find_spec("av") is not None


class VideoError(Exception):
    """A video whose audio cannot be used; `reason` is one of the fixed phrases above
    (extract/audio.py turns it into its AudioError, counted by reason)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(reason + (f" ({detail})" if detail else ""))


def decode_audio_track(path) -> Tuple[np.ndarray, int]:
    """-> ((n, channels) float32 samples, sample rate) of the first audio stream of `path`.

    VideoError(UNREADABLE_VIDEO) when the container or its audio does not decode (or PyAV is
    missing), VideoError(NO_AUDIO_TRACK) when it has no audio stream.
    """
    try:
        import av
    except ImportError:
        raise VideoError(UNREADABLE_VIDEO, INSTALL_HINT) from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise VideoError(NO_AUDIO_TRACK)
            stream = container.streams.audio[0]
            # Planar float at the stream's own rate and layout: (channels, n) per frame whatever the codec stores.
            resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
            chunks = []
            for frame in container.decode(stream):
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
            rate = int(stream.rate)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(UNREADABLE_VIDEO, " ".join(str(exc).split())) from None
    if not chunks or rate <= 0:
        return np.zeros((0, 1), dtype=np.float32), max(rate, 1)
    samples = np.concatenate(chunks, axis=1).T
    return np.ascontiguousarray(samples, dtype=np.float32), rate
