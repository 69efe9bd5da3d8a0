"""The extraction stage in one process: dataset -> WavLM/BERT features -> cache/<dataset>.h5.

    summary = run_one_process(ExtractConfig(dataset="demo", encoders="tiny"))

Callers use `swrr.extract.runner.run_extraction`, which hands over to extract/distributed.py (a
layer over this module's public functions) under a distributed launch; this module never
imports it.

Steps: the reader lists utterances; every audio header is checked first, so unusable files
become counted skips and the row list is fixed before the cache is opened; the batch plan
(`plan_extraction`) is computed over all rows; the batches not yet in the cache (resume) go
through the featurizer (extract/featurizer.py: decoding in DataLoader worker processes, one
batch in flight on the GPU, rounding to the cache dtype), and a writer thread puts finished
batches into the HDF5 file; the cache is renamed to its final path only when every row is in it.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from swrr.extract.audio import AudioError, check_utterances
from swrr.extract.batching import AUTO, BatchPlan, parse_batch_seconds
from swrr.extract.datasets import DatasetError, Utterance, encoded_extra_labels, get_reader
from swrr.extract.transcripts import TRANSCRIPT_SOURCES, progress_path, transcribe
from swrr.extract.encoders import (DEFAULT_AUDIO_ENCODER, DEFAULT_TEXT_ENCODER, AudioEncoder, EncoderError,
                                   TextEncoder, describe, load_encoders)
from swrr.extract.featurizer import Featurizer, Source, default_workers, resolve_batch_seconds
from swrr._version import __version__
from swrr import layers as hidden_layers
from swrr.cache import DTYPES, CacheError, CacheMeta, CacheWriter, RowInfo, estimated_bytes, is_swrr_cache
from swrr.device import resolve_device
from swrr.errors import option
from swrr.progress import progress_bar

logger = logging.getLogger("swrr.extract")  # swrr-extract shows its INFO lines on stderr (swrr.cli)
DEVICES = ("auto", "cpu", "cuda")
RARE_CLASS_ROWS = 5  # a class with fewer rows is named in a warning (often a typo in a manifest)
DECODE_HINT = "its header looked fine; fix or remove the file, then rerun with --overwrite"


@dataclass
class ExtractConfig:
    """Everything `swrr-extract` can be told. Defaults are the paper's setting."""

    dataset: str
    root: Optional[Path] = None  # None: $SWRR_DATA/<dataset dir>, then data/<dataset dir>
    out: Optional[Path] = None  # None: cache/<dataset>.h5
    audio_encoder: str = DEFAULT_AUDIO_ENCODER
    text_encoder: str = DEFAULT_TEXT_ENCODER
    encoders: str = "pretrained"  # "tiny": small random encoders built in code (offline)
    layer: int = -1  # hidden layer of both encoders; -1 = last (the one-layer spelling of `layers`)
    layers: Optional[str] = None  # hidden states of both encoders (swrr.layers: all|last|N|A,B,C|A:B); None = `layer`
    device: str = "auto"  # auto = cuda when available
    dtype: str = "float16"  # cache dtype; float16 also means fp16 autocast on CUDA
    batch_seconds: Union[float, str] = AUTO  # padded audio per batch; "auto": from the GPU's memory
    max_frames: int = 255  # audio is cut to the samples giving this many WavLM frames (5.1 s)
    max_tokens: int = 50  # [CLS] and [SEP] included
    sample_rate: int = 16000
    overwrite: bool = False
    num_workers: int = field(default_factory=default_workers)  # 0 = decode in the main process
    progress: bool = True
    labels: Optional[Tuple[str, ...]] = None  # classes to keep (others are counted skips); None = all
    transcripts: str = "gold"  # "asr": the text features come from `asr` (extract/transcripts.py)
    asr: Optional[str] = None  # ASR model (hub id or folder) for transcripts="asr"

    def __post_init__(self):
        if self.transcripts not in TRANSCRIPT_SOURCES:
            raise ValueError(f"transcripts must be one of {TRANSCRIPT_SOURCES}, got {self.transcripts!r}")
        if (self.transcripts == "asr") != (self.asr is not None):
            raise ValueError("--transcripts asr and --asr MODEL go together")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        self.batch_seconds = parse_batch_seconds(self.batch_seconds)
        self.layers = hidden_layers.canonical(self.layer if self.layers is None else self.layers)

    @property
    def out_path(self) -> Path:
        return Path(self.out) if self.out is not None else Path("cache") / f"{self.dataset}.h5"


@dataclass
class Summary:
    """What an extraction did; `lines()` is what the CLI prints at the end."""

    out: Path
    dataset: str
    task: str
    rows: int
    resumed_rows: int
    per_class: Dict[str, int]
    per_split: Dict[str, int]
    skipped: Dict[str, int]
    seconds: float
    file_bytes: int
    random_encoders: bool
    encoders: str
    batch_budget: str  # e.g. "400 s (auto, 140 GiB card, float16)"
    batches: int
    padding_waste: float
    write_seconds: float  # spent in HDF5 writes by the writer thread, overlapped with encoding
    notes: List[str] = field(default_factory=list)  # extra lines, e.g. a distributed run's balance

    def lines(self) -> List[str]:
        rate = (self.rows - self.resumed_rows) / self.seconds if self.seconds > 0 else 0.0
        resumed = f", {self.resumed_rows} kept from an interrupted run" if self.resumed_rows else ""
        out = [f"wrote {self.out} ({self.file_bytes / 1e6:.1f} MB): {self.rows} utterances of {self.dataset} "
               f"in {self.seconds:.1f} s ({rate:.1f} utt/s overall{resumed})",
               "  " + ("classes: " + _counts(self.per_class) if self.per_class else f"task: {self.task}"),
               "  splits: " + (_counts(self.per_split) if self.per_split else "none given"),
               f"  skipped: {sum(self.skipped.values())}" + (f" ({_counts(self.skipped)})" if self.skipped else ""),
               f"  encoders: {self.encoders}",
               f"  batch budget: {self.batch_budget}: {self.batches} batches, audio padding "
               f"{100 * self.padding_waste:.1f}% of the encoded samples",
               f"  cache writes: {self.write_seconds:.1f} s in the writer thread (overlapped with encoding)"]
        out += ["  " + note for note in self.notes]
        if self.random_encoders:
            out.append("  WARNING: random encoders (--encoders tiny): use this cache for tests and demos only")
        return out


def _counts(counts: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


# ---------------------------------------------------------------------------------- rows
@dataclass
class Rows:
    """The fixed row list: utterances that passed the audio check, their cache records and lengths."""

    utterances: List[Utterance]
    info: List[RowInfo]
    samples: np.ndarray  # samples each row will have at the sample rate, before the max_frames cap
    skipped: Counter
    label_names: List[str] = field(default_factory=list)  # class names by index (empty for regression)
    sources: List[Source] = field(default_factory=list)  # what the featurizer encodes, row by row
    notes: List[str] = field(default_factory=list)  # summary lines about the rows (named skips, the ASR WER)
    asr: Dict = field(default_factory=dict)  # --transcripts asr: the model and the corpus WER (CacheMeta.asr)


def collect_rows(reader, sample_rate: int, labels: Optional[Sequence[str]] = None) -> Rows:
    """Read the dataset, check every audio header, and build the cache's row records.

    `labels` keeps only those classes (classification; `kept_labels` checks them): the
    utterances of other classes are counted skips "label X", as are, without `labels`, those of
    the reader's optional classes (MSP-Podcast's O, X). Float files are read whole here
    for NaN/inf samples (a counted skip "non-finite samples").
    """
    names = kept_labels(reader, labels)
    utterances = reader.utterances()
    dropped = Counter()
    if labels is not None or reader.optional_labels:
        utterances = _only_labels(utterances, set(names), dropped)
    utterances, samples, checked = check_utterances(utterances, sample_rate)
    skipped = reader.skipped + dropped + checked  # the reader counted its own skips during that pass
    notes = [named_skips(reason, items) for reason, items in {**reader.skipped_items, **checked.examples}.items()]
    class_index = {name: i for i, name in enumerate(names)}
    root = source_root(reader)
    info = []
    for utt in utterances:
        if reader.task == "classification":
            if utt.label not in class_index:
                raise DatasetError(f"{utt.utt_id}: label {utt.label!r} is not one of {names}")
            label = class_index[utt.label]
        else:
            label = float(utt.label)
        info.append(RowInfo(utt_id=utt.utt_id, label=label, speaker=utt.speaker, session=utt.session,
                            split=utt.split, transcript=utt.transcript, source=_source(utt, root),
                            extra_labels=encoded_extra_labels(utt, reader.label_kinds)))
    return Rows(utterances, info, samples, skipped, names, [utterance_source(u) for u in utterances], notes)


def utterance_source(utt: Utterance) -> Source:
    """What the featurizer encodes for one dataset utterance."""
    return Source(utt.utt_id, audio_path=Path(utt.audio_path), transcript=utt.transcript, start=utt.start, end=utt.end)


def named_skips(reason: str, items: Sequence[str], shown: int = 5) -> str:
    """A summary line naming what was skipped for `reason` (the first `shown`)."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"skipped ({reason}): {', '.join(items[:shown])}{more}"


def kept_labels(reader, labels: Optional[Sequence[str]]) -> List[str]:
    """The cache's label_names: the reader's classes, or those of `labels` in the reader's order.

    DatasetError when `labels` names a class the dataset lacks, or is given for regression.
    """
    if labels is None:
        return list(reader.label_names)
    if reader.task != "classification":
        raise DatasetError(f"{option('labels')} restricts classes, but {reader.root} is a regression dataset (scores)")
    known = tuple(reader.label_names) + tuple(reader.optional_labels)
    unknown = [name for name in labels if name not in known]
    if unknown:
        raise DatasetError(f"{option('labels')}: {', '.join(unknown)} not among the dataset's classes ({', '.join(known)})")
    return [name for name in known if name in set(labels)]


def _only_labels(utterances: Iterable[Utterance], keep: set, dropped: Counter) -> Iterator[Utterance]:
    for utt in utterances:
        if utt.label in keep:
            yield utt
        else:
            dropped[f"label {utt.label}"] += 1


def source_root(reader) -> Path:
    """The folder that `source` paths are stored relative to: the dataset root (a manifest's folder)."""
    root = Path(os.path.abspath(reader.root))
    return root if root.is_dir() else root.parent


def _source(utt: Utterance, root: Path) -> str:
    """The audio path relative to `root` when it lies inside it, else absolute; `:start-end` for segments."""
    path = Path(os.path.abspath(utt.audio_path))
    try:
        where = path.relative_to(root).as_posix()
    except ValueError:
        where = str(path)
    if utt.start is None and utt.end is None:
        return where
    return f"{where}:{utt.start if utt.start is not None else ''}-{utt.end if utt.end is not None else ''}"


def class_report(rows: Rows, task: str) -> List[str]:
    """Lines listing the classes with their row counts, and a warning per class under RARE_CLASS_ROWS
    rows (a typo such as `angry` for `ang` becomes a class of its own); empty for regression."""
    if task != "classification":
        return []
    counts = _class_counts(rows.info, rows.label_names)
    lines = [f"{len(counts)} classes: {_counts(counts)}"]
    rare = [name for name, n in counts.items() if n < RARE_CLASS_ROWS]
    if rare:
        lines.append(f"warning: {len(rare)} classes have fewer than {RARE_CLASS_ROWS} rows: "
                     f"{', '.join(f'{name!r} ({counts[name]})' for name in rare)}; if they are typos, fix the "
                     "labels, or keep only the classes you mean with --labels")
    return lines


def cache_meta(config: ExtractConfig, reader, featurizer: Featurizer, fp16: bool,
               asr_record: Optional[Dict] = None) -> CacheMeta:
    """The cache attributes; `config` holds the settings that change the numbers (compared on resume)."""
    audio, text = featurizer.audio, featurizer.text
    asr = {"transcripts": "asr", "asr_model": config.asr} if config.transcripts == "asr" else {}  # gold: as before
    numbers = {
        **asr,
        "dataset": config.dataset,
        "encoders": config.encoders,
        "audio_encoder": audio.name,
        "text_encoder": text.name,
        "audio_encoder_revision": audio.revision,
        "text_encoder_revision": text.revision,
        "layer": config.layer,
        "layers": config.layers,
        "dtype": config.dtype,
        "precision": "fp16-autocast" if fp16 else "fp32",
        "max_frames": config.max_frames,
        "max_tokens": config.max_tokens,
        "sample_rate": config.sample_rate,
        "labels": list(config.labels) if config.labels is not None else None,
    }
    return CacheMeta(dataset=config.dataset, task=reader.task, label_names=kept_labels(reader, config.labels),
                     audio_encoder=audio.name, text_encoder=text.name, audio_dim=audio.dim, text_dim=text.dim,
                     max_frames=config.max_frames, max_tokens=config.max_tokens, dtype=config.dtype,
                     layer=_one_layer(config.layers), audio_layers=audio.layers, text_layers=text.layers,
                     frame_seconds=(audio.samples_for(2) - audio.samples_for(1)) / config.sample_rate,
                     sample_rate=config.sample_rate, audio_encoder_revision=audio.revision,
                     text_encoder_revision=text.revision, random_encoders=audio.random_init or text.random_init,
                     audio_encoder_digest=audio.weights_digest, text_encoder_digest=text.weights_digest,
                     tool_version=__version__, source_root=str(source_root(reader)), config=numbers,
                     label_scale=list(reader.label_scale or ()), label_kinds=dict(reader.label_kinds),
                     transcripts=config.transcripts, asr=dict(asr_record or {}))


def _one_layer(layers: str) -> int:
    """CacheMeta.layer, kept for one-layer readers: the hidden state of a one-number spelling, else -1."""
    return int(layers) if layers.lstrip("-").isdigit() else -1


def size_line(meta: CacheMeta, rows: int) -> str:
    """What the cache will take on disk, said before the run starts (the free-disk check uses the same sum)."""
    audio, text = meta.stored_layers("audio"), meta.stored_layers("text")
    return (f"the cache will take about {estimated_bytes(meta, rows) / 1e9:.2f} GB: {rows} rows x "
            f"{len(audio)} audio layers x {meta.max_frames} x {meta.audio_dim} + {len(text)} text layers x "
            f"{meta.max_tokens} x {meta.text_dim}, {meta.dtype}")


# ---------------------------------------------------------------------------------- writing
class BackgroundWriter:
    """Writes finished batches into the cache from a thread, so the GPU does not wait on HDF5."""

    def __init__(self, writer: CacheWriter, depth: int = 4):
        self.writer = writer
        self.queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self.error: Optional[BaseException] = None
        self.busy_seconds = 0.0  # time inside writer.write, i.e. spent writing HDF5
        self.thread = threading.Thread(target=self._run, name="swrr-cache-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:  # after an error keep draining, so put() never blocks forever
                started = time.perf_counter()
                try:
                    self.writer.write(*item)
                except BaseException as exc:
                    self.error = exc
                self.busy_seconds += time.perf_counter() - started

    def put(self, rows, audio, audio_len, text, text_len) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((rows, audio, audio_len, text, text_len))

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise its error if it had one."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def read_rows(config: ExtractConfig):
    """-> (reader, Rows) of the dataset; DatasetError when no utterance is usable."""
    reader = get_reader(config.dataset, config.root)
    rows = collect_rows(reader, config.sample_rate, config.labels)
    if not rows.utterances:
        raise DatasetError(f"{reader.root}: no usable utterances (skipped: {_counts(rows.skipped) or 'none'})")
    refuse_input_as_output(config.out_path, reader, rows.utterances)
    if config.transcripts == "asr":
        rows = with_asr_transcripts(rows, config)
    return reader, rows


def with_asr_transcripts(rows: Rows, config: ExtractConfig) -> Rows:
    """The rows with ASR transcripts (extract/transcripts.py), the corpus' own kept as references."""
    asr = transcribe(rows.utterances, config.asr, str(resolve_device(config.device)), config.sample_rate,
                     config.out_path, config.progress)
    info = [replace(r, transcript=u.transcript, reference_transcript=ref, wer=float(w))
            for r, u, ref, w in zip(rows.info, asr.utterances, asr.references, asr.wer)]
    scored = int(np.isfinite(asr.wer).sum())
    note = (f"transcripts: ASR ({config.asr}); WER {100 * asr.corpus_wer:.1f}% against the corpus' transcripts "
            f"over {scored} rows" if scored else f"transcripts: ASR ({config.asr}); the corpus has no transcripts "
            "to compute a WER against")
    record = {"model": config.asr, "corpus_wer": asr.corpus_wer if scored else None, "scored_rows": scored}
    return replace(rows, utterances=asr.utterances, info=info, sources=[utterance_source(u) for u in asr.utterances],
                   notes=rows.notes + [note], asr=record)


def ready_featurizer(config: ExtractConfig, device: torch.device,
                     encoders: Optional[Tuple[AudioEncoder, TextEncoder]] = None) -> Tuple[Featurizer, bool]:
    """-> (featurizer, fp16): both encoders loaded (or given), checked and on `device`."""
    audio, text = encoders or load_encoders(config.encoders, config.audio_encoder, config.text_encoder,
                                            config.layers, config.max_tokens)
    featurizer = Featurizer(audio, text, config.dtype, config.max_frames, config.max_tokens, config.sample_rate)
    return featurizer, featurizer.to(device)


@dataclass
class Extraction:
    """What an extraction does, fixed before anything is encoded: the rows, the cache's attributes
    and the batch plan over all rows (a resume recomputes the same)."""

    rows: Rows
    meta: CacheMeta
    plan: BatchPlan
    batch_budget: str  # e.g. "400 s (auto, 140 GiB card, float16)"

    def report_before_encoding(self) -> None:
        """The cache's size, then the class counts and rare-class warnings, before encoding."""
        for line in [size_line(self.meta, len(self.rows.info)), *class_report(self.rows, self.meta.task)]:
            (logger.warning if line.startswith("warning:") else logger.info)(f"swrr-extract: {line}")

    def summary(self, path: Path, resumed_rows: int, seconds: float, featurizer: Featurizer, write_seconds: float,
                notes: Sequence[str] = ()) -> Summary:
        """The Summary of the finished cache at `path` (one process and ranks alike); `notes` follow the rows' own."""
        rows = self.rows
        return Summary(
            out=path, dataset=self.meta.dataset, task=self.meta.task, rows=len(rows.info), resumed_rows=resumed_rows,
            per_class=_class_counts(rows.info, rows.label_names), per_split=_split_counts(rows.info),
            skipped=dict(sorted(rows.skipped.items())), seconds=seconds, file_bytes=path.stat().st_size,
            random_encoders=self.meta.random_encoders, encoders=describe([featurizer.audio, featurizer.text]),
            batch_budget=self.batch_budget, batches=len(self.plan), padding_waste=self.plan.padding_waste,
            write_seconds=write_seconds, notes=rows.notes + list(notes))


def plan_extraction(config: ExtractConfig, reader, rows: Rows, featurizer: Featurizer, device: torch.device,
                    fp16: bool) -> Extraction:
    """The cache attributes and the batch plan of `rows` (from `read_rows`) on `device`."""
    batch_seconds, batch_budget = resolve_batch_seconds(config.batch_seconds, device, config.dtype)
    return Extraction(rows, cache_meta(config, reader, featurizer, fp16, rows.asr),
                      featurizer.plan(rows.samples, batch_seconds), batch_budget)


def run_one_process(config: ExtractConfig,
                    encoders: Optional[Tuple[AudioEncoder, TextEncoder]] = None) -> Summary:
    """Extract (or finish extracting) the cache described by `config` in this process; see the
    module docstring. `swrr.extract.runner.run_extraction` is the entry that also covers ranks.

    `encoders` (audio, text) replaces loading them from the config (benchmarks build their own).
    Raises a SwrrError (DatasetError, AudioError, CacheError, DeviceError, EncoderError) for problems
    the user can fix. On any interruption the rows already written stay in `<out>.partial` for the next run.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    reader, rows = read_rows(config)  # before the encoders load: a dataset mistake is told at once
    featurizer, fp16 = ready_featurizer(config, device, encoders)
    job = plan_extraction(config, reader, rows, featurizer, device, fp16)
    writer = CacheWriter.open(config.out_path, job.meta, rows.info, overwrite=config.overwrite)
    try:
        job.report_before_encoding()  # once the output is known to be usable
        write_seconds = encode_pending(job.plan, writer, rows, featurizer, config)
        path = writer.finalize()
    finally:
        writer.close()
    progress_path(config.out_path).unlink(missing_ok=True)  # the ASR transcripts are in the cache now
    return job.summary(path, writer.resumed_rows, time.perf_counter() - started, featurizer, write_seconds)


def encode_pending(plan: BatchPlan, writer, rows: Rows, featurizer: Featurizer, config: ExtractConfig) -> float:
    """Encode and write the planned batches not in `writer`'s cache yet; -> seconds spent writing HDF5.

    `writer` is a CacheWriter, or one wrapping it (a rank's shard). Rows whose features are not
    finite are not written (a finished cache never holds one): once the other rows are written,
    EncoderError names them. A file that fails to decode stops the run with its AudioError.
    """
    pending = plan.pending(writer.done_mask())
    background = BackgroundWriter(writer)
    bar = progress_bar(total=len(rows.info), initial=writer.resumed_rows, unit="utt", desc=f"extract {config.dataset}",
                       disable=not config.progress, dynamic_ncols=True)
    not_finite: List[int] = []
    try:
        for encoded in featurizer.encode(rows.sources, pending, config.num_workers):
            keep = encoded.finite
            if keep.all():  # the usual case: the pinned host buffers go to the writer as they are
                background.put(*encoded[:5])
            else:
                not_finite += [r for r, ok in zip(encoded.rows, keep) if not ok]
                if keep.any():
                    background.put(list(np.asarray(encoded.rows)[keep]), encoded.audio[keep],
                                   encoded.audio_len[keep], encoded.text[keep], encoded.text_len[keep])
            bar.update(len(encoded.rows))
    except AudioError as err:  # the row list was fixed by the header check: this file is named and stops the run
        raise AudioError(err.path, err.reason, "; ".join(filter(None, [err.detail, DECODE_HINT]))) from None
    finally:
        bar.close()
        background.close()
    if not_finite:
        raise _not_finite_error(sorted(not_finite), rows, config, writer.partial_path)
    return background.busy_seconds


def _not_finite_error(bad_rows: Sequence[int], rows: Rows, config: ExtractConfig, part: Path) -> EncoderError:
    ids = [rows.info[r].utt_id for r in bad_rows]
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    hint = ("with float16 this is usually overflow of large activations: rerun with --dtype float32 --overwrite, "
            "or " if config.dtype == "float16" else "")
    return EncoderError(f"{len(ids)} utterances gave non-finite (NaN or inf) features: {shown}; {hint}"
                        f"remove them from the dataset and rerun with --overwrite. Their rows were not written; "
                        f"the other rows are kept in {part}")


def refuse_input_as_output(out: Path, reader, utterances: Sequence[Utterance]) -> None:
    """CacheError when `out` is one of the dataset's own files (its manifest, an audio file)."""
    if not out.is_file() or is_swrr_cache(out):  # a dataset's own files are never swrr caches
        return
    out_stat = out.stat()  # compared with each distinct input file once (segments share files)
    for path in dict.fromkeys([*reader.index_files(), *(Path(u.audio_path) for u in utterances)]):
        if os.path.samestat(out_stat, path.stat()):
            raise CacheError(f"{option('out', str(out))} is one of the dataset's input files ({path}); "
                             f"choose another {option('out')}")


def _class_counts(info: Sequence[RowInfo], label_names: Sequence[str]) -> Dict[str, int]:
    if not label_names:  # regression: labels are scores
        return {}
    counts = Counter(int(r.label) for r in info)
    return {name: counts[i] for i, name in enumerate(label_names)}


def _split_counts(info: Sequence[RowInfo]) -> Dict[str, int]:
    counts = Counter(r.split for r in info if r.split)
    order = {"train": 0, "valid": 1, "test": 2}
    return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])))
