"""Shared fixtures: wav writers and miniature dataset trees in the real file formats.

    write_wav(path, seconds=0.5, sample_rate=16000, channels=1) -> Path  (also the `wav_writer` fixture)
    iemocap_tree  -> MiniTree(root, expected)  2 sessions of the original release layout
    mosei_raw_tree -> MiniTree  the raw CMU-MOSEI release
    manifest_tree -> MiniTree(root = the manifest.csv path, expected)
    meld_tree, mosi_tree, sims_tree, msp_podcast_tree -> MiniTree  (built in corpora_trees.py)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

import numpy as np
import pytest


def write_wav(path, seconds: float = 0.5, sample_rate: int = 16000, channels: int = 1,
              freq: float = 220.0, amplitude: float = 0.3, subtype: str = "PCM_16") -> Path:
    """A sine-tone audio file (format from the suffix); channel c has frequency freq * (c + 1)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    audio = np.stack([amplitude * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1)
    sf.write(path, audio.astype(np.float32), sample_rate, subtype=subtype)
    return path


@pytest.fixture
def wav_writer():
    return write_wav


@dataclass
class MiniTree:
    root: Path
    expected: Dict = field(default_factory=dict)


# ---------------------------------------------------------------- IEMOCAP
# (utt_id, raw label, start, end, transcript or None = no transcript line, has wav)
IEMOCAP_DIALOGS = {
    ("Session1", "Ses01F_impro01"): [
        ("Ses01F_impro01_F000", "neu", 6.2901, 8.2357, "Excuse me.", True),
        ("Ses01F_impro01_M000", "exc", 8.5, 10.0, "Do you have your forms?", True),
        ("Ses01F_impro01_F001", "hap", 10.01, 11.39, "Yeah.", True),
        ("Ses01F_impro01_M001", "xxx", 12.0, 13.1, "Let me see them.", True),
        ("Ses01F_impro01_F002", "fru", 14.0, 15.2, "Is there a problem?", True),
        ("Ses01F_impro01_M012", "ang", 16.0, 17.5, "Who told you that?", True),  # speaker Ses01M
    ],
    ("Session1", "Ses01M_script01_1"): [
        ("Ses01M_script01_1_F000", "sad", 1.0, 2.5, "I miss him.", True),
        ("Ses01M_script01_1_M000", "neu", 3.0, 4.0, "I know.", False),  # wav missing
        ("Ses01M_script01_1_F001", "ang", 4.2, 5.5, "", True),  # empty transcript is allowed
        ("Ses01M_script01_1_M001", "sur", 6.0, 7.0, "Really?", True),
    ],
    ("Session2", "Ses02F_impro02"): [  # no transcription file at all
        ("Ses02F_impro02_F000", "neu", 1.0, 2.0, "Hello.", True),
        ("Ses02F_impro02_M000", "hap", 2.5, 3.5, "Hi!", True),
    ],
    ("Session2", "Ses02M_impro03"): [
        ("Ses02M_impro03_M000", "sad", 1.0, 2.2, "It is over.", True),
        ("Ses02M_impro03_F000", "exc", 2.5, 3.7, "We did it!", True),
        ("Ses02M_impro03_M001", "neu", 4.0, 5.0, None, True),  # no transcript line
        ("Ses02M_impro03_F001", "fea", 5.5, 6.5, "Watch out.", True),
    ],
}
NO_TRANSCRIPT_FILE = {"Ses02F_impro02"}


def make_iemocap_tree(root: Path) -> MiniTree:
    for (session, dialog), utts in IEMOCAP_DIALOGS.items():
        dialog_dir = root / session / "dialog"
        evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for utt_id, label, start, end, _, _ in utts:
            evaluation += [f"[{start:.4f} - {end:.4f}]\t{utt_id}\t{label}\t[2.5000, 3.0000, 2.5000]",
                           "C-E2:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
        (dialog_dir / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (dialog_dir / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(evaluation) + "\n")
        if dialog not in NO_TRANSCRIPT_FILE:
            lines = [f"{u} [{s:08.4f}-{e:08.4f}]: {t}" for u, _, s, e, t, _ in utts if t is not None]
            lines.insert(1, "M: [BREATHING]")
            lines.append(f"{dialog}_MXX0 [020.0000-021.0000]: [LAUGHTER]")
            (dialog_dir / "transcriptions").mkdir(parents=True, exist_ok=True)
            (dialog_dir / "transcriptions" / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        for utt_id, _, start, end, _, has_wav in utts:
            if has_wav:
                write_wav(root / session / "sentences" / "wav" / dialog / f"{utt_id}.wav", seconds=0.3)
    # stray files found in real copies of the release
    ev1 = root / "Session1" / "dialog" / "EmoEvaluation"
    (ev1 / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    (ev1 / "Categorical").mkdir()
    (ev1 / "Categorical" / "Ses01F_impro01_e2_cat.txt").write_text("Ses01F_impro01_F000 :Neutral state; ()\n")
    (root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01.pk").write_bytes(b"\x80\x04")
    (root / "Session1" / "dialog" / "transcriptions" / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07")
    (root / "Documentation").mkdir()
    expected = {
        "labels": {  # utt_id -> label after merging exc into hap
            "Ses01F_impro01_F000": "neu", "Ses01F_impro01_M000": "hap", "Ses01F_impro01_F001": "hap",
            "Ses01F_impro01_M012": "ang", "Ses01M_script01_1_F000": "sad", "Ses01M_script01_1_F001": "ang",
            "Ses02M_impro03_M000": "sad", "Ses02M_impro03_F000": "hap",
        },
        "skipped": {"label xxx": 1, "label fru": 1, "label sur": 1, "label fea": 1,
                    "missing audio file": 1, "no transcript": 3},
    }
    return MiniTree(root, expected)


@pytest.fixture
def iemocap_tree(tmp_path) -> MiniTree:
    return make_iemocap_tree(tmp_path / "IEMOCAP_full_release")


# ---------------------------------------------------------------- MOSEI
MOSEI_TRAIN, MOSEI_VALID, MOSEI_TEST = "hh04W3xXa5s", "VAXhC2U9-2A", "7l3BNtSE0xc"  # from the standard folds
MOSEI_NO_FOLD = "zzNotInAnyFold"


def write_folds_file(path: Path) -> None:
    """A miniature of the CMU SDK's cmu_mosei_std_folds.py (same variable names and form)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"standard_train_fold=['{MOSEI_TRAIN}', 'otherTrainVideo']\n"
                    f"standard_valid_fold=['{MOSEI_VALID}']\n"
                    f"standard_test_fold=['{MOSEI_TEST}']\n")


def write_label_csd(path: Path, videos: Dict[str, tuple]) -> None:
    """A CMU SDK computational sequence: <name>/data/<video>/{features (n, 7), intervals (n, 2)}."""
    import h5py

    with h5py.File(path, "w") as h5:
        root = h5.create_group("All Labels")
        data = root.create_group("data")
        for video, (intervals, sentiments) in videos.items():
            group = data.create_group(video)
            features = np.zeros((len(sentiments), 7), dtype=np.float64)
            features[:, 0] = sentiments
            features[:, 1:] = 0.5  # the six emotion intensities
            group.create_dataset("features", data=features)
            group.create_dataset("intervals", data=np.asarray(intervals, dtype=np.float64))
        meta = root.create_group("metadata")
        meta.create_dataset("root name", data=np.array(['"All Labels"'], dtype=object), dtype=h5py.special_dtype(vlen=str))


def make_mosei_raw_tree(root: Path) -> MiniTree:
    audio_dir = root / "Raw" / "Audio" / "Full" / "WAV_16000"
    text_dir = root / "Raw" / "Transcript" / "Segmented" / "Combined"
    text_dir.mkdir(parents=True)
    transcripts = {
        MOSEI_TRAIN: [(0, 0.0, 1.5, "this movie was great"), (1, 1.5, 3.2, "i loved the actors"),
                      (2, 3.2, 3.9, "not in the labels")],
        MOSEI_VALID: [(0, 0.0, 2.0, "it was fine i guess")],
        MOSEI_TEST: [(0, 0.25, 1.75, "terrible plot"), (1, 2.0, 3.0, "nan label here")],
        MOSEI_NO_FOLD: [(3, 0.5, 2.5, "video in no fold")],
        "noWavVideo": [(0, 0.0, 1.0, "the audio of this video is missing")],
    }
    labels = {
        MOSEI_TRAIN: ([(0.0, 1.5), (1.52, 3.18), (5.0, 6.0)], [2.0, 1.6667, -1.0]),  # 2nd: 20 ms off; 3rd: no text
        MOSEI_VALID: ([(0.0, 2.0)], [0.0]),
        MOSEI_TEST: ([(0.25, 1.75), (2.0, 3.0)], [-2.3333, float("nan")]),
        MOSEI_NO_FOLD: ([(0.5, 2.5)], [0.3333]),
        "noWavVideo": ([(0.0, 1.0), (1.0, 2.0)], [1.0, 1.0]),
    }
    for video, segments in transcripts.items():
        lines = [f"{video}___{n}___{s}___{e}___{t}" for n, s, e, t in segments]
        (text_dir / f"{video}.txt").write_text("\n".join(lines) + "\n")
        if video != "noWavVideo":
            write_wav(audio_dir / f"{video}.wav", seconds=4.0)
    write_label_csd(root / "CMU_MOSEI_Labels.csd", labels)
    write_folds_file(root / "cmu_mosei_std_folds.py")
    expected = {
        "utts": {  # utt_id -> (label, split, start, end, transcript)
            f"{MOSEI_TRAIN}_0": (2.0, "train", 0.0, 1.5, "this movie was great"),
            f"{MOSEI_TRAIN}_1": (1.6667, "train", 1.52, 3.18, "i loved the actors"),
            f"{MOSEI_VALID}_0": (0.0, "valid", 0.0, 2.0, "it was fine i guess"),
            f"{MOSEI_TEST}_0": (-2.3333, "test", 0.25, 1.75, "terrible plot"),
            f"{MOSEI_NO_FOLD}_3": (0.3333, "", 0.5, 2.5, "video in no fold"),
        },
        "skipped": {"no transcript": 1, "label not a number": 1, "missing audio file": 2},
    }
    return MiniTree(root, expected)


@pytest.fixture
def mosei_raw_tree(tmp_path) -> MiniTree:
    return make_mosei_raw_tree(tmp_path / "CMU-MOSEI")


# ---------------------------------------------------------------- manifest
def make_manifest_tree(root: Path) -> MiniTree:
    write_wav(root / "audio" / "a.wav", seconds=0.5)
    write_wav(root / "audio" / "b.wav", seconds=0.5, sample_rate=8000)
    write_wav(root / "audio" / "long.wav", seconds=3.0)
    rows = [
        "path,text,label,speaker,session,split,start,end,extra",
        "audio/a.wav,hello there,calm,spk1,s1,train,,,x",
        'audio/b.wav,"well, no",angry,spk2,s1,val,,,x',
        "audio/long.wav,,calm,spk1,s2,test,0.5,1.5,x",
        "audio/missing.wav,gone,angry,spk2,s2,,,,x",
    ]
    csv_path = root / "manifest.csv"
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    expected = {
        "ids": ["audio/a", "audio/b", "audio/long"],
        "label_names": ("angry", "calm"),
        "splits": ["train", "valid", "test"],
        "skipped": {"missing audio file": 1},
    }
    return MiniTree(csv_path, expected)


@pytest.fixture
def manifest_tree(tmp_path) -> MiniTree:
    return make_manifest_tree(tmp_path / "my_data")


# ---------------------------------------------------------------- MELD, MMSA, MSP-Podcast (corpora_trees.py)
@pytest.fixture
def meld_tree(tmp_path) -> MiniTree:
    from corpora_trees import make_meld_tree

    root = tmp_path / "MELD.Raw"
    return MiniTree(root, make_meld_tree(root))


@pytest.fixture
def mosi_tree(tmp_path) -> MiniTree:
    from corpora_trees import make_mmsa_tree

    root = tmp_path / "MMSA" / "MOSI"
    return MiniTree(root, make_mmsa_tree(root, "MOSI", write_wav))


@pytest.fixture
def sims_tree(tmp_path) -> MiniTree:
    from corpora_trees import make_mmsa_tree

    root = tmp_path / "MMSA" / "SIMS"
    return MiniTree(root, make_mmsa_tree(root, "SIMS", write_wav))


@pytest.fixture
def msp_podcast_tree(tmp_path) -> MiniTree:
    from corpora_trees import make_msp_podcast_tree

    root = tmp_path / "MSP-Podcast"
    return MiniTree(root, make_msp_podcast_tree(root, write_wav))
