"""The record every dataset reader yields, and the reader interface."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Optional, Tuple, Union


class DatasetError(Exception):
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


class DatasetReader:
    """Base of the readers: one subclass per dataset module.

    A reader is built on a root folder (or file), checks it at once (DatasetError naming
    what is missing), and `utterances()` yields `Utterance` records. Items it leaves out are
    counted in `skipped` (reason -> count) so the extraction summary can report them.
    """

    name: ClassVar[str]
    task: ClassVar[str] = "classification"  # or "regression"
    label_names: ClassVar[Tuple[str, ...]] = ()  # class names, index order used in the cache
    default_dirname: ClassVar[str] = ""  # looked up under $SWRR_DATA/ and data/ when --root is omitted

    def __init__(self, root: Path):
        self.root = Path(root)
        self.skipped: Counter = Counter()

    def utterances(self) -> Iterator[Utterance]:
        raise NotImplementedError

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count
