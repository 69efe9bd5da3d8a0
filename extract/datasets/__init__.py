"""Dataset readers, by name. The extraction stage uses only this registry and the reader
interface (name, task, label_names, utterances(), skipped): no per-dataset branches elsewhere.

    reader = get_reader("iemocap")            # root from $SWRR_DATA/IEMOCAP_full_release or data/...
    reader = get_reader("manifest", "my.csv")
    for utt in reader.utterances(): ...
    reader.skipped                             # Counter: reason -> count
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Type, Union

from .base import DatasetError, DatasetReader, Utterance, encoded_extra_labels
from .demo import DemoReader
from .iemocap import IemocapReader
from .manifest import ManifestReader
from .meld import MeldReader
from .mmsa import MmsaReader
from .mosei import MoseiReader
from .msp_podcast import MspPodcastReader

READERS: Dict[str, Type[DatasetReader]] = {
    "iemocap": IemocapReader,
    "mosei": MoseiReader,
    "meld": MeldReader,
    "mmsa": MmsaReader,
    "msp-podcast": MspPodcastReader,
    "manifest": ManifestReader,
    "demo": DemoReader,
}

__all__ = ["READERS", "get_reader", "resolve_root", "DatasetError", "DatasetReader", "Utterance",
           "encoded_extra_labels"]


def reader_class(name: str) -> Type[DatasetReader]:
    if name not in READERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(READERS)}")
    return READERS[name]


def resolve_root(name: str, root: Optional[Union[str, Path]] = None) -> Path:
    """The root folder (or file) of dataset `name`: `root` if given, else the first existing
    candidate ($SWRR_DATA/<dirname>, data/<dirname>, and for demo the bundled copy)."""
    cls = reader_class(name)
    if root is not None:
        path = Path(root).expanduser()
        if not path.exists():
            raise DatasetError(f"--root {path} does not exist (dataset {name})")
        return path
    candidates = cls.candidate_roots()
    for path in candidates:
        if path.exists():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DatasetError(
        f"no {name} data found: looked in {looked}. Pass --root PATH, or set SWRR_DATA to the "
        f"folder that holds {cls.default_dirname}/"
    )


def get_reader(name: str, root: Optional[Union[str, Path]] = None) -> DatasetReader:
    """The reader of dataset `name` built on `root` (resolved as in `resolve_root`)."""
    return reader_class(name)(resolve_root(name, root))
