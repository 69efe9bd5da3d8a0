"""MELD (Multimodal EmotionLines Dataset), read from the MELD.Raw release (root = the folder
holding the CSVs):

    train_sent_emo.csv   dev_sent_emo.csv   test_sent_emo.csv
        Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season,
        Episode, StartTime, EndTime
    train_splits/dia{D}_utt{U}.mp4                 (also accepted one folder down: train/train_splits/)
    dev_splits_complete/dia{D}_utt{U}.mp4
    output_repeated_splits_test/dia{D}_utt{U}.mp4

Seven emotions (the primary label) and the three sentiments (a second label kind, "sentiment"),
the official split (train / dev -> valid / test), speaker = the CSV's Speaker. utt_id is
`<split>_dia{D}_utt{U}`: dialogue ids restart in every split. Audio is the clip's audio track,
decoded with PyAV (extract/video.py).

Quirks of the release handled here:
- Transcripts whose punctuation is stored as C1 control characters (U+0092 for ’, U+0097 for —,
  U+0085 for …): Windows-1252 bytes once decoded as Latin-1. They are mapped back to the
  characters they stand for (`repair_c1`).
- Clips missing from the release: counted skips "missing clip", named in the summary.
  Clips that are present but do not decode become the audio check's counted skips
  ("unreadable video file", "video without an audio track").
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, List, Optional

from swrr.extract.video import INSTALL_HINT, have_pyav

from .base import DatasetError, DatasetReader, Utterance, class_kind
from .manifest import check_values, read_csv_table

EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS = ("negative", "neutral", "positive")
COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
# split stored -> (CSV, clip folder, the release's split folder the clip folder may sit in)
SPLIT_FILES = {
    "train": ("train_sent_emo.csv", "train_splits", "train"),
    "valid": ("dev_sent_emo.csv", "dev_splits_complete", "dev"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test", "test"),
}
MISSING_CLIP = "missing clip"
_C1 = re.compile("[\u0080-\u009f]")


def repair_c1(text: str) -> str:
    """Text whose Windows-1252 punctuation was decoded as Latin-1 (U+0080..U+009F) -> the intended
    characters (U+0092 -> ’, U+0097 -> —). The five code points cp1252 leaves undefined are dropped."""
    def fix(match):
        try:
            return match.group(0).encode("latin-1").decode("cp1252")
        except UnicodeDecodeError:
            return ""
    return _C1.sub(fix, text)


def _clip_folder(root: Path, folder: str, split_dir: str) -> Optional[Path]:
    for candidate in (root / folder, root / split_dir / folder):
        if candidate.is_dir():
            return candidate
    return None


class MeldReader(DatasetReader):
    name = "meld"
    task = "classification"
    label_names = EMOTIONS
    default_dirname = "MELD.Raw"
    label_kinds = {"sentiment": class_kind(SENTIMENTS)}

    def __init__(self, root):
        super().__init__(root)
        if not self.root.is_dir():
            raise DatasetError(f"MELD root {self.root} is not a folder")
        self.csv_files = {split: self.root / csv for split, (csv, _, _) in SPLIT_FILES.items()}
        absent = [p.name for p in self.csv_files.values() if not p.is_file()]
        if absent:
            raise DatasetError(f"MELD root {self.root} lacks {', '.join(absent)}; expected the MELD.Raw layout "
                               "(train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv and the clip folders "
                               "train_splits/, dev_splits_complete/, output_repeated_splits_test/)")
        self.clip_dirs = {split: _clip_folder(self.root, folder, split_dir)
                          for split, (_, folder, split_dir) in SPLIT_FILES.items()}
        if not any(self.clip_dirs.values()):
            raise DatasetError(f"MELD root {self.root} holds none of the clip folders "
                               f"{', '.join(folder for _, folder, _ in SPLIT_FILES.values())}")
        if not have_pyav():
            raise DatasetError(f"MELD clips are .mp4 files; {INSTALL_HINT}")
        self.tables = {split: self._table(path) for split, path in self.csv_files.items()}

    def _table(self, path: Path):
        table = read_csv_table(path, COLUMNS)
        for column, known in (("Emotion", EMOTIONS), ("Sentiment", SENTIMENTS)):
            check_values(path, table, column, known, ", ".join(known))
        return table

    def index_files(self) -> List[Path]:
        return list(self.csv_files.values())

    def _read(self) -> Iterator[Utterance]:
        for split, table in self.tables.items():
            clips = self.clip_dirs[split]
            for row in table.itertuples(index=False):
                name = f"dia{row.Dialogue_ID.strip()}_utt{row.Utterance_ID.strip()}"
                clip = clips / f"{name}.mp4" if clips is not None else None
                if clip is None or not clip.is_file():
                    self.skip(MISSING_CLIP, item=f"{split}/{name}")
                    continue
                yield Utterance(
                    utt_id=f"{split}_{name}", audio_path=clip, transcript=repair_c1(row.Utterance).strip(),
                    label=row.Emotion.strip().lower(), speaker=row.Speaker.strip(), split=split,
                    extra_labels=(("sentiment", row.Sentiment.strip().lower()),),
                )
