"""MSP-Podcast (root = the release folder):

    Labels/labels_consensus.csv   FileName, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set
    Audios/<FileName>             MSP-PODCAST_0001_0008.wav (16 kHz)
    Transcripts/<stem>.txt        one transcript per file, where the release has them

Eight categories (the primary label), as the release codes them: A (angry), S (sad), H (happy),
U (surprise), F (fear), D (disgust), C (contempt), N (neutral). O (other) and X (no agreement)
are counted skips "label O" / "label X" unless `--labels` names them. Arousal, valence and
dominance (EmoAct, EmoVal, EmoDom, on the 1-7 scale) are stored beside the category as the label
kinds arousal, valence, dominance. speaker = SpkrID (the release writes "Unknown" where it has
none), session empty.

Splits: Train -> train, Development -> valid, Test1 -> test, Test2 -> test2, Test3 -> test3.
Decision: Test1 is the test set of the usual protocol (and of the trainer's split protocol);
Test2 is kept as its own split for a second test figure. Test3's labels are hidden: rows
without an EmoClass ("labels hidden", counted) are kept out of the cache, so of training and scoring.

Skipped and counted: "labels hidden", "missing audio file", "no transcript" (a file without its
transcript: a text-and-audio model must not get an empty text). A dimension that is not a
finite number is stored as NaN (not rated).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List

from .base import DatasetError, DatasetReader, Utterance, score_kind
from .manifest import check_values, is_number, read_csv_table

LABELS_FILE = Path("Labels") / "labels_consensus.csv"
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Split_Set")
CATEGORIES = ("A", "S", "H", "U", "F", "D", "C", "N")
OPTIONAL = ("O", "X")
SPLITS = {"train": "train", "development": "valid", "test1": "test", "test2": "test2", "test3": "test3"}
DIMENSIONS = {"arousal": "EmoAct", "valence": "EmoVal", "dominance": "EmoDom"}
HIDDEN = "labels hidden"
NAN = float("nan")  # a dimension the row lacks: "not rated" (the trainer leaves such rows out of that target)


class MspPodcastReader(DatasetReader):
    name = "msp-podcast"
    task = "classification"
    label_names = CATEGORIES
    optional_labels = OPTIONAL
    default_dirname = "MSP-Podcast"
    label_kinds = {kind: score_kind(1, 7) for kind in DIMENSIONS}

    def __init__(self, root):
        super().__init__(root)
        if not self.root.is_dir():
            raise DatasetError(f"MSP-Podcast root {self.root} is not a folder")
        self.labels_file = self.root / LABELS_FILE
        if not self.labels_file.is_file() or not (self.root / "Audios").is_dir():
            raise DatasetError(f"MSP-Podcast root {self.root}: expected {LABELS_FILE} and Audios/<FileName>.wav "
                               "(and Transcripts/<name>.txt)")
        self.transcripts = self.root / "Transcripts"
        if not self.transcripts.is_dir():
            raise DatasetError(f"MSP-Podcast root {self.root} has no Transcripts/ folder: this release carries no "
                               "transcripts, and every row would be skipped for lack of text")
        self.table = read_csv_table(self.labels_file, COLUMNS)
        check_values(self.labels_file, self.table, "Split_Set", SPLITS, "Train, Development, Test1, Test2, Test3")
        check_values(self.labels_file, self.table, "EmoClass", CATEGORIES + OPTIONAL, ", ".join(CATEGORIES + OPTIONAL),
                     normalise=str)

    def index_files(self) -> List[Path]:
        return [self.labels_file]

    def _read(self) -> Iterator[Utterance]:
        for row in self.table.to_dict("records"):
            row = {k: v.strip() for k, v in row.items()}
            dims = [row[column] for column in DIMENSIONS.values()]
            if not row["EmoClass"]:
                self.skip(HIDDEN)
                continue
            audio = self.root / "Audios" / row["FileName"]
            if not audio.is_file():
                self.skip("missing audio file")
                continue
            transcript = self.transcripts / f"{Path(row['FileName']).stem}.txt"
            if not transcript.is_file():
                self.skip("no transcript")
                continue
            yield Utterance(
                utt_id=Path(row["FileName"]).stem, audio_path=audio,
                transcript=" ".join(transcript.read_text(encoding="utf-8-sig", errors="replace").split()),
                label=row["EmoClass"], speaker=row["SpkrID"], split=SPLITS[row["Split_Set"].lower()],
                extra_labels=tuple((kind, float(v) if is_number(v) else NAN) for kind, v in zip(DIMENSIONS, dims)),
            )
