"""`EmotionRecognizer`: a trained swrr model in Python, loaded once and kept between calls.

    from swrr import EmotionRecognizer
    recognizer = EmotionRecognizer.from_pretrained("runs/demo-all")   # bundle, run folder or hub id
    recognizer.classify_file("clip.wav", text="what was said")        # -> Prediction
    recognizer.classify(waveform, 44100, text="what was said")        # numpy array or tensor
    recognizer.predict(["clips/", "more.csv"], segment="window")      # -> the swrr-predict table

Every call goes through `run_predict` with the recognizer's own `Predictor` (encoders and head
stay on their device), so a `Prediction` is the row `swrr-predict` writes for the same clip and
`predict()` returns exactly the table it writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from swrr.errors import refuse_unknown
from swrr.extract.batching import AUTO, parse_batch_seconds
from swrr.extract.featurizer import default_workers
from swrr.predict.engine import NO_TEXT, Predictor
from swrr.predict.inputs import GIVEN, Item, PredictError
from swrr.predict.runner import PredictConfig, run_predict
from swrr.bundle import load_bundle

# What from_pretrained fixes for every later call (PredictConfig fields that the Predictor holds).
LOADING_OPTIONS = ("model", "fold", "device", "audio_encoder", "text_encoder", "batch_seconds", "workers")
# predict()'s options: swrr-predict's flags with "_" (`text` is the repeatable --text), less the loading ones.
PREDICT_OPTIONS = ("text", *(f.name for f in fields(PredictConfig) if f.name not in (*LOADING_OPTIONS, "inputs", "texts")))
SINGLE_CLIP = {"segment": "none", "progress": False}  # one clip -> one row: its first span, as extraction cuts it


@dataclass
class Prediction:
    """One clip's result; the same values as its row in swrr-predict's table."""

    label: Optional[str]  # the predicted class; None for a regression (sentiment) model
    probs: Optional[Dict[str, float]]  # class -> probability; None for regression
    score: Optional[float]  # the regression output (e.g. sentiment in [-3, 3]); None for classification
    transcript: str  # the text the model read ("" for an audio-only model without text)
    text_source: str  # given | sidecar | asr | ""
    notes: List[str] = field(default_factory=list)  # e.g. "resampled from 44100 Hz", "cut to the first 5.1 s"

    @classmethod
    def from_row(cls, row: Mapping[str, Any], label_names: Sequence[str]) -> "Prediction":
        """The Prediction of one row of swrr-predict's table (`label_names`: the model's classes)."""
        classification = "label" in row
        return cls(label=row["label"] if classification else None,
                   probs={name: float(row[f"prob_{name}"]) for name in label_names} if classification else None,
                   score=None if classification else float(row["score"]),
                   transcript=row["transcript"], text_source=row["text_source"],
                   notes=row["notes"].split("; ") if row["notes"] else [])


class EmotionRecognizer:
    """A model bundle with its encoders, ready on one device; see the module docstring."""

    def __init__(self, predictor: Predictor, source: str):
        self.predictor, self.source = predictor, source

    @classmethod
    def from_pretrained(cls, path_or_hub_id, fold: Optional[int] = None, device: str = "auto", *,
                        audio_encoder: Optional[str] = None, text_encoder: Optional[str] = None,
                        batch_seconds: Union[float, str] = AUTO, workers: Optional[int] = None) -> "EmotionRecognizer":
        """Load a bundle folder, a run folder (`fold`: which fold's model, 1-based, when it has several)
        or a hub id, as `swrr-predict --model` does; the encoders its recipe names (or the local copies
        `audio_encoder` / `text_encoder`) are loaded once. `workers`: audio decoding processes
        (None: as swrr-predict). Raises BundleError / PredictError / DeviceError (all SwrrError)."""
        try:
            batch_seconds = parse_batch_seconds(batch_seconds)
        except ValueError as exc:
            raise PredictError(f"batch_seconds: {exc}") from None
        bundle = load_bundle(path_or_hub_id, fold=fold)
        predictor = Predictor(bundle, device, audio_encoder, text_encoder, batch_seconds,
                              default_workers() if workers is None else workers)
        return cls(predictor, str(path_or_hub_id))

    @property
    def label_names(self) -> List[str]:
        """The classes, in the order of the prob_<class> columns ([] for a regression model)."""
        return list(self.predictor.bundle.label_names) if self.task == "classification" else []

    @property
    def task(self) -> str:
        return self.predictor.bundle.task

    @property
    def device(self):
        return self.predictor.device

    def __repr__(self) -> str:
        what = f"labels={self.label_names}" if self.label_names else f"task={self.task!r}"
        return f"EmotionRecognizer({self.source!r}, {what}, device={str(self.device)!r})"

    def predict(self, inputs: Union[str, Path, Sequence[Union[str, Path]]], **options):
        """The pandas.DataFrame swrr-predict writes for `inputs` (audio files, folders, manifest CSVs)
        and `options` (its flags with "_": text=[...] one per file, segment, hop, aggregate, asr,
        asr_all, out, format, plot, progress). With out=PATH the table is also written there."""
        refuse_unknown(options, PREDICT_OPTIONS, "EmotionRecognizer.predict (model, fold, device, encoders, "
                       "batch_seconds and workers are chosen in from_pretrained)")
        inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        texts = options.pop("text", None)
        texts = [] if texts is None else [texts] if isinstance(texts, str) else list(texts)
        return self._table([str(i) for i in inputs], {**options, "texts": texts})

    def _table(self, inputs: List[str], options: Dict[str, Any], items: Optional[List[Item]] = None):
        """run_predict's table with this recognizer's Predictor (of `items` in memory instead of inputs)."""
        config = PredictConfig(model=self.source, inputs=inputs, **{"out": None, **options}, fold=None,
                               device=str(self.device), batch_seconds=self.predictor.batch_seconds,
                               workers=self.predictor.workers)
        return run_predict(config, self.predictor, items).table

    def classify_file(self, path, text: Optional[str] = None) -> Prediction:
        """The Prediction of one audio file; `text` None: its <name>.txt sidecar, if any. A file longer
        than the model's span (5.1 s) is scored on its first span (use predict() to segment it).
        PredictError (a SwrrError) when the file cannot be scored."""
        table = self.predict([path], text=None if text is None else [text], **SINGLE_CLIP)
        return self._prediction(table, str(path))

    def classify(self, waveform, sampling_rate: int, text: Optional[str] = None) -> Prediction:
        """The Prediction of audio in memory: a numpy array or torch tensor, (samples,) or 2-d
        (channels x samples as torchaudio.load gives it, or samples x channels: the shorter axis is
        the channels); float samples in [-1, 1] or signed integer PCM (scaled as soundfile reads it).
        Channels are averaged and the audio resampled exactly as for a file holding the same samples."""
        item = Item("waveform", None, text, GIVEN if text is not None else "", waveform=waveform,
                    sampling_rate=sampling_rate)
        return self._prediction(self._table([], SINGLE_CLIP, [item]), "waveform")

    def _prediction(self, table, name: str) -> Prediction:
        row = table.iloc[0].to_dict()
        if row["error"]:
            problem = ("no transcript: this model reads text; pass text=... (or put a <name>.txt beside the "
                       "file)" if row["error"] == NO_TEXT else row["error"])
            raise PredictError(f"{name}: {problem}")
        return Prediction.from_row(row, self.label_names)

