"""What `swrr-predict` is asked to score: audio files, folders, manifests -> a list of `Item`s.

- files: each with `--text` (one per file, in order) or a sidecar `<name>.txt` beside it;
- a folder: every audio file below it (recursive, sorted), with sidecar transcripts;
- a manifest CSV in the format `swrr-extract --dataset manifest` reads (path, text, and optional
  utt_id, start, end; a label column is not needed); every other column is kept in the output.

A problem with one input (missing file, not audio) is not raised here: it becomes an error row
later. Only an ambiguous request (`--text` with a folder or manifest) is a PredictError.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from swrr.extract.datasets.manifest import check_unique_ids, is_number, read_csv_table
from swrr.errors import SwrrError
from swrr.extract.featurizer import Source

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff")
MANIFEST_COLUMNS = ("path", "text", "utt_id", "start", "end")  # what the manifest means to predict

GIVEN, SIDECAR, ASR = "given", "sidecar", "asr"  # where a transcript came from
BAD_TIMES = "start/end are not times in seconds"


class PredictError(SwrrError):
    """A prediction request that cannot be carried out; the message names the input and the fix."""


def failure_text(reason: str, detail: str = "") -> str:
    """An error cell: the fixed reason first (the summary groups rows by it), then the detail in ()."""
    return reason + (f" ({detail})" if detail else "")


@dataclass
class Item:
    """One utterance or segment to score: a file (`path`), or a waveform in memory at its
    `sampling_rate` (path None). start/end: seconds into the audio (None = its edge)."""

    item_id: str
    path: Optional[Path]
    text: Optional[str] = None  # None: no transcript yet
    text_source: str = ""  # given | sidecar | asr | ""
    start: Optional[float] = None
    end: Optional[float] = None
    extra: Dict[str, str] = field(default_factory=dict)  # manifest columns kept in the output
    notes: List[str] = field(default_factory=list)
    error: str = ""
    file_id: str = ""  # the input this segment was cut from (= item_id when not segmented)
    waveform: Optional[Any] = field(default=None, repr=False)  # numpy array or tensor, instead of a path
    sampling_rate: Optional[int] = None  # of the waveform

    def __post_init__(self):
        self.file_id = self.file_id or self.item_id

    @property
    def source(self) -> Source:
        """What the featurizer reads for this item (the one place an item becomes an utterance)."""
        return Source(self.item_id, audio_path=self.path, transcript=self.text or "", start=self.start, end=self.end,
                      waveform=self.waveform, sampling_rate=self.sampling_rate)

    def segment(self, number: int, start: float, end: float) -> "Item":
        """The part [start, end) s of this item's file, as an item of its own."""
        return replace(self, item_id=f"{self.item_id}#{number}", start=round(start, 3), end=round(end, 3),
                       notes=list(self.notes), extra=dict(self.extra), file_id=self.item_id)


def collect_inputs(inputs: Sequence[str], texts: Sequence[str] = ()) -> List[Item]:
    """Items of all inputs in order; PredictError for an ambiguous or empty request."""
    if not inputs:
        raise PredictError("give at least one INPUT: audio files, a folder of audio, or a manifest CSV")
    paths = [Path(p).expanduser() for p in inputs]
    grouped = [p for p in paths if p.is_dir() or p.suffix.lower() == ".csv"]
    if texts and grouped:
        raise PredictError(f"--text is ambiguous with the folder or manifest input {grouped[0]}; give the "
                           "transcripts as <name>.txt sidecars or in the manifest's text column")
    files = [p for p in paths if p not in grouped]
    if texts and len(texts) != len(files):
        raise PredictError(f"--text was given {len(texts)} times for {len(files)} audio files; "
                           "give one --text per file, in the same order")
    given = iter(texts)  # the i-th --text belongs to the i-th audio file, even one named twice
    items: List[Item] = []
    for path in paths:
        if path.is_dir():
            items.extend(_folder_items(path))
        elif path.suffix.lower() == ".csv":
            items.extend(_manifest_items(path))
        else:
            items.append(_file_item(path, path.stem, next(given, None)))
    seen = set()
    for item in items:  # files of the same name (or one file twice) on the command line: told apart by a suffix
        base, n = item.item_id, 1
        while item.item_id in seen:
            n += 1
            item.item_id = item.file_id = f"{base}~{n}"
        seen.add(item.item_id)
    return items


def _file_item(path: Path, item_id: str, text: Optional[str]) -> Item:
    if text is not None:
        return Item(item_id, path, text, GIVEN)
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        return Item(item_id, path, sidecar.read_text(encoding="utf-8", errors="replace").strip(), SIDECAR)
    return Item(item_id, path)


def _folder_items(folder: Path) -> List[Item]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise PredictError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder or below")
    return [_file_item(p, p.relative_to(folder).with_suffix("").as_posix(), None) for p in files]


def _manifest_items(csv_path: Path) -> List[Item]:
    from swrr.extract.datasets import DatasetError

    if not csv_path.is_file():
        raise PredictError(f"{csv_path}: manifest not found")
    try:
        table = read_csv_table(csv_path, required=("path",))
    except DatasetError as exc:
        raise PredictError(str(exc)) from None
    records = [{k: str(v).strip() for k, v in row.items()} for row in table.to_dict("records")]
    try:  # swrr-extract's rule: a manifest names each row once
        check_unique_ids(csv_path, [row.get("utt_id") or Path(row["path"]).with_suffix("").as_posix()
                                    for row in records], "utt_id" in table.columns)
    except DatasetError as exc:
        raise PredictError(str(exc)) from None
    items = []
    for line, row in enumerate(records, start=2):
        path = Path(row["path"]).expanduser()
        path = path if path.is_absolute() else csv_path.parent / path
        item = Item(row.get("utt_id") or Path(row["path"]).with_suffix("").as_posix(), path,
                    extra={k: v for k, v in row.items() if k not in MANIFEST_COLUMNS})
        if "text" in row:
            item.text, item.text_source = row["text"], GIVEN
        try:
            item.start, item.end = _seconds(row.get("start", "")), _seconds(row.get("end", ""))
        except ValueError:
            item.error = failure_text(BAD_TIMES,
                                      f"line {line}: {row.get('start')!r}-{row.get('end')!r}")
        items.append(item)
    return items


def _seconds(value: str) -> Optional[float]:
    if value == "":
        return None
    if not is_number(value) or float(value) < 0:  # as swrr-extract's manifest reader: finite, >= 0
        raise ValueError(value)
    return float(value)
