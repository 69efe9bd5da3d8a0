"""Regenerate the bundled demo dataset (extract/demo_data/) with espeak-ng.

    apt-get install -y espeak-ng
    python scripts/make_demo.py [--out extract/demo_data]

96 clips = 4 classes (neu, hap, ang, sad) x 4 voices (speakers S1F, S1M, S2F, S2M; sessions
S1, S2) x 6 sentences. Words and prosody both depend on the class (happy: high, lively, fast;
angry: loud, fast; sad: low, quiet, slow; neutral: flat), so either modality can learn them.
Clips are trimmed, resampled to 16 kHz mono 16-bit; demo.csv lists them with a split that is
learnable by design: every sentence is spoken by two voices in train, one in valid and one in
test (the voices rotate), so valid/test clips are new recordings of sentences seen in training
(48 train / 24 valid / 24 test). The demo checks the whole pipeline end to end; it says nothing
about generalisation to new words. The output is deterministic for a given espeak-ng version
(1.51 made the committed files).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import tempfile
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
SPEAKERS = (  # (speaker, session, espeak voice, pitch offset)
    ("S1F", "S1", "en-us+f2", 0),
    ("S1M", "S1", "en-gb+m3", -5),
    ("S2F", "S2", "en-gb-x-rp+f4", 5),
    ("S2M", "S2", "en-us+m1", 0),
)
# class -> espeak pitch (0-99), speed (words/min), amplitude (0-200), SSML pitch range
PROSODY = {
    "neu": (45, 170, 100, "x-low"),
    "hap": (72, 200, 120, "x-high"),
    "ang": (50, 220, 190, "high"),
    "sad": (22, 135, 55, "low"),
}
SENTENCES = {
    "neu": ("The meeting is at nine.", "Please close the door.", "The report is on the desk.",
            "The bus comes at noon.", "I read the paper today.", "It is on the second floor."),
    "hap": ("What a wonderful day!", "I love this so much!", "This is great news!",
            "We won the big prize!", "I am so happy today!", "That was really fun!"),
    "ang": ("Stop doing that now!", "This is unacceptable!", "Get out of my way!",
            "I am sick of this!", "You ruined everything!", "Leave me alone!"),
    "sad": ("I miss her so much.", "Nothing matters anymore.", "I feel so alone.",
            "Everything went wrong.", "He is gone forever.", "I lost my friend."),
}
SPLIT_BY_VOICE_TURN = ("train", "train", "valid", "test")  # voice k of sentence j: (k + j) % 4


def synthesise(text: str, voice: str, pitch: int, speed: int, amplitude: int, pitch_range: str) -> np.ndarray:
    """One espeak-ng utterance as float32 mono at 16 kHz, silence trimmed (50 ms kept each side)."""
    ssml = f'<speak><prosody range="{pitch_range}">{text}</prosody></speak>'
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-m", "-z", "-v", voice, "-p", str(pitch), "-s", str(speed),
                        "-a", str(amplitude), "-w", str(wav), ssml], check=True)
        audio, sr = sf.read(wav, dtype="float32")
    audio = librosa.resample(audio, orig_sr=sr, target_sr=SAMPLE_RATE)
    _, (first, stop) = librosa.effects.trim(audio, top_db=40)
    pad = SAMPLE_RATE // 20
    return np.clip(audio[max(0, first - pad): stop + pad], -1.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "extract" / "demo_data")
    args = parser.parse_args()
    (args.out / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for label, (pitch, speed, amplitude, pitch_range) in PROSODY.items():
        for k, (speaker, session, voice, offset) in enumerate(SPEAKERS):
            for j, text in enumerate(SENTENCES[label]):
                utt_id = f"{speaker}_{label}_{j}"
                audio = synthesise(text, voice, pitch + offset, speed, amplitude, pitch_range)
                sf.write(args.out / "wav" / f"{utt_id}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
                rows.append({"utt_id": utt_id, "path": f"wav/{utt_id}.wav", "text": text, "label": label,
                             "speaker": speaker, "session": session, "split": SPLIT_BY_VOICE_TURN[(k + j) % 4],
                             "seconds": f"{len(audio) / SAMPLE_RATE:.2f}"})
    with open(args.out / "demo.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    seconds = [float(r["seconds"]) for r in rows]
    print(f"wrote {len(rows)} clips to {args.out}: {min(seconds):.2f}-{max(seconds):.2f} s, "
          f"{sum(seconds):.1f} s in all")


if __name__ == "__main__":
    main()
