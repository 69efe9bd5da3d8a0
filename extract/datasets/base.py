"""The record every dataset reader yields, and the reader interface."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict, Iterator, List, Optional, Tuple, Union
from swrr.errors import SwrrError


class DatasetError(SwrrError):
    """A dataset tree or manifest that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Utterance:
    """One utterance: where its audio is, what was said, and its label."""

    utt_id: str
    audio_path: Path
    transcript: str
    label: Union[str, float]  # class name (classification) or score (regression)
    speaker: str = ""
    session: str = ""
    split: str = ""  # "train" | "valid" | "test" | "" (none given)
    start: Optional[float] = None  # seconds into audio_path; None = from the beginning
    end: Optional[float] = None  # seconds; None = to the end
    # Further label kinds beside `label`, as (kind, value) pairs: a score (valence 2.5) or a class
    # name (sentiment "positive"); the reader's `label_kinds` says which kinds exist and their scale.
    extra_labels: Tuple[Tuple[str, Union[str, float]], ...] = ()

    @property
    def extras(self) -> Dict[str, Union[str, float]]:
        return dict(self.extra_labels)


def score_kind(low: float, high: float) -> Dict:
    """A label kind that is a score on [low, high] (e.g. arousal on 1-7)."""
    return {"type": "score", "scale": [float(low), float(high)]}


def class_kind(names) -> Dict:
    """A label kind that is one of `names` (stored as the index into them)."""
    return {"type": "classes", "names": list(names)}


def encoded_extra_labels(utt: Utterance, label_kinds: Dict[str, Dict]) -> Dict[str, float]:
    """An utterance's further labels as the cache stores them: kind -> score (NaN when absent) or
    class index (-1 when absent). DatasetError for a class name outside its kind's names."""
    out = {}
    values = utt.extras
    for kind, spec in label_kinds.items():
        value = values.get(kind)
        if spec["type"] == "score":
            out[kind] = float("nan") if value is None else float(value)
        elif value is None:
            out[kind] = -1
        elif value in spec["names"]:
            out[kind] = spec["names"].index(value)
        else:
            raise DatasetError(f"{utt.utt_id}: {kind} {value!r} is not one of {spec['names']}")
    return out


class DatasetReader:
    """Base of the readers: one subclass per dataset module.

    A reader is built on a root folder (or file), checks it at once (DatasetError naming
    what is missing), and `utterances()` yields `Utterance` records. Items it leaves out are
    counted in `skipped` (reason -> count) so the extraction summary can report them.
    Subclasses implement `_read()`; `utterances()` restarts the skip counts on every pass.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "classification"  # or "regression"
    label_names: ClassVar[Tuple[str, ...]] = ()  # class names, index order used in the cache
    default_dirname: ClassVar[str] = ""  # looked up under $SWRR_DATA/ and data/ when --root is omitted
    # Classes the reader yields but leaves out unless `--labels` names them (MSP-Podcast's O, X):
    # the extraction counts them as skips "label X" by default.
    optional_labels: ClassVar[Tuple[str, ...]] = ()
    # The scale of a regression label ([-3, 3] for MOSEI sentiment); None for classes or unknown.
    label_scale: Optional[Tuple[float, float]] = None
    # Further label kinds every utterance carries in `extra_labels`: kind -> score_kind()/class_kind().
    label_kinds: Dict[str, Dict] = {}

    def __init__(self, root: Path):
        self.root = Path(root)
        self.skipped: Counter = Counter()
        self.skipped_items: Dict[str, List[str]] = {}  # reason -> what was skipped, where a reader names it

    @classmethod
    def candidate_roots(cls) -> List[Path]:
        """Where to look when no root is given, in order: $SWRR_DATA/<default_dirname>, data/<...>."""
        roots = []
        if os.environ.get("SWRR_DATA"):
            roots.append(Path(os.environ["SWRR_DATA"]).expanduser() / cls.default_dirname)
        roots.append(Path("data") / cls.default_dirname)
        return roots

    def utterances(self) -> Iterator[Utterance]:
        self.skipped.clear()  # a second pass must not count the same skips twice
        self.skipped_items = {}
        yield from self._read()

    def _read(self) -> Iterator[Utterance]:
        raise NotImplementedError

    def index_files(self) -> List[Path]:
        """The files (other than audio) the reader reads: label lists, manifests. `--out` must not be one."""
        return []

    def skip(self, reason: str, count: int = 1, item: str = "") -> None:
        """Count `count` skips for `reason`; `item` names what was skipped (listed in the summary)."""
        self.skipped[reason] += count
        if item:
            self.skipped_items.setdefault(reason, []).append(item)
