"""CMU-MOSEI sentiment segments (regression, label in [-3, 3]), from the raw release (root = the folder holding Raw/ and CMU_MOSEI_Labels.csd):

    Raw/Audio/Full/WAV_16000/<video>.wav             one 16 kHz wav per video
    Raw/Transcript/Segmented/Combined/<video>.txt    <video>___<segment>___<start>___<end>___<text>
    CMU_MOSEI_Labels.csd                             (also looked for one or two folders down)

    The .csd is an HDF5 computational sequence: <name>/data/<video>/features (n_seg, 7;
    column 0 = sentiment) and intervals (n_seg, 2; start, end in seconds). A labelled interval
    is joined to the transcript segment with the same start/end (to 1 ms, else the nearest
    within 50 ms). Splits come from the CMU SDK's standard folds file,
    cmu_mosei_std_folds.py, found in the root (or one or two folders down) or in an installed
    mmsdk package; it is parsed as data, never run. Segments of videos in no fold get split "". Utterances are segments of the video wav
    (start/end set), utt_id = <video>_<segment>, speaker = video id.

The label.csv layout MMSA distributes (label.csv + Raw/<video_id>/<clip_id>.mp4) is read by
`--dataset mmsa` (extract/datasets/mmsa.py); a label.csv root given here is refused naming it.

Skipped and counted: "missing audio file", "no transcript", "label not a number",
"duplicate segment".
"""
from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from .base import DatasetError, DatasetReader, Utterance

LABELS_FILENAME = "CMU_MOSEI_Labels.csd"
AUDIO_DIR = Path("Raw/Audio/Full/WAV_16000")
TRANSCRIPT_DIR = Path("Raw/Transcript/Segmented/Combined")
FOLDS_FILENAME = "cmu_mosei_std_folds.py"
FOLD_LISTS = {"standard_train_fold": "train", "standard_valid_fold": "valid", "standard_test_fold": "test"}


def find_folds_file(root: Path) -> Optional[Path]:
    """The CMU SDK's cmu_mosei_std_folds.py: under root, else in an installed mmsdk package."""
    found = _find_near(root, FOLDS_FILENAME)
    if found is None:
        spec = importlib.util.find_spec("mmsdk")  # locates the package without importing it
        if spec is not None and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                found = next(iter(sorted(Path(folder).rglob(FOLDS_FILENAME))), None)
                if found:
                    break
    return found


def standard_folds(path: Path) -> Dict[str, str]:
    """video id -> "train" | "valid" | "test", read from the SDK's folds file as literals (never executed)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the MOSEI folds ({exc})") from exc
    folds = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            split = FOLD_LISTS.get(node.targets[0].id)
            if split:
                try:
                    folds.update({str(video): split for video in ast.literal_eval(node.value)})
                except ValueError as exc:
                    raise DatasetError(f"{path}: {node.targets[0].id} is not a literal list of video ids") from exc
    if set(folds.values()) != set(FOLD_LISTS.values()):
        raise DatasetError(f"{path}: expected the lists {', '.join(FOLD_LISTS)}")
    return folds


def read_label_sequence(path: Path) -> Dict[str, Tuple[List[Tuple[float, float]], List[float]]]:
    """video id -> (intervals, sentiment scores) from a CMU SDK labels .csd (HDF5) file."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            names = list(h5.keys())
            if not names or "data" not in h5[names[0]]:
                raise DatasetError(f"{path}: not a computational sequence (expected <name>/data/<video>/...)")
            out = {}
            for video, group in h5[names[0]]["data"].items():
                if "features" not in group or "intervals" not in group:
                    raise DatasetError(f"{path}: video {video} lacks features or intervals")
                features, intervals = group["features"][()], group["intervals"][()]
                if features.ndim != 2 or intervals.shape != (features.shape[0], 2):
                    raise DatasetError(
                        f"{path}: video {video}: features {features.shape} and intervals "
                        f"{intervals.shape} do not pair up (expected (n, 7) and (n, 2))"
                    )
                out[video] = ([(float(a), float(b)) for a, b in intervals], [float(x) for x in features[:, 0]])
            return out
    except OSError as err:
        raise DatasetError(f"{path}: not a readable HDF5 labels file ({err})") from None


def read_segments(path: Path) -> List[Tuple[str, float, float, str]]:
    """(segment, start, end, text) of one Segmented/Combined transcript file."""
    segments = []
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        parts = line.strip().split("___", 4)
        if len(parts) == 5:
            try:
                segments.append((parts[1], float(parts[2]), float(parts[3]), parts[4].strip()))
            except ValueError:
                continue  # a malformed line: its interval cannot be matched anyway
    return segments


def match_segment(start: float, end: float, segments) -> Optional[Tuple[str, float, float, str]]:
    """The transcript segment with the same interval (1 ms), else the nearest within 50 ms."""
    best, best_gap = None, 0.05
    for seg in segments:
        gap = max(abs(seg[1] - start), abs(seg[2] - end))
        if gap < 1e-3:
            return seg
        if gap <= best_gap:
            best, best_gap = seg, gap
    return best


def _find_near(root: Path, filename: str) -> Optional[Path]:
    """`filename` in root or one or two folders down (first in sorted order)."""
    for pattern in (filename, f"*/{filename}", f"*/*/{filename}"):
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    return None


class MoseiReader(DatasetReader):
    name = "mosei"
    task = "regression"
    label_names = ()
    default_dirname = "CMU-MOSEI"
    label_scale = (-3.0, 3.0)

    def __init__(self, root):
        super().__init__(root)
        label_csv = self.root if self.root.suffix == ".csv" else self.root / "label.csv"
        if label_csv.is_file():
            raise DatasetError(f"{label_csv}: the label.csv layout (MMSA's) is read by --dataset mmsa; "
                               "--dataset mosei reads the raw CMU-MOSEI release")
        if not self.root.is_dir():
            raise DatasetError(f"MOSEI root {self.root} is not a folder")
        labels_file = _find_near(self.root, LABELS_FILENAME)
        if labels_file is None or not (self.root / AUDIO_DIR).is_dir():
            raise DatasetError(
                f"MOSEI root {self.root}: the raw release was not found ({AUDIO_DIR}/<video>.wav, "
                f"{TRANSCRIPT_DIR}/<video>.txt, {LABELS_FILENAME}); for MMSA's label.csv layout use --dataset mmsa"
            )
        self.labels = read_label_sequence(labels_file)
        self.folds_file = find_folds_file(self.root)
        if self.folds_file is None:
            raise DatasetError(
                f"MOSEI root {self.root}: the standard folds file {FOLDS_FILENAME} was not found in it "
                "(nor in an installed mmsdk package); copy it from the CMU-MultimodalSDK "
                "(mmsdk/mmdatasdk/dataset/standard_datasets/CMU_MOSEI/) into the root")

    def _read(self) -> Iterator[Utterance]:
        folds = standard_folds(self.folds_file)
        for video in sorted(self.labels):
            intervals, scores = self.labels[video]
            wav = self.root / AUDIO_DIR / f"{video}.wav"
            transcript = self.root / TRANSCRIPT_DIR / f"{video}.txt"
            if not wav.is_file():
                self.skip("missing audio file", len(scores))
                continue
            if not transcript.is_file():
                self.skip("no transcript", len(scores))
                continue
            segments = read_segments(transcript)
            seen = set()
            for (start, end), score in zip(intervals, scores):
                seg = match_segment(start, end, segments)
                if seg is None:
                    self.skip("no transcript")
                elif not math.isfinite(score):
                    self.skip("label not a number")
                elif seg[0] in seen:
                    self.skip("duplicate segment")
                else:
                    seen.add(seg[0])
                    yield Utterance(
                        utt_id=f"{video}_{seg[0]}", audio_path=wav, transcript=seg[3], label=score,
                        speaker=video, split=folds.get(video, ""), start=start, end=end,
                    )
