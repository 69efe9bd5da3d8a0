"""IEMOCAP, read from the original release tree (IEMOCAP_full_release).

    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt   [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[V, A, D]
    Session{1..5}/dialog/transcriptions/<dialog>.txt  Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
    Session{1..5}/sentences/wav/<dialog>/<utt>.wav

Four classes, hap and exc merged into hap (the usual 5,531-utterance setup). The [V, A, D]
triple of every evaluation line (the evaluators' mean valence, activation (arousal) and
dominance, 1-5 scale) is kept beside the category as the label kinds valence, arousal,
dominance. Skipped and
counted: other labels ("label fru", ...), an evaluated utterance without a wav ("missing
audio file") or without a transcript line ("no transcript"; a dialog without a transcription
file counts all its utterances). The release has no train/test split: split is "".
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from .base import DatasetError, DatasetReader, Utterance, score_kind

LABEL_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
DIMENSIONS = ("valence", "arousal", "dominance")  # the order of the line's [V, A, D]
MISSING_VAD = (float("nan"),) * 3  # a line without its triple (none in the release): NaN, "not rated"

# "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.0000, 2.5000]"; other lines are headers.
_EVAL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)"
                        r"(?:\s+\[\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\])?")
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me." ; "M: [BREATHING]" and the like do not match.
_TRANSCRIPT_LINE = re.compile(r"^(Ses\S+)\s+\[[^\]]*\]:\s?(.*)$")
_SESSION_DIR = re.compile(r"^Session\d+$")


def speaker_of(utt_id: str) -> str:
    """Ses01F_impro01_M012 -> Ses01M: the session plus the gender letter of the last `_` part."""
    return utt_id[:5] + utt_id.rsplit("_", 1)[-1][0]


def _visible_txt(folder: Path) -> List[Path]:
    """*.txt files of a folder, leaving out macOS '._' and hidden files."""
    return sorted(p for p in folder.glob("*.txt") if not p.name.startswith("."))


def read_evaluation(path: Path) -> List[Tuple[str, str, Optional[Tuple[float, float, float]]]]:
    """(utt_id, label, (valence, arousal, dominance) or None when the line lacks them) of one
    EmoEvaluation file, in file order."""
    entries = []
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        match = _EVAL_LINE.match(line)
        if match:
            vad = tuple(float(v) for v in match.group(3, 4, 5)) if match.group(3) else None
            entries.append((match.group(1), match.group(2), vad))
    return entries


def read_transcriptions(path: Path) -> Dict[str, str]:
    """utt_id -> transcript of one transcription file."""
    texts = {}
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        match = _TRANSCRIPT_LINE.match(line.strip())
        if match:
            texts[match.group(1)] = match.group(2).strip()
    return texts


class IemocapReader(DatasetReader):
    name = "iemocap"
    task = "classification"
    label_names = ("neu", "hap", "ang", "sad")
    default_dirname = "IEMOCAP_full_release"
    label_kinds = {kind: score_kind(1, 5) for kind in DIMENSIONS}

    def __init__(self, root):
        super().__init__(root)
        if not self.root.is_dir():
            raise DatasetError(f"IEMOCAP root {self.root} is not a folder")
        self.sessions = sorted(p for p in self.root.glob("Session*") if p.is_dir() and _SESSION_DIR.match(p.name))
        if not self.sessions:
            hint = ""
            if _SESSION_DIR.match(self.root.name):
                hint = f" (it looks like one session: pass its parent {self.root.parent})"
            raise DatasetError(
                f"IEMOCAP root {self.root} holds no Session1..Session5 folders{hint}; expected the "
                "original release layout Session*/dialog/EmoEvaluation/*.txt, "
                "Session*/dialog/transcriptions/*.txt, Session*/sentences/wav/<dialog>/<utt>.wav"
            )
        self.evaluation_files = [f for s in self.sessions for f in _visible_txt(s / "dialog" / "EmoEvaluation")]
        if not self.evaluation_files:
            raise DatasetError(
                f"IEMOCAP root {self.root}: no label files found in "
                f"{', '.join(str(s / 'dialog' / 'EmoEvaluation') for s in self.sessions)} (expected *.txt)"
            )

    def index_files(self) -> List[Path]:
        return list(self.evaluation_files)

    def _read(self) -> Iterator[Utterance]:
        for eval_file in self.evaluation_files:
            session_dir = eval_file.parents[2]
            dialog = eval_file.stem
            transcript_file = session_dir / "dialog" / "transcriptions" / f"{dialog}.txt"
            texts = read_transcriptions(transcript_file) if transcript_file.is_file() else {}
            for utt_id, raw_label, vad in sorted(read_evaluation(eval_file)):
                label = LABEL_MAP.get(raw_label)
                if label is None:
                    self.skip(f"label {raw_label}")
                    continue
                wav = session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav"
                if not wav.is_file():
                    self.skip("missing audio file")
                    continue
                if utt_id not in texts:
                    self.skip("no transcript")
                    continue
                yield Utterance(
                    utt_id=utt_id,
                    audio_path=wav,
                    transcript=texts[utt_id],
                    label=label,
                    speaker=speaker_of(utt_id),
                    session=utt_id[:5],
                    extra_labels=tuple(zip(DIMENSIONS, vad or MISSING_VAD)),
                )
