"""The featurizer: sources in, encoded batches out. The one code path from audio and text to
features, shared by swrr-extract and swrr-predict.

    featurizer = Featurizer(audio, text, dtype="float16", max_frames=255, max_tokens=50, sample_rate=16000)
    featurizer.to(device)
    sources = [Source("clip", audio_path=Path("clip.wav"), transcript="what was said"),
               Source("mem", waveform=samples, sampling_rate=44100, transcript="hello")]
    plan = featurizer.plan([featurizer.check(s)[1] for s in sources], batch_seconds=160)
    for batch in featurizer.encode(sources, plan.batches, workers=2):
        batch.rows, batch.audio, batch.text  # (B, F, D), (B, T, D) in the cache dtype

A `Source` is a file (audio_path) or a waveform in memory at its sampling rate, optionally only
[start, end) seconds of it, and its transcript. `encode` loads, resamples, mixes down and cuts
the audio to max_frames (extract/audio.py; a waveform in memory takes the file's steps after its
frames are read), runs the feature extractor and the tokenizer, in DataLoader worker processes;
encodes the planned length-sorted batches exactly (extract/encoders.py), with one batch in flight
on the GPU (`encode_ahead`); and rounds the features to the cache dtype, checking each row is
finite. swrr-extract (extract/pipeline.py) writes the batches into the cache; swrr-predict
(predict/engine.py) feeds them to the model's head, so a clip scored by swrr-predict gets the
features swrr-extract stored for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from swrr.extract.audio import (AudioError, AudioInfo, check_audio, load_audio, load_waveform, probe_audio,
                                waveform_frames, waveform_info)
from swrr.extract.batching import AUTO, BatchPlan, auto_batch_seconds, plan_batches
from swrr.extract.encoders import AudioEncoder, EncoderError, TextEncoder, prepare_waveform, tokenize
from swrr.guards import die_with_parent


def default_workers() -> int:
    """Audio decoding processes: a few suffice to keep one GPU busy (decoding is ~1 ms per clip)."""
    return min(4, max(1, (os.cpu_count() or 1) - 1))


def resolve_batch_seconds(setting: Union[float, str], device: torch.device, dtype: str) -> Tuple[float, str]:
    """--batch-seconds -> (seconds, how they were chosen): "auto" reads the card's total memory."""
    if setting != AUTO:
        return float(setting), f"{float(setting):g} s" + (" (one utterance per batch)" if setting == 0 else "")
    if device.type != "cuda":
        return auto_batch_seconds(None, dtype), f"{auto_batch_seconds(None, dtype):g} s (auto, {device.type})"
    total = torch.cuda.get_device_properties(device).total_memory
    seconds = auto_batch_seconds(total, dtype)
    return seconds, f"{seconds:g} s (auto, {total / 2**30:.0f} GiB card, {dtype})"


# ---------------------------------------------------------------------------------- sources
@dataclass(eq=False)
class Source:
    """One utterance to featurize: audio from a file (`audio_path`) or in memory (`waveform` at
    `sampling_rate`: samples, or samples x channels, numpy or torch), optionally only [start, end)
    seconds of it, and what was said. `name` names it in errors (an in-memory waveform has no path)."""

    name: str
    audio_path: Optional[Path] = None
    transcript: str = ""
    start: Optional[float] = None
    end: Optional[float] = None
    waveform: Optional[Any] = None
    sampling_rate: Optional[int] = None

    def __post_init__(self):
        if (self.audio_path is None) == (self.waveform is None):
            raise ValueError(f"source {self.name!r}: give exactly one of audio_path and waveform")

    def probe(self) -> AudioInfo:
        """The file's header, or what a file holding the waveform would say; AudioError if unusable."""
        if self.waveform is None:
            return probe_audio(self.audio_path)
        return waveform_info(waveform_frames(self.waveform, self.name), self.sampling_rate, self.name)

    def load(self, sample_rate: int, max_samples: Optional[int]) -> np.ndarray:
        """(n,) float32 mono at `sample_rate`, n <= max_samples (None: no cap); AudioError if unusable."""
        if self.waveform is None:
            return load_audio(self, sample_rate, max_samples)
        return load_waveform(self.waveform, self.sampling_rate, self.start, self.end, sample_rate, max_samples,
                             self.name)


# ---------------------------------------------------------------------------------- loading
class LoadedBatch(NamedTuple):
    rows: List[int]
    input_values: torch.Tensor  # (B, S) zero-padded waveforms
    sample_lengths: torch.Tensor  # (B,)
    tokens: Dict[str, torch.Tensor]  # (B, T) each


class LoadFailure(NamedTuple):
    """An AudioError met while decoding, returned so that it reaches the main process as it was."""

    path: str
    reason: str
    detail: str

    @property
    def message(self) -> str:
        """The reason and its detail, as a prediction's error column says it."""
        return self.reason + (f" ({self.detail})" if self.detail else "")


class BatchInputs(torch.utils.data.Dataset):
    """Planned batch i -> its decoded, prepared and padded inputs (runs in DataLoader workers).

    Holds only the feature extractor and the tokenizer, never the models.
    """

    def __init__(self, batches: Sequence[Sequence[int]], sources: Sequence[Source], feature_extractor,
                 tokenizer, sample_rate: int, max_samples: int, max_tokens: int):
        self.batches = [list(map(int, b)) for b in batches]
        self.sources = sources
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer
        self.sample_rate, self.max_samples, self.max_tokens = sample_rate, max_samples, max_tokens

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Union[LoadedBatch, LoadFailure]:
        return self.load(self.batches[i])

    def load(self, rows: List[int]) -> Union[LoadedBatch, LoadFailure]:
        """The inputs of `rows` as one padded batch, or the LoadFailure of the first that fails."""
        sources = [self.sources[r] for r in rows]
        try:
            waves = [prepare_waveform(self.feature_extractor, s.load(self.sample_rate, self.max_samples))
                     for s in sources]
        except AudioError as err:  # returned, not raised: a worker's exception would carry its traceback
            return LoadFailure(str(err.path), err.reason, err.detail)
        input_values, lengths = AudioEncoder.collate(waves)
        return LoadedBatch(rows, input_values, lengths, tokenize(self.tokenizer, [s.transcript for s in sources],
                                                                 self.max_tokens))


def _as_is(item):
    return item


def decoding_loader(inputs: BatchInputs, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """The batches of `inputs` in order, decoded by `workers` processes (0: in this one) that end
    with this process."""
    return torch.utils.data.DataLoader(inputs, batch_size=None, shuffle=False, collate_fn=_as_is,
                                       num_workers=workers, pin_memory=pin_memory,
                                       prefetch_factor=4 if workers else None,
                                       worker_init_fn=_worker_init if workers else None)


def _worker_init(worker_id: int) -> None:
    """A decoding worker ends with its parent, even a SIGKILLed one (it may hold a .partial open)."""
    die_with_parent()


def _decoded(inputs: BatchInputs, loader: Iterable,
             on_failure: Optional[Callable[[int, LoadFailure], None]]) -> Iterator[LoadedBatch]:
    """The loader's batches. A batch holding a file that fails to decode raises its AudioError
    (on_failure None), or is retried one row at a time, each failing row going to `on_failure`."""
    for i, batch in enumerate(loader):  # in plan order: batch i is inputs.batches[i]
        if not isinstance(batch, LoadFailure):
            yield batch
        elif on_failure is None:
            raise AudioError(batch.path, batch.reason, batch.detail)
        else:
            for row in inputs.batches[i]:
                single = inputs.load([row])
                if isinstance(single, LoadFailure):
                    on_failure(row, single)
                else:
                    yield single


# ---------------------------------------------------------------------------------- encoding
class EncodedBatch(NamedTuple):
    """One batch's features on the host, as the cache writer takes them."""

    rows: List[int]
    audio: np.ndarray  # (B, F, D) in the cache dtype
    audio_len: np.ndarray  # (B,) frames
    text: np.ndarray  # (B, T, D)
    text_len: np.ndarray  # (B,) tokens
    finite: np.ndarray  # (B,) bool: every stored value of the row is finite


class PendingBatch:
    """A batch whose encoders have been launched. On CUDA its features are being copied into
    pinned host memory behind the kernels, and `get()` waits for that copy only (an event); on
    the CPU they are already there and `get()` returns at once."""

    def __init__(self, rows: List[int], audio: torch.Tensor, frames: np.ndarray, text: torch.Tensor,
                 n_tokens: np.ndarray, dtype: str):
        torch_dtype = getattr(torch, dtype)
        self.rows, self.frames, self.n_tokens = rows, frames, n_tokens
        audio, text = audio.to(torch_dtype), text.to(torch_dtype)
        # Checked in the cache dtype, on the device, and copied with the features (no extra sync):
        # fp16 overflow turns finite activations into inf here, NaN audio would give NaN.
        self.finite = _to_host(finite_rows(audio) & finite_rows(text))
        self.audio = _to_host(audio)
        self.text = _to_host(text)
        self.copied: Optional[torch.cuda.Event] = None
        if audio.is_cuda:
            self.copied = torch.cuda.Event()
            self.copied.record(torch.cuda.current_stream(audio.device))

    def get(self) -> EncodedBatch:
        if self.copied is not None:
            self.copied.synchronize()
        return EncodedBatch(self.rows, self.audio.numpy(), self.frames, self.text.numpy(), self.n_tokens,
                            self.finite.numpy())


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, L, D) -> (B,) bool: the row holds no NaN or inf. One reduction, on x's device."""
    return torch.isfinite(x).flatten(1).all(dim=1)


def _to_host(x: torch.Tensor) -> torch.Tensor:
    """x itself on the CPU; on CUDA a pinned host tensor that a non-blocking copy is filling."""
    if not x.is_cuda:
        return x
    return torch.empty(x.shape, dtype=x.dtype, pin_memory=True).copy_(x, non_blocking=True)


def encode_batch(batch: LoadedBatch, audio: AudioEncoder, text: TextEncoder, dtype: str) -> PendingBatch:
    """Launch both encoders on a batch; the features (in the cache dtype) come from `.get()`."""
    audio_features, frames = audio(batch.input_values, batch.sample_lengths)
    text_features, n_tokens = text(batch.tokens)
    return PendingBatch(batch.rows, audio_features, frames, text_features, n_tokens, dtype)


def encode_ahead(batches: Iterable[LoadedBatch], audio: AudioEncoder, text: TextEncoder,
                 dtype: str) -> Iterator[EncodedBatch]:
    """Encode batches in order with one in flight: batch i+1 is launched before batch i's
    features are waited for, so the GPU keeps working while the host hands batch i on and
    fetches the next batch. An error while batch i+1 is loaded or launched drops batch i: a
    consumer that records what it received (the cache's done rows) never sees it."""
    in_flight: Optional[PendingBatch] = None
    for batch in batches:
        launched = encode_batch(batch, audio, text, dtype)
        if in_flight is not None:
            yield in_flight.get()
        in_flight = launched
    if in_flight is not None:
        yield in_flight.get()


def trim_heap() -> None:
    """Give the heap's free memory back to the OS (glibc; elsewhere nothing). Every batch shape
    leaves differently sized freed buffers (oneDNN primitives and their scratch on the CPU),
    which glibc keeps: measured on the CPU, the process grew ~3.5 MB per batch (430 -> 870 MB
    over 140 batches of distinct lengths); trimmed after each batch it stays flat (~470 MB).
    Costs well under a millisecond per batch."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


# ---------------------------------------------------------------------------------- the featurizer
class Featurizer:
    """Both encoders with the settings that fix the numbers (cache dtype, max_frames, max_tokens,
    sample rate): sources in, encoded batches out."""

    def __init__(self, audio: AudioEncoder, text: TextEncoder, dtype: str, max_frames: int, max_tokens: int,
                 sample_rate: int):
        if audio.sample_rate != sample_rate:
            raise EncoderError(f"{audio.name} expects {audio.sample_rate} Hz audio, not {sample_rate} Hz")
        self.audio, self.text = audio, text
        self.dtype, self.max_frames, self.max_tokens, self.sample_rate = dtype, max_frames, max_tokens, sample_rate
        self.max_samples = audio.samples_for(max_frames)  # 81,680 for WavLM's 255 frames

    @property
    def device(self) -> torch.device:
        return self.audio.device

    def to(self, device: torch.device) -> bool:
        """Move both encoders to `device`; -> fp16: a float16 cache dtype means fp16 autocast on CUDA."""
        fp16 = self.dtype == "float16" and device.type == "cuda"
        self.audio.to(device, fp16)
        self.text.to(device, fp16)
        return fp16

    def check(self, source: Source) -> Tuple[AudioInfo, int]:
        """-> (its header, the samples `source` will have at the sample rate before the max_frames
        cut), from the header only; AudioError when it is unusable or shorter than one frame."""
        info = source.probe()
        return info, check_audio(info, source.start, source.end, self.sample_rate)

    def plan(self, samples: Sequence[int], batch_seconds: float) -> BatchPlan:
        """Length-sorted batches of rows with these samples (from `check`), as the encoders see them."""
        return plan_batches(np.minimum(np.asarray(samples, dtype=np.int64), self.max_samples), self.sample_rate,
                            batch_seconds)

    def encode(self, sources: Sequence[Source], batches: Sequence[Sequence[int]], workers: int = 0,
               on_failure: Optional[Callable[[int, LoadFailure], None]] = None) -> Iterator[EncodedBatch]:
        """The batches (row indices into `sources`) encoded, in order, with `workers` decoding
        processes. A source that fails to decode raises its AudioError (so every batch comes out
        whole, as planned), or, with `on_failure`, goes to on_failure(row, failure) while the other
        rows of its batch are encoded one by one."""
        inputs = BatchInputs(batches, sources, self.audio.feature_extractor, self.text.tokenizer,
                             self.sample_rate, self.max_samples, self.max_tokens)
        # Decision: one batch is decoded in this process; a worker would only add its start-up.
        loader = decoding_loader(inputs, max(0, min(workers, len(inputs) - 1)), self.device.type == "cuda")
        for encoded in encode_ahead(_decoded(inputs, loader, on_failure), self.audio, self.text, self.dtype):
            yield encoded
            trim_heap()  # after the consumer has taken the batch (written it, fed it to the head)
