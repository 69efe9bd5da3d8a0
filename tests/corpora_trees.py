"""Miniature trees of MELD, MMSA (MOSI / SIMS) and MSP-Podcast in their real layouts, with the
quirks of the releases; conftest.py exposes them as fixtures. mp4 clips are written with PyAV
itself (AAC audio and an MPEG-4 video stream, as the releases' clips carry both).

    write_mp4(path, seconds=0.6, sample_rate=48000, channels=2, video=True) -> Path
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_mp4(path, seconds: float = 0.6, sample_rate: int = 48000, channels: int = 2, video: bool = True,
              freq: float = 220.0) -> Path:
    """A clip with a sine tone in an AAC track (and a tiny MPEG-4 picture track when `video`)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * sample_rate))
    tone = (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / sample_rate)).astype(np.float32)
    samples = np.tile(tone, (channels, 1))
    with av.open(str(path), "w") as out:
        picture = None
        if video:
            picture = out.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        sound = out.add_stream("aac", rate=sample_rate)
        sound.layout = "stereo" if channels == 2 else "mono"
        for start in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp",
                                               layout=sound.layout.name)
            frame.sample_rate, frame.pts = sample_rate, start
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
        if picture is not None:
            for k in range(max(1, int(seconds * 10))):
                image = np.full((32, 32, 3), 8 * k, dtype=np.uint8)
                out.mux(picture.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(picture.encode(None))
    return path


def _write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ---------------------------------------------------------------- MELD
MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
               "Episode", "StartTime", "EndTime"]
# split -> rows (utterance text as stored, speaker, emotion, sentiment, dialogue, utterance, clip: "ok" | None | "bad")
MELD_ROWS = {
    "train": [
        ("also I was the point person on my company\u0092s transition", "Chandler", "neutral", "neutral", 0, 0, "ok"),
        ("You must\u0092ve had your hands full.", "The Interviewer", "neutral", "neutral", 0, 1, "ok"),
        ("That I did. That I did.", "Chandler", "neutral", "neutral", 0, 2, "ok"),
        ("Oh my God, that\u0092s great!", "Monica", "joy", "positive", 1, 0, "ok"),
        ("What?! No way\u0097really?", "Rachel", "surprise", "positive", 1, 1, "ok"),
        ("Get out!", "Ross", "anger", "negative", 1, 2, "ok"),
        ("Well\u0085 I guess so.", "Rachel", "sadness", "negative", 2, 0, "ok"),
    ],
    "valid": [
        ("Oh, God, hi.", "Phoebe", "fear", "negative", 0, 0, "ok"),
        ("Ew, that\u0092s gross.", "Monica", "disgust", "negative", 0, 1, "ok"),
        ("Nothing is on the disk for this one.", "Joey", "neutral", "neutral", 0, 2, None),
    ],
    "test": [
        ("Why do all you\u0092re coffee mugs have numbers on the bottom?", "Mark", "surprise", "negative", 0, 0, "ok"),
        ("Oh. That\u0092s so Monica can keep track.", "Rachel", "anger", "negative", 0, 1, "ok"),
        ("A clip that does not decode.", "Ross", "neutral", "neutral", 0, 2, "bad"),
    ],
}
MELD_FILES = {"train": ("train_sent_emo.csv", "train_splits"),
              "valid": ("dev_sent_emo.csv", "dev/dev_splits_complete"),  # one folder down, as in the split tarballs
              "test": ("test_sent_emo.csv", "output_repeated_splits_test")}


def make_meld_tree(root: Path) -> dict:
    sr = 1
    for split, rows in MELD_ROWS.items():
        csv_name, clip_dir = MELD_FILES[split]
        table = []
        for text, speaker, emotion, sentiment, dia, utt, clip in rows:
            emotion = emotion.capitalize() if sr == 2 else emotion  # read case-insensitively
            table.append([sr, text, speaker, emotion, sentiment, dia, utt, 8, 21, "00:16:16,059", "00:16:21,731"])
            sr += 1
            path = root / clip_dir / f"dia{dia}_utt{utt}.mp4"
            if clip == "ok":
                write_mp4(path, seconds=0.4)
            elif clip == "bad":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)  # a header and no streams
        _write_csv(root / csv_name, MELD_HEADER, table)
    (root / "train_splits" / "._dia0_utt0.mp4").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    write_mp4(root / "output_repeated_splits_test" / "final_videos_testdia0_utt0.mp4", seconds=0.2)  # not in the CSV
    return {
        "per_split": {"train": 7, "valid": 2, "test": 3},
        "per_class": {"neutral": 4, "joy": 1, "surprise": 2, "anger": 2, "sadness": 1, "disgust": 1, "fear": 1},
        "per_speaker": {"Chandler": 2, "The Interviewer": 1, "Monica": 2, "Rachel": 3, "Ross": 2, "Phoebe": 1,
                        "Mark": 1},
        "sentiment": {"train_dia1_utt0": "positive", "valid_dia0_utt1": "negative", "train_dia0_utt0": "neutral"},
        "texts": {"train_dia0_utt0": "also I was the point person on my company\u2019s transition",
                  "train_dia1_utt1": "What?! No way\u2014really?", "train_dia2_utt0": "Well\u2026 I guess so."},
        "skipped": {"missing clip": 1},
        "missing": ["valid/dia0_utt2"],
        "unreadable": "test_dia0_utt2",
    }


# ---------------------------------------------------------------- MMSA
MMSA_HEADER = ["video_id", "clip_id", "text", "label", "label_T", "label_A", "label_V", "annotation", "mode"]


def make_mmsa_tree(root: Path, corpus: str, write_wav) -> dict:
    """corpus "MOSI": [-3, 3], unimodal columns 0 as MMSA writes them; "SIMS": [-1, 1] with unimodal labels."""
    if corpus == "MOSI":
        rows = [("03bSnISJMiM", "1", "a lot of sad parts", "-2.4", "train", "mp4"),
                ("03bSnISJMiM", "10", "but it was good", "1.8", "train", "mp4"),
                ("0h-zjBukYpk", "2", "i love it", "3.0", "valid", "wav"),
                ("1DmNV9C1hbY", "3", "it was boring", "-0.6", "test", "mp4"),
                ("1DmNV9C1hbY", "4", "no clip for this one", "0.0", "test", None)]
        unimodal = lambda label: ("0.0", "0.0", "0.0")  # noqa: E731 - MMSA's MOSI label.csv carries zeros here
    else:
        rows = [("video_0001", "0001", "\u6211\u5f88\u9ad8\u5174", "0.8", "train", "mp4"),
                ("video_0001", "0002", "\u8fd8\u884c\u5427", "0.2", "train", "mp4"),
                ("video_0002", "0001", "\u592a\u7cdf\u7cd5\u4e86", "-1.0", "valid", "mp4"),
                ("video_0003", "0001", "\u4e00\u822c", "-0.2", "test", "mp4")]
        unimodal = lambda label: (str(float(label) / 2), "-0.4", "NaN" if label == "-0.2" else "1.0")  # noqa: E731
    table, expected = [], {}
    for video, clip, text, label, mode, media in rows:
        table.append([video, clip, text, label, *unimodal(label), "Negative" if float(label) < 0 else "Positive",
                      mode])
        if media == "mp4":
            write_mp4(root / "Raw" / video / f"{clip}.mp4", seconds=0.4)
        elif media == "wav":
            write_wav(root / "Raw" / video / f"{clip}.wav", seconds=0.4)
            write_mp4(root / "Raw" / video / f"{clip}.mp4", seconds=0.4)  # the audio file wins
        if media:
            expected[f"{video}_{clip}"] = (float(label), {"train": "train", "valid": "valid", "test": "test"}[mode])
    _write_csv(root / "label.csv", MMSA_HEADER, table)
    return {"utts": expected, "skipped": {"missing clip": 1} if corpus == "MOSI" else {}}


# ---------------------------------------------------------------- MSP-Podcast
MSP_HEADER = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
MSP_ROWS = [  # file number, class, act, val, dom, speaker, gender, split, has wav, has transcript
    ("0001_0008", "N", "4.2", "4.0", "4.4", "127", "Female", "Train", True, True),
    ("0001_0019", "H", "5.0", "6.2", "4.6", "127", "Female", "Train", True, True),
    ("0002_0033", "A", "6.4", "1.8", "5.8", "861", "Male", "Train", True, True),
    ("0002_0034", "O", "3.0", "3.2", "3.0", "861", "Male", "Train", True, True),
    ("0003_0001", "S", "2.2", "2.0", "2.6", "Unknown", "Unknown", "Development", True, True),
    ("0003_0002", "X", "4.0", "4.0", "4.0", "Unknown", "Unknown", "Development", True, True),
    ("0004_0010", "U", "5.6", "4.8", "4.2", "2", "Female", "Test1", True, True),
    ("0004_0011", "C", "4.4", "2.6", "5.2", "2", "Female", "Test1", False, True),
    ("0005_0001", "D", "4.6", "2.4", "4.8", "19", "Male", "Test2", True, True),
    ("0005_0002", "F", "5.4", "2.8", "3.0", "19", "Male", "Test2", True, False),
    ("0006_0001", "", "", "", "", "Unknown", "Unknown", "Test3", True, True),
    ("0006_0002", "", "", "", "", "Unknown", "Unknown", "Test3", True, True),
]


def make_msp_podcast_tree(root: Path, write_wav) -> dict:
    table = []
    for number, cls, act, val, dom, speaker, gender, split, has_wav, has_text in MSP_ROWS:
        name = f"MSP-PODCAST_{number}"
        table.append([f"{name}.wav", cls, act, val, dom, speaker, gender, split])
        if has_wav:
            write_wav(root / "Audios" / f"{name}.wav", seconds=0.3)
        if has_text:
            (root / "Transcripts").mkdir(parents=True, exist_ok=True)
            (root / "Transcripts" / f"{name}.txt").write_text(f"words of {number}\n", encoding="utf-8")
    _write_csv(root / "Labels" / "labels_consensus.csv", MSP_HEADER, table)
    return {
        "labels": {"MSP-PODCAST_0001_0008": "N", "MSP-PODCAST_0001_0019": "H", "MSP-PODCAST_0002_0033": "A",
                   "MSP-PODCAST_0003_0001": "S", "MSP-PODCAST_0004_0010": "U", "MSP-PODCAST_0005_0001": "D"},
        "optional": {"MSP-PODCAST_0002_0034": "O", "MSP-PODCAST_0003_0002": "X"},
        "splits": {"train": 3, "valid": 1, "test": 1, "test2": 1},
        "speakers": {"127": 2, "861": 1, "Unknown": 1, "2": 1, "19": 1},
        "dims": {"MSP-PODCAST_0002_0033": (6.4, 1.8, 5.8)},  # arousal, valence, dominance
        "skipped": {"labels hidden": 2, "missing audio file": 1, "no transcript": 1},
    }
