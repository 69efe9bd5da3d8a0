"""Evaluation protocols: which cache rows train, validate and test each fold.

- loso-speaker: one fold per speaker (IEMOCAP: 10), that speaker is the test set.
- loso-session: one fold per session (IEMOCAP: 5).
- split: one fold from the cache's own train/valid/test split column (CMU-MOSEI).
- all: one fold that trains on every row and tests nothing: the model to deploy (its bundle),
  trained with the paper's schedule and reported at the last epoch.

With `early_stop_speaker`, a LOSO fold also holds out one training speaker as validation data:
the test speaker's session mate when there is one (for IEMOCAP the dialogue partner, so no
dialogue of the validation speaker is trained on), otherwise the first speaker of the next group.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence

import numpy as np

from swrr.train.config import TrainError

EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class Fold:
    """Row indices (into the cache) of one fold; `number` is 1-based."""

    number: int
    name: str  # the held-out group, e.g. "Ses01F", "Ses01", "split"
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    valid_name: str = ""

    def sizes(self) -> str:
        return f"train {len(self.train)}, valid {len(self.valid)}, test {len(self.test)}"


def default_protocol(task: str, speaker: np.ndarray, split: np.ndarray) -> str:
    """What to use for a cache whose dataset has no preset: its split, else leave-one-speaker-out."""
    if {"train", "test"} <= set(split.tolist()):
        return "split"
    if task != "regression" and len(_groups(speaker)) >= 2:
        return "loso-speaker"
    return "split"  # make_folds then explains what the cache lacks


def make_folds(protocol: str, task: str, speaker: np.ndarray, session: np.ndarray, split: np.ndarray,
               early_stop_speaker: bool = False, cache_name: str = "the cache") -> List[Fold]:
    """All folds of a protocol; raises TrainError when the cache does not fit it."""
    if protocol == "all":
        if early_stop_speaker:
            raise TrainError("--early-stop-speaker holds out data; --protocol all trains on every row")
        return [Fold(1, "all", np.arange(len(split), dtype=np.int64), EMPTY, EMPTY)]
    if protocol == "split":
        if early_stop_speaker:
            raise TrainError("--early-stop-speaker is for the LOSO protocols; the split protocol "
                             "validates on the cache's own 'valid' split")
        return [_split_fold(split, cache_name, lambda: _advice(task, speaker, session, split, protocol))]
    if protocol not in ("loso-speaker", "loso-session"):
        raise TrainError(f"unknown protocol {protocol!r}; choose loso-speaker, loso-session, split or all")
    if task == "regression":
        raise TrainError(f"{protocol} makes no sense for {cache_name}: its task is {task} "
                         "(CMU-MOSEI style); use --protocol split")
    column, what = (speaker, "speaker") if protocol == "loso-speaker" else (session, "session")
    groups = _groups(column)
    if len(groups) < 2:
        raise TrainError(f"{protocol} needs at least two {what}s, but {cache_name} has "
                         f"{len(groups)} (its '{what}' column is {'empty' if not groups else 'one value'}); "
                         f"{_advice(task, speaker, session, split, protocol)}")
    if np.any(column == ""):
        raise TrainError(f"{protocol}: {int(np.sum(column == ''))} rows of {cache_name} have no {what}; "
                         "every row needs one for leave-one-out folds")
    folds = []
    for number, group in enumerate(groups, start=1):
        test = np.flatnonzero(column == group)
        valid, valid_name = EMPTY, ""
        if early_stop_speaker:
            valid_name = _validation_speaker(group, column, speaker, session)
            valid = np.flatnonzero(speaker == valid_name)
        train = np.setdiff1d(np.arange(len(column)), np.concatenate([test, valid]))
        folds.append(Fold(number, group, train, valid, test, valid_name))
    return folds


def rated_folds(folds: Sequence[Fold], rated: np.ndarray) -> List[Fold]:
    """The folds without the rows that have no value for the run's target (`rated` False: an
    unrated dimension, a row without a sentiment class)."""
    if rated.all():
        return list(folds)
    keep = lambda rows: rows[rated[rows]]  # noqa: E731
    return [replace(f, train=keep(f.train), valid=keep(f.valid), test=keep(f.test)) for f in folds]


def pick_folds(folds: Sequence[Fold], wanted: Optional[Sequence[int]]) -> List[Fold]:
    """The folds numbered in `wanted` (1-based), all when None."""
    if not wanted:
        return list(folds)
    bad = sorted(set(wanted) - {f.number for f in folds})
    if bad:
        raise TrainError(f"--folds {','.join(map(str, bad))} out of range: this protocol has "
                         f"folds 1..{len(folds)}")
    return [f for f in folds if f.number in set(wanted)]


def _groups(column: np.ndarray) -> List[str]:
    return sorted(set(column.tolist()) - {""})


def _advice(task: str, speaker: np.ndarray, session: np.ndarray, split: np.ndarray, refused: str) -> str:
    """What to do when `refused` does not fit: the protocols that do, or how to make the cache fit one
    (never a protocol that the cache cannot use either)."""
    fits = {"split": {"train", "test"} <= set(split.tolist())}
    if task != "regression":
        for name, column in (("loso-speaker", speaker), ("loso-session", session)):
            fits[name] = len(_groups(column)) >= 2 and not np.any(column == "")
    usable = [name for name, ok in fits.items() if ok and name != refused]
    if usable:
        return f"use --protocol {' or '.join(usable)}"
    need = "a split column (train/valid/test rows)" + (
        " or a speaker column with at least two speakers" if task != "regression" else "")
    return f"no protocol fits this cache: re-extract it with {need}"


def _split_fold(split: np.ndarray, cache_name: str, advice: Callable[[], str]) -> Fold:
    """The split protocol's one fold; `advice()` (worked out only on a refusal) says what to do instead."""
    found = set(split.tolist())
    missing = [name for name in ("train", "test") if name not in found]
    if missing:
        have = ", ".join(sorted(repr(s) for s in found)) or "none"
        raise TrainError(f"--protocol split needs 'train' and 'test' rows, but {cache_name} has no "
                         f"{' or '.join(missing)} rows (its split values: {have}); {advice()}")
    return Fold(1, "split", np.flatnonzero(split == "train"), np.flatnonzero(split == "valid"),
                np.flatnonzero(split == "test"), "valid" if "valid" in found else "")


def _validation_speaker(test_group: str, column: np.ndarray, speaker: np.ndarray, session: np.ndarray) -> str:
    """The speaker held out for validation in the fold that tests `test_group`."""
    test_rows = column == test_group
    sessions_of_test = set(session[test_rows].tolist()) - {""}
    mates = sorted(set(speaker[np.isin(session, list(sessions_of_test)) & ~test_rows].tolist()) - {""})
    if mates:
        return mates[0]
    others = sorted(set(speaker[~test_rows].tolist()) - {""})
    if not others:
        raise TrainError("--early-stop-speaker: no speaker outside the test group to validate on")
    later = [s for s in others if s > test_group]
    return later[0] if later else others[0]
