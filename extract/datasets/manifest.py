"""Any dataset, described by a CSV manifest (UTF-8, one row per utterance).

Required columns: path, text, label. Optional: speaker, session, split, start, end, utt_id
(other columns are ignored). Relative paths are resolved against the CSV's folder. The root
is the CSV file itself or a folder holding `manifest.csv`.

- label: when every label reads as a number the task is regression (scores kept as floats);
  otherwise classification, with label_names = the sorted distinct labels. Write class ids
  as names ("c0", "c1", ...) if they must not be taken for scores.
- split: train | valid | test | empty (val, validation, dev are read as valid).
- start/end: seconds into the file (empty = whole file).
- utt_id: defaults to the path as written, without its extension; must be unique.
- text may be empty. A row whose audio file does not exist is skipped and counted
  ("missing audio file"); every other problem is a DatasetError naming the file, the lines
  and the fix.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from .base import DatasetError, DatasetReader, Utterance

REQUIRED_COLUMNS = ("path", "text", "label")
COLUMNS = REQUIRED_COLUMNS + ("speaker", "session", "split", "start", "end", "utt_id")
SPLITS = {"train": "train", "test": "test", "": "",  # split as written (lower case) -> split stored
          "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid"}


def read_csv_text(path: Path) -> str:
    """The text of a UTF-8 CSV (a BOM is allowed); DatasetError naming the first bad line otherwise."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: line {line} is not valid UTF-8 ({err.reason} at byte {err.start}); "
            "save the file as UTF-8"
        ) from None


def read_csv_table(path: Path, required=()):
    """A CSV as a pandas DataFrame of strings (no NA conversion, header names stripped)."""
    import pandas as pd

    text = read_csv_text(path)
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"{path}: {_parser_message(str(err))}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(table.columns)}; required: {', '.join(required)})"
        )
    if len(table) == 0:
        raise DatasetError(f"{path}: the CSV has a header but no rows")
    return table


def check_values(path: Path, table, column: str, allowed, expected: str, normalise=str.lower) -> None:
    """DatasetError naming the file when `column` holds values (stripped, normalised) outside `allowed`."""
    values = {normalise(v.strip()) for v in table[column]}
    unknown = sorted(values - set(allowed) - {""})
    if unknown:
        raise DatasetError(f"{path}: unknown {column} value(s) {unknown}; expected {expected}")


def _parser_message(message: str) -> str:
    """pandas' parser error as one line naming the CSV line (its message spans lines)."""
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if ragged:
        expected, line, saw = ragged.groups()
        return (f"line {line} has {saw} fields but the header has {expected}; "
                "quote fields that contain commas (\"well, no\")")
    return "not a readable CSV file (" + " ".join(message.split()) + ")"


def _lines(rows: List[int]) -> str:
    """CSV line numbers (header = line 1) of data rows, at most 5 shown."""
    shown = ", ".join(str(r + 2) for r in rows[:5])
    return shown + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def check_unique_ids(csv_path, ids: Sequence[str], has_utt_ids: bool) -> None:
    """DatasetError naming the repeated utterance ids of a manifest (swrr-extract and swrr-predict
    follow this one rule: a manifest's rows are told apart by their ids)."""
    seen, duplicates = set(), []
    for utt_id in ids:
        if utt_id in seen and utt_id not in duplicates:
            duplicates.append(utt_id)
        seen.add(utt_id)
    if duplicates:
        fix = "make the utt_id values unique" if has_utt_ids else "add a unique utt_id column"
        raise DatasetError(f"{csv_path}: duplicate utterance ids {', '.join(duplicates[:5])}; {fix}")


def is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


MISSING_NUMBER = {"na", "n/a", "nan", "null", "none", "inf", "-inf", "+inf", "infinity", "-infinity"}


def is_missing_number(text: str) -> bool:
    """NaN, NA, inf and the like: what a spreadsheet writes for a score it does not have."""
    return text.strip().lower() in MISSING_NUMBER


def _seconds(value: str, column: str, row: int, path: Path) -> Optional[float]:
    if value.strip() == "":
        return None
    if not is_number(value) or float(value) < 0:
        raise DatasetError(f"{path}: line {row + 2}: {column}={value!r} is not a time in seconds (>= 0)")
    return float(value)


class ManifestReader(DatasetReader):
    name = "manifest"
    default_dirname = "manifest"
    manifest_filename = "manifest.csv"  # looked for when the root is a folder

    def __init__(self, root):
        super().__init__(root)
        self.csv_path = self.root / self.manifest_filename if self.root.is_dir() else self.root
        if not self.csv_path.is_file():
            raise DatasetError(
                f"{self.csv_path}: manifest not found; pass the CSV file (or a folder holding "
                f"{self.manifest_filename}) with columns {', '.join(REQUIRED_COLUMNS)}"
            )
        table = read_csv_table(self.csv_path, REQUIRED_COLUMNS)
        self.has_utt_ids = "utt_id" in table.columns
        columns = {c: [v.strip() for v in table[c]] if c in table.columns else [""] * len(table) for c in COLUMNS}
        self._check_not_empty(columns, "path")
        self._check_not_empty(columns, "label")
        self._set_task(columns["label"])
        self.records = self._build(columns)

    def index_files(self) -> List[Path]:
        return [self.csv_path]

    def _check_not_empty(self, columns, name: str) -> None:
        empty = [i for i, v in enumerate(columns[name]) if v == ""]
        if empty:
            raise DatasetError(f"{self.csv_path}: empty {name} on line(s) {_lines(empty)}")

    def _set_task(self, labels: List[str]) -> None:
        numbers = [is_number(v) for v in labels]
        missing = [i for i, v in enumerate(labels) if is_missing_number(v)]
        if missing and any(numbers) and all(n or is_missing_number(v) for n, v in zip(numbers, labels)):
            # scores with a few NaN/inf would silently become classes "0.5", "nan", ...
            raise DatasetError(f"{self.csv_path}: label {labels[missing[0]]!r} on line(s) {_lines(missing)} is "
                               "not a finite score, in a regression manifest (every other label is a number); "
                               "fix or remove those rows")
        if all(numbers):
            self.task, self.label_names = "regression", ()
        else:
            self.task, self.label_names = "classification", tuple(sorted(set(labels)))

    def _build(self, columns) -> List[Utterance]:
        n = len(columns["path"])
        splits = [v.lower() for v in columns["split"]]
        bad_splits = [i for i in range(n) if splits[i] not in SPLITS]
        if bad_splits:
            raise DatasetError(
                f"{self.csv_path}: unknown split on line(s) {_lines(bad_splits)} "
                f"(e.g. {columns['split'][bad_splits[0]]!r}); use train, valid, test or leave it empty"
            )
        ids = [columns["utt_id"][i] or Path(columns["path"][i]).with_suffix("").as_posix() for i in range(n)]
        check_unique_ids(self.csv_path, ids, self.has_utt_ids)
        records = []
        for i in range(n):
            start = _seconds(columns["start"][i], "start", i, self.csv_path)
            end = _seconds(columns["end"][i], "end", i, self.csv_path)
            if start is not None and end is not None and end <= start:
                raise DatasetError(f"{self.csv_path}: line {i + 2}: end {end} is not after start {start}")
            path = Path(columns["path"][i]).expanduser()
            label = columns["label"][i]
            records.append(Utterance(
                utt_id=ids[i],
                audio_path=path if path.is_absolute() else self.csv_path.parent / path,
                transcript=columns["text"][i],
                label=float(label) if self.task == "regression" else label,
                speaker=columns["speaker"][i],
                session=columns["session"][i],
                split=SPLITS[splits[i]],
                start=start,
                end=end,
            ))
        return records

    def _read(self) -> Iterator[Utterance]:
        for utt in self.records:
            if not utt.audio_path.is_file():
                self.skip("missing audio file")
                continue
            yield utt
