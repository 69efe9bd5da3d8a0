"""The record every dataset reader yields, and the reader interface."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, List, Optional, Tuple, Union
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

    def __init__(self, root: Path):
        self.root = Path(root)
        self.skipped: Counter = Counter()

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
        yield from self._read()

    def _read(self) -> Iterator[Utterance]:
        raise NotImplementedError

    def index_files(self) -> List[Path]:
        """The files (other than audio) the reader reads: label lists, manifests. `--out` must not be one."""
        return []

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count
