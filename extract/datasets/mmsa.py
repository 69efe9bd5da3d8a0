"""The processed layout MMSA (thuiar/MMSA) distributes for CMU-MOSI, CMU-MOSEI, CH-SIMS and
CH-SIMS v2 (root = the folder holding label.csv, or the file itself):

    label.csv                        video_id, clip_id, text, label, label_T, label_A, label_V,
                                     annotation, mode   (label_T/A/V and annotation optional)
    Raw/<video_id>/<clip_id>.mp4     one clip each (a .wav or .flac beside it is used instead)

Sentiment regression; the split is `mode` (train / valid / test). The scale is recorded in the
cache: [-3, 3] for MOSI and MOSEI, [-1, 1] for SIMS and SIMS v2, which also carry unimodal
labels (label_T, label_A, label_V), kept as the label kinds sentiment_text, sentiment_audio and
sentiment_vision. utt_id `<video_id>_<clip_id>`, speaker = video id (ids stay strings).

Decision: the corpus is told by the root's folder names (MOSI, MOSEI, CMU-MOSI, SIMS, SIMSv2,
CH-SIMS, ...: MMSA's own folder names); failing that, labels beyond [-1, 1] mean [-3, 3], and
non-zero unimodal labels (only SIMS has them) mean [-1, 1]; otherwise [-3, 3].

Skipped and counted: "missing clip" (no media file for a row), "label not a number".
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from swrr.extract.video import INSTALL_HINT, VIDEO_SUFFIXES, have_pyav, is_video

from .base import DatasetError, DatasetReader, Utterance, score_kind
from .manifest import SPLITS, check_values, is_number, read_csv_table

LABEL_CSV_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
CLIP_SUFFIXES = (".wav", ".flac") + VIDEO_SUFFIXES  # audio first: no decoding of the video needed
UNIMODAL = {"label_T": "sentiment_text", "label_A": "sentiment_audio", "label_V": "sentiment_vision"}
SCALES = {"mosi": (-3.0, 3.0), "mosei": (-3.0, 3.0), "sims": (-1.0, 1.0)}
CORPUS_FOLDERS = {"mosi": "mosi", "cmu-mosi": "mosi", "cmu_mosi": "mosi", "mosei": "mosei",
                  "cmu-mosei": "mosei", "cmu_mosei": "mosei", "sims": "sims", "simsv2": "sims",
                  "sims2": "sims", "ch-sims": "sims", "ch-simsv2": "sims", "ch-sims2": "sims", "ch_sims": "sims"}
MISSING_CLIP = "missing clip"


def corpus_of(root: Path, table) -> str:
    """"mosi" | "mosei" | "sims": from the folder names of `root`, else from the labels (module Decision)."""
    for part in reversed(root.resolve().parts):
        if part.lower() in CORPUS_FOLDERS:
            return CORPUS_FOLDERS[part.lower()]
    labels = [abs(float(v)) for v in table["label"] if is_number(v)]
    if labels and max(labels) > 1.0:
        return "mosei"
    unimodal = [float(v) for c in UNIMODAL if c in table.columns for v in table[c] if is_number(v)]
    return "sims" if any(unimodal) else "mosei"


def first_file(stem: Path, suffixes: Tuple[str, ...]) -> Optional[Path]:
    """The first existing `<stem><suffix>` (stem keeps any dots of a clip id), else None."""
    return next((p for p in (Path(f"{stem}{s}") for s in suffixes) if p.is_file()), None)


class MmsaReader(DatasetReader):
    name = "mmsa"
    task = "regression"
    label_names = ()
    default_dirname = "MMSA"

    def __init__(self, root):
        super().__init__(root)
        if self.root.is_file() and self.root.suffix == ".csv":
            self.label_csv, self.root = self.root, self.root.parent
        elif (self.root / "label.csv").is_file():
            self.label_csv = self.root / "label.csv"
        else:
            raise DatasetError(f"MMSA root {self.root}: no label.csv in it; expected MMSA's layout label.csv "
                               "(video_id, clip_id, text, label, mode, ...) with Raw/<video_id>/<clip_id>.mp4")
        self.table = read_csv_table(self.label_csv, LABEL_CSV_COLUMNS)
        check_values(self.label_csv, self.table, "mode", set(SPLITS) - {""}, "train, valid, test")
        self.corpus = corpus_of(self.root, self.table)
        self.label_scale = SCALES[self.corpus]
        self.unimodal = [c for c in UNIMODAL if c in self.table.columns] if self.corpus == "sims" else []
        self.label_kinds = {UNIMODAL[c]: score_kind(*self.label_scale) for c in self.unimodal}

    def index_files(self) -> List[Path]:
        return [self.label_csv]

    def _read(self) -> Iterator[Utterance]:
        for row in self.table.to_dict("records"):
            video, clip = row["video_id"].strip(), row["clip_id"].strip()
            media = first_file(self.root / "Raw" / video / clip, CLIP_SUFFIXES)
            if media is None:
                self.skip(MISSING_CLIP)
                continue
            if is_video(media) and not have_pyav():
                raise DatasetError(f"{media}: the clips are video files; {INSTALL_HINT}")
            if not is_number(row["label"]):
                self.skip("label not a number")
                continue
            extras = tuple((UNIMODAL[c], float(row[c]) if is_number(row[c]) else float("nan")) for c in self.unimodal)
            yield Utterance(
                utt_id=f"{video}_{clip}", audio_path=media, transcript=row["text"].strip(),
                label=float(row["label"]), speaker=video, split=SPLITS[row["mode"].strip().lower()],
                extra_labels=extras,
            )
