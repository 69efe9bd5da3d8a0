"""Long recordings -> segments: Silero VAD speech regions (or the whole file), cut into windows
of the model's audio span.

A file (or manifest segment) no longer than the span (max_frames of audio, 5.1 s) stays one
utterance. A longer one becomes:
- `vad`: the speech regions Silero VAD finds (the `silero-vad` package ships its model inside
  the wheel: offline, CPU, needs only torch); silence gets no row; a file with no speech at all
  gets one error row;
- `window`: the whole file as one region.
A region longer than the span is cut into windows of the span every `hop` seconds (default half
a span), the last window ending at the region's end; a shorter region is one utterance.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np
import torch

from swrr.extract.audio import AudioError, segment_frames
from swrr.predict.inputs import Item, failure_text

# Pauses shorter than this stay inside one speech region: words of one sentence are not split.
# Silero's own default (100 ms) cuts sentences at commas; 300 ms keeps utterances whole.
VAD_MIN_SILENCE_MS = 300
NO_SPEECH = "no speech found (VAD)"


@lru_cache(maxsize=1)
def _silero():
    """(the silero_vad module, its model), loaded once per process."""
    import warnings

    threads = torch.get_num_threads()
    try:  # importing silero_vad sets torch's global thread count to 1 (slower, other numbers): undo it
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():  # the package's own use of deprecated importlib / torch.jit APIs
        warnings.simplefilter("ignore", DeprecationWarning)
        return silero_vad, silero_vad.load_silero_vad()


def speech_regions(wave: np.ndarray, sample_rate: int) -> List[Tuple[float, float]]:
    """(start, end) seconds of the speech in `wave` (16 kHz mono float32), in order."""
    silero_vad, model = _silero()
    stamps = silero_vad.get_speech_timestamps(torch.from_numpy(wave), model, sampling_rate=sample_rate,
                                              min_silence_duration_ms=VAD_MIN_SILENCE_MS, return_seconds=True)
    return [(float(s["start"]), float(s["end"])) for s in stamps]


def windows(start: float, end: float, span: float, hop: float) -> List[Tuple[float, float]]:
    """[start, end) cut into windows of `span` seconds every `hop` seconds; the last one ends at `end`."""
    if end - start <= span:
        return [(start, end)]
    out, s = [], start
    while s + span < end:
        out.append((s, s + span))
        s += hop
    out.append((end - span, end))
    return out


def segment_long_items(items: List[Item], predictor, mode: str, hop: Optional[float]) -> List[Item]:
    """`items` with every one longer than the predictor's span replaced by its segments."""
    span = predictor.span_seconds
    hop = hop or span / 2
    sample_rate = predictor.recipe.sample_rate
    out: List[Item] = []
    for item in items:
        try:
            info = item.source.probe()
            first, stop = segment_frames(info, item.start, item.end)
        except AudioError:
            out.append(item)  # predict() makes it an error row with the reason
            continue
        duration = (stop - first) / info.sample_rate
        if item.error or duration <= span:
            out.append(item)
            continue
        if mode == "vad":
            try:
                wave = item.source.load(sample_rate, max_samples=None)
            except AudioError as err:  # NaN samples, a corrupt body: this file's error row, as in window mode
                item.error = failure_text(err.reason, err.detail)
                out.append(item)
                continue
            regions = speech_regions(wave, sample_rate)
            if not regions:
                item.error = NO_SPEECH
                out.append(item)
                continue
        else:
            regions = [(0.0, duration)]
        offset = first / info.sample_rate
        pieces = [w for region in regions for w in windows(*region, span, hop)]
        out.extend(item.segment(k, offset + s, offset + e) for k, (s, e) in enumerate(pieces, start=1))
    return out
