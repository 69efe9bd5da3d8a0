"""The feature cache: the only code that knows the HDF5 layout.

`swrr-extract` writes through `CacheWriter`, `swrr-train` reads through `FeatureCache`.

Layout (SCHEMA_VERSION 3), N utterances, La / Lt stored hidden states of each encoder:

    /audio       (N, La, max_frames, audio_dim)  float16 (or float32), one chunk per row and layer
    /audio_len   (N,)  int32    valid frames of each row
    /text        (N, Lt, max_tokens, text_dim)   float16 (or float32), one chunk per row and layer
    /text_len    (N,)  int32    valid tokens of each row ([CLS] and [SEP] included)
    /label       (N,)  int64 class index into label_names, or float32 score (regression)
    /utt_id /speaker /session /split /transcript /source   (N,) utf-8 strings
        source: the audio path relative to attrs["source_root"] (the dataset folder, absolute)
        when the audio lies inside it, else absolute; with `:start-end` for segments.
        (Version 1 stored it relative to the working folder of the extraction; version 1
        caches are still read.)
    /done        (N,)  bool     rows already written (resume)
    /row_digest  (N, 16) uint8  OPTIONAL (caches made before issue 18 lack it): BLAKE2b-128 of
                 each row's lengths and stored (padded) feature bytes, written with the row
    /labels/<kind>  (N,)  optional, one per further label kind named in attrs["label_kinds"]
        (e.g. valence, arousal, dominance, sentiment): float32 scores (NaN = not rated) for a
        kind {"type": "score", "scale": [lo, hi]}, int64 indices into "names" (-1 = none) for
        {"type": "classes", "names": [...]}. attrs["label_scale"] is the [lo, hi] of a
        regression `label` ([] = not stated). Caches without them (older ones) read as having
        no further kinds; readers must treat both as absent.
    /reference_transcript (N,) utf-8, /wer (N,) float32   optional, only when attrs["transcripts"]
        is "asr": `transcript` then holds the ASR text the text features come from, these the
        corpus' own transcript and the row's WER against it (NaN without one); attrs["asr"] =
        {"model", "corpus_wer" (null without references), "scored_rows"}. Absent in gold caches
        and older ones.

    attrs: format, schema_version, complete, and every field of CacheMeta
           (lists and dicts as JSON strings); audio_layers / text_layers name the hidden states
           stored along the layer axis (0 = the transformer's input); OPTIONAL feature_digest (set by `finalize`
           from /row_digest; absent in older caches, which compute it when asked).

Versions 1 and 2 have no layer axis ((N, max_frames, audio_dim)): they open as one-layer caches
holding hidden state `layer` (-1: the last). Decision: one chunk per (row, layer), not one
dataset per layer: reading k of L layers of a row touches exactly k chunks (one layer of an
IEMOCAP-size row is 255 x 768 x 2 B = 392 kB, a good HDF5 chunk), the row and layer axes stay
one array, and a distributed extraction still copies chunks as stored bytes.


Two digests say what a model learns from (see `FeatureCache.task_digest` / `feature_digest`):
the task digest covers row ids, labels (with the class names), splits, speakers and sessions;
the feature digest covers every row's lengths and feature contents, in row order.

A cache is written to `<path>.partial` and renamed to `<path>` only when every row is
written and `complete` is set, so a file at the final path is never a half-written one.
The writer holds an exclusive lock on `<path>.lock` (swrr_core.guards.OutputLock) from `open`
to `finalize`/`close`, so two writers of one path cannot meet; the `.partial` file appears only
with its whole layout (created as `<path>.partial.new`, then renamed), so a `.partial` that
cannot be reopened is damaged or held open by another process, and it is never deleted
without `overwrite`.
Embedding chunks carry Fletcher-32 checksums, so corrupted bytes fail loudly on read.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import h5py
import numpy as np

from swrr.guards import LockHeld, OutputLock
from swrr.errors import SwrrError

FORMAT_TAG = "swrr-feature-cache"
SCHEMA_VERSION = 3  # 3: a layer axis; 2: `source` relative to attrs["source_root"] (1: relative to the working folder)
READABLE_SCHEMA_VERSIONS = (1, 2, 3)  # what FeatureCache opens; a writer resumes only SCHEMA_VERSION
LAYER_AXIS_SINCE = 3  # older versions store one hidden state, without a layer axis
PARTIAL_SUFFIX = ".partial"
SCRATCH_SUFFIX = ".new"  # <path>.partial.new: the layout being created, renamed to .partial when whole
LOCK_OWNER = "swrr-extract"
STRING_COLUMNS = ("utt_id", "speaker", "session", "split", "transcript", "source")
ROW_DIGEST = "row_digest"  # optional dataset: one digest per row, written with the row
DIGEST_BYTES = 16
FEATURE_DIGEST_ATTR = "feature_digest"  # optional attribute: the digest of all row digests, set on finalize
TASK_COLUMNS = ("utt_id", "split", "speaker", "session")  # with the labels: what the task digest covers
# A cache file's own label is a class or a score; "dimensional" (several scores at once) exists only
# in the training view of a cache (swrr_core/targets.py) and in the bundles trained on it.
TASKS = ("classification", "regression", "dimensional")
JSON_FIELDS = ("label_names", "config", "label_scale", "label_kinds", "asr", "audio_layers", "text_layers")  # CacheMeta fields stored as JSON strings
MISSING_CLASS = -1  # a classes label kind's index where the row has none
OPTIONAL_FIELDS = ("label_scale", "label_kinds", "transcripts", "asr", "audio_encoder_digest",
                   "text_encoder_digest")  # CacheMeta fields older caches lack
DTYPES = ("float16", "float32")


class CacheError(SwrrError):
    """A cache that cannot be used as asked; the message names the file and what to do."""


@dataclass
class CacheMeta:
    """Everything a cache records about how it was made (stored as HDF5 attributes)."""

    dataset: str
    task: str  # "classification" | "regression" ("dimensional" only in a training view)
    label_names: List[str]  # class names by index; empty for regression
    audio_encoder: str
    text_encoder: str
    audio_dim: int
    text_dim: int
    max_frames: int = 255
    max_tokens: int = 50
    dtype: str = "float16"
    layer: int = -1
    sample_rate: int = 16000
    audio_encoder_revision: str = ""
    text_encoder_revision: str = ""
    random_encoders: bool = False  # True: features come from randomly initialised encoders
    # optional (issue 18; "" in older caches): extract.encoders.weights_digest of each encoder as loaded
    audio_encoder_digest: str = ""
    text_encoder_digest: str = ""
    tool_version: str = ""
    source_root: str = ""  # absolute dataset folder that relative `source` paths start from
    config: Dict = field(default_factory=dict)  # the full extraction config, compared on resume
    label_scale: List[float] = field(default_factory=list)  # [lo, hi] of a regression label; [] = not stated
    label_kinds: Dict = field(default_factory=dict)  # further label kinds: name -> {"type", "scale" | "names"}
    transcripts: str = "gold"  # "asr": the transcript column (and the text features) come from speech recognition
    asr: Dict = field(default_factory=dict)  # ASR caches: {"model", "corpus_wer", "scored_rows"}; {} for gold
    audio_layers: List[int] = field(default_factory=list)  # hidden states along the layer axis; [] = [layer]
    text_layers: List[int] = field(default_factory=list)
    frame_seconds: float = 0.02  # audio frame hop (20 ms for every encoder family swrr knows)

    def __post_init__(self):
        if self.task not in TASKS:
            raise CacheError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.dtype not in DTYPES:
            raise CacheError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    def stored_layers(self, modality: str) -> List[int]:
        """The hidden states the cache holds for "audio" or "text" ([layer] for a version 1/2 cache)."""
        stored = self.audio_layers if modality == "audio" else self.text_layers
        return [int(k) for k in stored] or [int(self.layer)]

    def to_attrs(self) -> Dict:
        out = {}
        for key, value in asdict(self).items():
            out[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
        return out

    def identity_attrs(self) -> Dict:
        """to_attrs() without the optional fields that are at their defaults (OPTIONAL_FIELDS): what a
        fingerprint hashes, so a cache made before those fields existed keeps the fingerprint it had."""
        empty = CacheMeta(dataset="", task="classification", label_names=[], audio_encoder="", text_encoder="",
                          audio_dim=0, text_dim=0)
        return {k: v for k, v in self.to_attrs().items()
                if not (k in OPTIONAL_FIELDS and getattr(self, k) == getattr(empty, k))}

    @classmethod
    def from_attrs(cls, attrs) -> "CacheMeta":
        kwargs = {}
        for f in fields(cls):
            if f.name not in attrs:
                continue
            value = attrs[f.name]
            if isinstance(value, bytes):
                value = value.decode()
            if f.name in JSON_FIELDS:
                value = json.loads(value)
            elif isinstance(value, np.generic):
                value = value.item()
            kwargs[f.name] = value
        return cls(**kwargs)


@dataclass
class RowInfo:
    """What is known about an utterance before its features exist."""

    utt_id: str
    label: float  # class index (classification) or score (regression)
    speaker: str = ""
    session: str = ""
    split: str = ""
    transcript: str = ""
    source: str = ""  # where the audio came from (path and, for segments, start-end)
    extra_labels: Dict[str, float] = field(default_factory=dict)  # label kind -> score or class index
    reference_transcript: str = ""  # ASR caches: the corpus' own transcript
    wer: float = float("nan")  # ASR caches: the row's WER against it


def differing_config_keys(old: Dict, new: Dict) -> List[str]:
    """Names of the keys whose values differ between two config dicts (sorted)."""
    keys = set(old) | set(new)
    return sorted(k for k in keys if old.get(k) != new.get(k))


def estimated_bytes(meta: CacheMeta, n_rows: int) -> int:
    """The embeddings' size on disk (and in memory when loaded whole), every stored layer counted."""
    itemsize = np.dtype(meta.dtype).itemsize
    return n_rows * itemsize * (len(meta.stored_layers("audio")) * meta.max_frames * meta.audio_dim
                                + len(meta.stored_layers("text")) * meta.max_tokens * meta.text_dim)


class CacheWriter:
    """Writes (or resumes writing) a cache at `path` through `path + '.partial'`.

    Use `CacheWriter.open(...)`, then `write(...)` batches of rows, then `finalize()`. The writer
    holds the output lock on `path` from `open` until `finalize` or `close`.
    """

    def __init__(self, path: Path, h5: h5py.File, meta: CacheMeta, lock: OutputLock):
        self.path = Path(path)
        self.partial_path = partial_path(self.path)
        self._h5 = h5
        self._lock = lock
        self.meta = meta
        self.resumed_rows = int(np.count_nonzero(h5["done"][:]))

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path, meta: CacheMeta, rows: Sequence[RowInfo], overwrite: bool = False) -> "CacheWriter":
        """Take the output lock, then create a new partial cache or reopen a compatible interrupted one.

        A compatible `.partial` (same config, same utterance list) is resumed, with or without
        `overwrite`. Raises CacheError when another process writes `path`, when a complete cache
        or an interrupted one made differently is in the way (unless `overwrite`), when `path` is
        a file that is not an swrr cache (even with `overwrite`), when a `.partial` cannot be
        reopened (kept unless `overwrite`), when the output folder is not writable, or when the
        disk cannot hold the finished file.
        """
        path = Path(path)
        part = partial_path(path)
        if not rows:
            raise CacheError(f"{path}: nothing to write (the dataset yielded no utterances)")
        if path.is_dir():  # else the final rename fails after all the work, even with --overwrite
            raise CacheError(f"{path} is a folder, not a cache file; give a file path such as {path / 'cache.h5'}")
        _check_folder(path)
        if not part.exists():  # before the lock, so that a refusal leaves no file behind
            _check_disk(path, meta, len(rows))
        lock = _lock_output(path)
        try:
            h5 = _open_locked(path, meta, rows, overwrite)
        except BaseException:
            lock.release()
            raise
        return cls(path, h5, meta, lock)

    # ------------------------------------------------------------------ writing
    def done_mask(self) -> np.ndarray:
        return self._h5["done"][:]

    def write(self, rows: Sequence[int], audio: np.ndarray, audio_len, text: np.ndarray, text_len) -> None:
        """Write the features of `rows` (indices into the row list given to `open`).

        audio: (B, La, F, audio_dim) with F <= max_frames, La the stored layers ((B, F, audio_dim)
        when one is stored); text: (B, Lt, T, text_dim), T <= max_tokens. Rows shorter than the
        maximum are zero padded here. The done mask is set only after
        the data is flushed, so a kill between the two just recomputes the rows.
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows)  # h5py fancy indexing wants increasing indices
        rows = rows[order]
        audio_len = np.asarray(audio_len)[order]
        text_len = np.asarray(text_len)[order]
        h5 = self._h5
        audio = _pad_to(np.asarray(audio)[order], self.meta.max_frames, self.meta.dtype, "audio",
                        len(self.meta.stored_layers("audio")))
        text = _pad_to(np.asarray(text)[order], self.meta.max_tokens, self.meta.dtype, "text",
                       len(self.meta.stored_layers("text")))
        try:
            # One row at a time: h5py's fancy-index write of scattered rows is 20-30x slower
            # (measured ~20 MB/s vs ~500 MB/s) than writing each one-row chunk directly.
            for i, row in enumerate(rows):
                h5["audio"][row] = audio[i]
                h5["text"][row] = text[i]
            h5["audio_len"][rows] = audio_len
            h5["text_len"][rows] = text_len
            if ROW_DIGEST in h5:  # a .partial begun by an older swrr has none: its digest is computed on open
                h5[ROW_DIGEST][rows] = row_digests(audio, audio_len, text, text_len)
            h5.flush()
            h5["done"][rows] = True
            h5.flush()
        except OSError as exc:  # disk full, I/O error: the rows already marked done stay valid
            raise CacheError(f"{self.partial_path}: writing rows failed ({exc}); the rows written before are "
                             "kept: fix the cause (e.g. free some space) and rerun the same command to resume") from exc

    def copy_rows(self, source: Path, rows: np.ndarray) -> None:
        """Copy `rows` (increasing indices, done in `source`) from `source`, a partial cache of the
        same layout and row list (a distributed extraction's shard), into this cache.

        Embedding chunks are copied as stored bytes (compressed data and Fletcher-32 checksum
        as they are, no decoding), lengths as values; the done mask is set after a flush, as in
        `write`, so a kill during the copy only copies those rows again."""
        rows = np.asarray(rows, dtype=np.int64)
        h5 = self._h5
        try:
            with h5py.File(source, "r") as src:
                for name in ("audio", "text"):
                    src_id, dst_id = src[name].id, h5[name].id
                    for row in rows:
                        for layer in range(h5[name].shape[1]):
                            mask, chunk = src_id.read_direct_chunk((int(row), layer, 0, 0))
                            dst_id.write_direct_chunk((int(row), layer, 0, 0), chunk, mask)
                for name in ("audio_len", "text_len", ROW_DIGEST):
                    if name in h5 and name in src:
                        h5[name][rows] = src[name][rows]
            h5.flush()
            h5["done"][rows] = True
            h5.flush()
        except OSError as exc:
            raise CacheError(f"{self.partial_path}: copying rows from {source} failed ({exc}); the rows copied "
                             "before are kept: fix the cause and rerun the same command to resume") from exc

    def finalize(self) -> Path:
        """Mark the cache complete and move it to its final path. Returns that path.

        Only the lock holder renames, and only a file whose reread `complete` flag and done
        mask say it is whole; the lock is released after the rename.
        """
        if not self._lock.held:
            raise CacheError(f"{self.partial_path}: the writer no longer holds the output lock; not renaming it")
        done = self._h5["done"][:]
        if not done.all():
            missing = int((~done).sum())
            raise CacheError(f"{self.partial_path}: {missing} rows are still missing; not marking it complete")
        if ROW_DIGEST in self._h5:
            digests = self._h5[ROW_DIGEST][:]
            if digests.any(axis=1).all():  # every row's digest was written (not copied from an older shard)
                self._h5.attrs[FEATURE_DIGEST_ATTR] = feature_digest_of(digests)
        self._h5.attrs["complete"] = True
        self._h5.close()
        _check_whole(self.partial_path)
        os.replace(self.partial_path, self.path)
        self._lock.release()
        return self.path

    def close(self) -> None:
        """Close without finalizing (the partial file stays, ready to resume) and drop the lock."""
        if self._h5.id.valid:
            self._h5.close()
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def row_digests(audio: np.ndarray, audio_len, text: np.ndarray, text_len) -> np.ndarray:
    """(B, DIGEST_BYTES) uint8: per row, BLAKE2b of its two lengths and its stored (padded,
    cache-dtype) audio and text feature bytes. The writer and a reader of the finished file
    compute the same value from the same row."""
    out = np.empty((len(audio), DIGEST_BYTES), dtype=np.uint8)
    for i in range(len(audio)):
        h = hashlib.blake2b(digest_size=DIGEST_BYTES)
        h.update(np.asarray([audio_len[i], text_len[i]], dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(audio[i]).tobytes())
        h.update(np.ascontiguousarray(text[i]).tobytes())
        out[i] = np.frombuffer(h.digest(), dtype=np.uint8)
    return out


def feature_digest_of(digests: np.ndarray) -> str:
    """The feature digest of a cache from its row digests (N, DIGEST_BYTES), in row order."""
    return hashlib.blake2b(np.ascontiguousarray(digests, dtype=np.uint8).tobytes(), digest_size=16).hexdigest()


def _pad_to(x: np.ndarray, length: int, dtype: str, name: str, layers: int) -> np.ndarray:
    """Zero-pad (B, layers, F, D) (or (B, F, D) when layers == 1) to (B, layers, length, D) in the
    cache dtype; refuse F > length or another number of layers."""
    if x.ndim == 3 and layers == 1:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != layers or x.shape[2] > length:
        raise CacheError(f"{name} batch has shape {x.shape}; expected (B, {layers}, <= {length}, D)")
    out = np.zeros((x.shape[0], layers, length, x.shape[3]), dtype=dtype)
    out[:, :, : x.shape[2]] = x
    return out


def partial_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _lock_output(path: Path) -> OutputLock:
    """The exclusive lock on `<path>.lock`; CacheError naming the holder when another process has it."""
    try:
        return OutputLock(path, LOCK_OWNER).acquire()
    except LockHeld as exc:
        raise CacheError(str(exc)) from None
    except OSError as exc:
        raise CacheError(f"{path}: cannot create the lock file {path}.lock ({exc}); choose another --out") from None


def _open_locked(path: Path, meta: CacheMeta, rows: Sequence[RowInfo], overwrite: bool) -> h5py.File:
    """CacheWriter.open's work once the lock is held: resume, refuse, or create the partial file."""
    part = partial_path(path)
    scratch = part.with_name(part.name + SCRATCH_SUFFIX)
    if scratch.exists():  # a layout cut short by a kill: it never holds rows
        scratch.unlink()
    if path.exists():
        check_replaceable(path)
    if part.exists():
        h5 = _reopen_partial(part, meta, rows, overwrite)
        if h5 is not None:
            return h5
    if path.exists() and not overwrite:
        raise CacheError(_existing_message(path, meta))
    _check_disk(path, meta, len(rows))
    if part.exists():
        part.unlink()
    try:
        h5 = h5py.File(scratch, "w")
    except OSError as exc:
        raise CacheError(f"{part}: cannot create the cache file ({exc})") from exc
    with h5:
        _create_layout(h5, meta, rows)
    os.replace(scratch, part)
    return h5py.File(part, "r+")


def is_swrr_cache(path) -> bool:
    """Whether `path` is an HDF5 file carrying the swrr cache tag (any schema version, complete or not)."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as h5:
            return h5.attrs.get("format") == FORMAT_TAG
    except OSError:
        return False


def check_replaceable(path: Path) -> None:
    """Refuse, even with overwrite, to replace a file that is not an swrr cache (a manifest, a wav...)."""
    if not is_swrr_cache(path):
        raise CacheError(f"{path} exists and is not an swrr feature cache; swrr-extract replaces only its own "
                         "caches, even with --overwrite: choose another --out (or move that file away yourself)")


def shard_path(path, rank: int, world: int) -> Path:
    """The name a distributed extraction's rank writes its shard under: `<path>.rank-R-of-W`.
    Its CacheWriter works at `<path>.rank-R-of-W.partial` and is never finalized: the shard
    holds the whole row list and this rank's rows, and is deleted once the cache is assembled."""
    path = Path(path)
    return path.with_name(f"{path.name}.rank-{rank}-of-{world}")


def shard_partials(path) -> List[Path]:
    """The shard files of distributed extractions of `path` on disk, of any world size."""
    path = Path(path)
    return sorted(path.parent.glob(f"{glob.escape(path.name)}.rank-*-of-*{PARTIAL_SUFFIX}"))


def discard_shard(shard_partial) -> None:
    """Delete an assembled shard (`<out>.rank-R-of-W.partial`) and its lock file. The lock is taken
    first: a shard some live process still holds keeps its lock file (deleting it would let two
    processes lock two different files), so no `.lock` is left beside a finished cache otherwise."""
    shard_partial = Path(shard_partial)
    shard = shard_partial.with_name(shard_partial.name[: -len(PARTIAL_SUFFIX)])
    try:
        lock = OutputLock(shard, LOCK_OWNER).acquire()
    except (LockHeld, OSError):
        shard_partial.unlink(missing_ok=True)  # assembled already: the rows are in the cache
        return
    try:
        shard_partial.unlink(missing_ok=True)
        lock.file.unlink(missing_ok=True)
    finally:
        lock.release()


def refuse_finished(path, meta: CacheMeta) -> None:
    """CacheError when a finished cache is at `path` (the caller checks --overwrite)."""
    if Path(path).exists():
        raise CacheError(_existing_message(Path(path), meta))


def partial_done(part, meta: CacheMeta, rows: Sequence[RowInfo]) -> Optional[np.ndarray]:
    """The done mask of the partial cache `part` when it was made with this config and row list;
    None when it is missing or unreadable; CacheError when it was made differently."""
    if not Path(part).exists():
        return None
    try:
        with h5py.File(part, "r") as h5:
            _validate_layout(h5, part, versions=(SCHEMA_VERSION,))  # what CacheWriter.open resumes
            difference = _made_differently(h5, meta, rows)
            done = h5["done"][:]
    except (OSError, KeyError, ValueError, TypeError, CacheError):
        return None
    if difference:
        raise CacheError(_made_differently_message(part, difference))
    return done


def _made_differently(h5: h5py.File, meta: CacheMeta, rows: Sequence[RowInfo]) -> str:
    """How the interrupted cache `h5` differs from this config and row list; "" when it does not."""
    keys = differing_config_keys(CacheMeta.from_attrs(h5.attrs).config, meta.config)
    if keys:
        return f"config differs in: {', '.join(keys)}"
    if list(h5["utt_id"].asstr()[:]) != [r.utt_id for r in rows]:
        return "the dataset's utterance list changed"
    return ""


def _made_differently_message(part, difference: str) -> str:
    return f"{part} is an interrupted extraction made differently ({difference}); pass --overwrite to start again"


def _existing_message(path: Path, meta: CacheMeta) -> str:
    try:
        with FeatureCache(path) as old:
            keys = differing_config_keys(old.meta.config, meta.config)
    except CacheError as exc:
        return f"{path} already exists and is not a usable cache ({exc}); pass --overwrite to replace it"
    if keys:
        return (f"{path} already exists with a different extraction config (differs in: {', '.join(keys)}); "
                "pass --overwrite to replace it, or choose another --out")
    return f"{path} is already complete with this config; pass --overwrite to extract it again"


def _reopen_partial(part: Path, meta: CacheMeta, rows: Sequence[RowInfo], overwrite: bool) -> Optional[h5py.File]:
    """Reopen an interrupted cache for resuming; None when `overwrite` and it must be started again.

    Called with the output lock held, so no other swrr-extract writes it. A file that cannot be
    reopened is never deleted without `overwrite`: it holds finished rows, and the cause
    (a process still holding it open, damage) is named.
    """
    try:
        h5 = h5py.File(part, "r+")
    except OSError as exc:
        if overwrite:
            return None
        if "lock" in str(exc).lower():
            raise CacheError(f"{part} is held open by another process (e.g. a decoding worker left by a killed "
                             "swrr-extract, which ends within seconds); nothing was deleted: wait a moment and rerun "
                             f"the same command to resume (`fuser {part}` names the process)") from None
        raise CacheError(f"{part} is an interrupted extraction that cannot be reopened, it is damaged ({exc}); "
                         "nothing was deleted: pass --overwrite to discard it and start again") from None
    try:
        _validate_layout(h5, part, versions=(SCHEMA_VERSION,))
        difference = _made_differently(h5, meta, rows)
    except (OSError, KeyError, CacheError, ValueError, TypeError) as exc:
        h5.close()
        if overwrite:
            return None
        raise CacheError(f"{part} is an interrupted extraction that cannot be resumed ({exc}); "
                         "nothing was deleted: pass --overwrite to discard it and start again") from None
    if difference:
        h5.close()
        if overwrite:
            return None
        raise CacheError(_made_differently_message(part, difference))
    return h5


def _check_whole(part: Path) -> None:
    """Reread a closed partial file: its `complete` flag and every done flag must be set."""
    try:
        with h5py.File(part, "r") as h5:
            whole = _complete_flag(h5.attrs, part) and bool(h5["done"][:].all())
    except (OSError, KeyError) as exc:
        raise CacheError(f"{part} cannot be reread before its rename ({exc}); rerun the same command") from exc
    if not whole:
        raise CacheError(f"{part}: the file is not marked complete with every row done; not renaming it")


def _check_folder(path: Path) -> None:
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{folder}: cannot create the output folder ({exc})") from exc
    if not os.access(folder, os.W_OK):
        raise CacheError(f"{folder}: the output folder is not writable; choose another --out")


def _check_disk(path: Path, meta: CacheMeta, n_rows: int) -> None:
    folder = path.parent
    need = estimated_bytes(meta, n_rows)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise CacheError(f"{path}: the cache needs about {human_bytes(need)} but {folder} has "
                         f"{human_bytes(free)} free; free some space or choose another --out")


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB': a size in the unit that shows it (not '0.00 GB' for a small cache)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _create_layout(h5: h5py.File, meta: CacheMeta, rows: Sequence[RowInfo]) -> None:
    n = len(rows)
    h5.attrs["format"] = FORMAT_TAG
    h5.attrs["schema_version"] = SCHEMA_VERSION
    h5.attrs["complete"] = False
    for key, value in meta.to_attrs().items():
        h5.attrs[key] = value
    # One chunk per row and layer: reading k layers of a random row touches exactly k chunks.
    for name, size, dim in (("audio", meta.max_frames, meta.audio_dim), ("text", meta.max_tokens, meta.text_dim)):
        layers = len(meta.stored_layers(name))
        h5.create_dataset(name, (n, layers, size, dim), dtype=meta.dtype, chunks=(1, 1, size, dim),
                          fletcher32=True, fillvalue=0)
    h5.create_dataset("audio_len", (n,), dtype="int32", fillvalue=0)
    h5.create_dataset("text_len", (n,), dtype="int32", fillvalue=0)
    label_dtype = "int64" if meta.task == "classification" else "float32"
    h5.create_dataset("label", data=np.asarray([r.label for r in rows], dtype=label_dtype))
    text_type = h5py.string_dtype("utf-8")
    for column in STRING_COLUMNS:
        h5.create_dataset(column, data=[str(getattr(r, column)) for r in rows], dtype=text_type)
    if meta.transcripts == "asr":
        h5.create_dataset("reference_transcript", data=[r.reference_transcript for r in rows], dtype=text_type)
        h5.create_dataset("wer", data=np.asarray([r.wer for r in rows], dtype="float32"))
    for kind, spec in meta.label_kinds.items():
        classes = spec["type"] == "classes"
        missing = MISSING_CLASS if classes else np.nan
        h5.create_dataset(f"labels/{kind}", data=np.asarray([r.extra_labels.get(kind, missing) for r in rows],
                                                            dtype="int64" if classes else "float32"))
    h5.create_dataset("done", (n,), dtype="bool", fillvalue=False)
    h5.create_dataset(ROW_DIGEST, (n, DIGEST_BYTES), dtype="uint8", fillvalue=0)
    h5.flush()


def _validate_layout(h5: h5py.File, path, versions: Sequence[int] = READABLE_SCHEMA_VERSIONS) -> None:
    attrs = h5.attrs
    if attrs.get("format") != FORMAT_TAG:
        raise CacheError(f"{path} is an HDF5 file but not an swrr feature cache (no '{FORMAT_TAG}' tag); "
                         "make one with swrr-extract")
    version = int(attrs.get("schema_version", -1))
    if version not in versions:
        readable = " or ".join(map(str, versions))
        raise CacheError(f"{path} has cache schema version {version}, this swrr reads version {readable}; "
                         "re-extract it with this version: swrr-extract ... --overwrite")
    _complete_flag(attrs, path)
    required = ("audio", "audio_len", "text", "text_len", "label", "done") + STRING_COLUMNS
    missing = [name for name in required if name not in h5]
    if missing:
        raise CacheError(f"{path} lacks the datasets {missing}; it is damaged: re-extract it with --overwrite")
    n = h5["done"].shape[0]
    meta = CacheMeta.from_attrs(attrs)
    axis = (lambda name: (len(meta.stored_layers(name)),)) if version >= LAYER_AXIS_SINCE else (lambda name: ())
    expected = {
        "audio": (n, *axis("audio"), meta.max_frames, meta.audio_dim),
        "text": (n, *axis("text"), meta.max_tokens, meta.text_dim),
    }
    if ROW_DIGEST in h5:
        expected[ROW_DIGEST] = (n, DIGEST_BYTES)
    for name in (*required, *([ROW_DIGEST] if ROW_DIGEST in h5 else [])):
        shape = h5[name].shape
        want = expected.get(name, (n,))
        if shape != want:
            raise CacheError(f"{path}: dataset '{name}' has shape {shape}, expected {want} from the file's "
                             "attributes; the cache is damaged: re-extract it with --overwrite")


def _complete_flag(attrs, path) -> bool:
    """The `complete` attribute, which must be a boolean (a string such as "no" is damage, not True)."""
    value = attrs.get("complete", False)
    if not isinstance(value, (bool, np.bool_)):
        raise CacheError(f"{path}: attribute 'complete' is {value!r} ({type(value).__name__}), not a boolean; "
                         "the cache is damaged or was written by another tool: re-extract it with --overwrite")
    return bool(value)


def _check_labels(label: np.ndarray, meta: CacheMeta, utt_id: np.ndarray, path) -> None:
    """Classification labels must be integer indices into label_names (regression scores are not checked here)."""
    if meta.task != "classification":
        return
    n_classes = len(meta.label_names)
    if not np.issubdtype(label.dtype, np.integer):
        raise CacheError(f"{path}: the labels are {label.dtype}, not class indices, in a classification cache; "
                         "it is damaged or was written by another tool: re-extract it with --overwrite")
    bad = np.flatnonzero((label < 0) | (label >= n_classes))
    if len(bad):
        raise CacheError(f"{path}: {len(bad)} rows have a label index outside the {n_classes} label_names "
                         f"{list(meta.label_names)} (e.g. {utt_id[bad[0]]}: {int(label[bad[0]])}); the cache is "
                         "damaged or was written by another tool: re-extract it with --overwrite")


def _read_label_kinds(h5: h5py.File, meta: CacheMeta, path) -> Dict[str, np.ndarray]:
    """kind -> (N,) values of the further label kinds that attrs["label_kinds"] names (none in older caches)."""
    n = h5["done"].shape[0]
    out = {}
    for kind in meta.label_kinds:
        name = f"labels/{kind}"
        if name not in h5 or h5[name].shape != (n,):
            raise CacheError(f"{path}: label kind {kind!r} is declared but its dataset /{name} is missing or not "
                             f"({n},); the cache is damaged: re-extract it with --overwrite")
        out[kind] = h5[name][:]
    return out


class FeatureCache:
    """Read-only view of a complete cache.

    Opening validates format, schema version, shapes and the completeness marker. The small
    columns (lengths, labels, ids, speakers, ...) are read at once; embeddings are read by
    `load()` (all rows into memory) or `read_rows()` (random access). The HDF5 handle is
    reopened after a fork, so one instance is safe to share with DataLoader workers.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            if partial_path(self.path).exists():
                hint = " (an interrupted extraction is at .partial: rerun the same swrr-extract command to finish it)"
            else:
                hint = f"; make one with: swrr-extract --dataset DATASET --root DATA --out {self.path}"
            raise CacheError(f"{self.path}: no such cache file{hint}")
        if not h5py.is_hdf5(self.path):
            raise CacheError(f"{self.path} is not an HDF5 file (truncated or not a cache); "
                             "re-extract it with swrr-extract --overwrite")
        self._h5 = None
        self._pid = None
        try:
            h5 = self._file()
            _validate_layout(h5, self.path)
            if not _complete_flag(h5.attrs, self.path):
                raise CacheError(f"{self.path} is incomplete (its extraction did not finish); "
                                 "rerun swrr-extract to finish it")
            self.meta = CacheMeta.from_attrs(h5.attrs)
            done = h5["done"][:]
            if not done.all():
                raise CacheError(f"{self.path} is marked complete but {int((~done).sum())} rows are missing; "
                                 "re-extract it with --overwrite")
            self.audio_len = h5["audio_len"][:]
            self.text_len = h5["text_len"][:]
            self.label = h5["label"][:]
            self.columns = {c: np.asarray(h5[c].asstr()[:], dtype=object) for c in STRING_COLUMNS}
            _check_labels(self.label, self.meta, self.columns["utt_id"], self.path)
            self.extra_labels = _read_label_kinds(h5, self.meta, self.path)
            asr = self.meta.transcripts == "asr" and "wer" in h5 and "reference_transcript" in h5
            self.reference_transcript = np.asarray(h5["reference_transcript"].asstr()[:], dtype=object) if asr else None
            self.wer = h5["wer"][:] if asr else None  # per row; None in a gold cache
            self._layer_axis = int(h5.attrs["schema_version"]) >= LAYER_AXIS_SINCE
            self.layer_positions = {m: list(range(len(self.meta.stored_layers(m)))) for m in ("audio", "text")}
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self.close()
            raise CacheError(f"{self.path} is damaged or truncated ({exc}); re-extract it with --overwrite") from exc
        except CacheError:
            self.close()
            raise

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as exc:
                raise CacheError(f"{self.path} cannot be opened as HDF5 ({exc}); "
                                 "it is truncated or damaged: re-extract it with --overwrite") from exc
            self._pid = os.getpid()
        return self._h5

    def __len__(self) -> int:
        return len(self.label)

    def select_layers(self, audio: Optional[Sequence[int]] = None, text: Optional[Sequence[int]] = None) -> "FeatureCache":
        """From now on read only these positions along each modality's layer axis (None: all stored).

        Rows then come as (rows, k, frames, dim) for k > 1 selected layers and (rows, frames, dim)
        for one; only the selected layers' chunks are read from disk."""
        for modality, positions in (("audio", audio), ("text", text)):
            stored = len(self.meta.stored_layers(modality))
            positions = list(range(stored)) if positions is None else sorted(set(int(p) for p in positions))
            if not positions or not all(0 <= p < stored for p in positions):
                raise CacheError(f"{self.path}: layer positions {positions} outside the {stored} stored {modality} layers")
            self.layer_positions[modality] = positions
        return self

    @property
    def layers(self) -> Dict[str, List[int]]:
        """The hidden states being read, per modality (indices as the encoders count them)."""
        return {m: [self.meta.stored_layers(m)[p] for p in self.layer_positions[m]] for m in ("audio", "text")}

    def embedding_bytes(self) -> int:
        """The size of what `load()` returns: every row's embeddings at the selected layers."""
        selected = replace(self.meta, audio_layers=self.layers["audio"], text_layers=self.layers["text"])
        return estimated_bytes(selected, len(self))

    def _embeddings(self, name: str, idx: Optional[np.ndarray] = None) -> np.ndarray:
        """The selected layers of all rows (idx None) or of rows idx, row by row (one chunk per row
        and layer: h5py's fancy-index read is ~30x slower, measured)."""
        data = self._file()[name]
        if not self._layer_axis:
            return data[:] if idx is None else np.stack([data[i] for i in idx])
        positions = self.layer_positions[name]
        rows = data.shape[0] if idx is None else len(idx)
        out = np.empty((rows, len(positions), *data.shape[2:]), dtype=data.dtype)
        if idx is None:
            for j, p in enumerate(positions):
                data.read_direct(out, np.s_[:, p], np.s_[:, j])
        elif positions == list(range(positions[0], positions[-1] + 1)):
            for r, i in enumerate(idx):
                data.read_direct(out, np.s_[int(i), positions[0]:positions[-1] + 1], np.s_[r])
        else:
            for r, i in enumerate(idx):
                for j, p in enumerate(positions):
                    data.read_direct(out, np.s_[int(i), p], np.s_[r, j])
        return out[:, 0] if len(positions) == 1 else out

    @property
    def utt_id(self):
        return self.columns["utt_id"]

    @property
    def speaker(self):
        return self.columns["speaker"]

    @property
    def session(self):
        return self.columns["session"]

    @property
    def split(self):
        return self.columns["split"]

    @property
    def transcript(self):
        return self.columns["transcript"]

    def load(self, rows: Optional[Iterable[int]] = None) -> Dict[str, np.ndarray]:
        """All (or the given) rows in memory: audio, audio_len, text, text_len, label."""
        try:
            audio, text = self._embeddings("audio"), self._embeddings("text")
        except OSError as exc:
            raise CacheError(f"{self.path}: reading the embeddings failed ({exc}); "
                             "the file is damaged: re-extract it with --overwrite") from exc
        if rows is None:
            return self._with_columns(audio, text)
        idx = np.asarray(list(rows), dtype=np.int64)
        return self._with_columns(audio[idx], text[idx], idx)

    def read_rows(self, rows: Sequence[int]) -> Dict[str, np.ndarray]:
        """Random access to some rows, in the order given."""
        idx = np.asarray(rows, dtype=np.int64)
        try:
            audio, text = self._embeddings("audio", idx), self._embeddings("text", idx)
        except OSError as exc:
            raise CacheError(f"{self.path}: reading rows failed ({exc}); "
                             "the file is damaged: re-extract it with --overwrite") from exc
        return self._with_columns(audio, text, idx)

    def _with_columns(self, audio: np.ndarray, text: np.ndarray, idx=slice(None)) -> Dict[str, np.ndarray]:
        """Embeddings read for rows `idx` (all by default) with those rows' lengths and labels."""
        return {"audio": audio, "audio_len": self.audio_len[idx], "text": text,
                "text_len": self.text_len[idx], "label": self.label[idx]}

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            try:
                self._h5.close()
            except Exception:
                pass
        self._h5 = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None  # h5py handles do not pickle; each process opens its own
        state["_pid"] = None
        return state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def task_digest(self) -> str:
        """What the model is taught and scored on: the task, class names, and per row (in order)
        its id, label, split, speaker and session. Equal task digests: the same rows with the same
        labels in the same splits, whatever the features (other encoders, layers, transcripts)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.meta.task, list(self.meta.label_names)]).encode())
        h.update(np.ascontiguousarray(self.label, dtype="<i8" if self.meta.task == "classification"
                                      else "<f4").tobytes())
        for column in TASK_COLUMNS:
            h.update(json.dumps(self.columns[column].tolist()).encode())
        return h.hexdigest()

    def feature_digest(self, chunk_rows: int = 128) -> str:
        """Every row's lengths and feature contents, in row order: the attribute the writer stored,
        or (a cache made before it existed) computed now with one chunked pass over the embeddings."""
        stored = self._file().attrs.get(FEATURE_DIGEST_ATTR)
        if stored is not None:
            return stored.decode() if isinstance(stored, bytes) else str(stored)
        if getattr(self, "_feature_digest", None) is None:
            digests = []
            try:
                h5 = self._file()
                for start in range(0, len(self), chunk_rows):
                    rows = slice(start, start + chunk_rows)
                    digests.append(row_digests(h5["audio"][rows], self.audio_len[rows], h5["text"][rows],
                                               self.text_len[rows]))
            except OSError as exc:
                raise CacheError(f"{self.path}: reading the embeddings failed ({exc}); "
                                 "the file is damaged: re-extract it with --overwrite") from exc
            self._feature_digest = feature_digest_of(np.concatenate(digests))
        return self._feature_digest

    def nonfinite_rows(self, chunk_rows: int = 128) -> np.ndarray:
        """Indices (sorted, int64) of the rows whose audio or text embeddings hold NaN or inf.

        One pass over the embeddings (every stored layer), `chunk_rows` rows of one layer at a
        time, so memory stays at one chunk (128 rows of IEMOCAP-size float16 features: 50 MB)
        whatever the cache's size.
        """
        bad = []
        try:
            h5 = self._file()
            for name in ("audio", "text"):
                data = h5[name]
                for layer in [None] if data.ndim == 3 else range(data.shape[1]):  # versions 1-2: no layer axis
                    for start in range(0, len(data), chunk_rows):
                        rows = np.s_[start:start + chunk_rows]
                        chunk = data[rows] if layer is None else data[rows, layer]
                        bad.append(start + np.flatnonzero(~np.isfinite(chunk).all(axis=(1, 2))))
        except OSError as exc:
            raise CacheError(f"{self.path}: reading the embeddings failed ({exc}); "
                             "the file is damaged: re-extract it with --overwrite") from exc
        return np.unique(np.concatenate(bad)).astype(np.int64) if bad else np.zeros(0, np.int64)


def open_cache(path) -> FeatureCache:
    return FeatureCache(path)
