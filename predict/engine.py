"""Scoring items with a bundle: features through extract's own featurizer, then the bundle's head.

    predictor = Predictor(load_bundle("runs/demo-split/fold01/model"))
    rows = predictor.predict([Item("clip", Path("clip.wav"), "what was said", "given")])
    rows = predictor.predict([Item("mem", None, "hello", "given", waveform=samples, sampling_rate=44100)])

The features are made exactly as `swrr-extract` made the training cache, by the same
`extract.featurizer.Featurizer` over the encoders named by the bundle's recipe
(extract.encoders.load_encoders): audio loading (a file, or a waveform in memory taking the
file's steps), resampling and the cut to max_frames, length-sorted exact batches, tokenization,
and the rounding to the cache dtype. The head then runs as the trainer's evaluation runs it
(fp16 autocast on CUDA, float32 on the CPU).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from swrr.extract.audio import AudioError, check_samples
from swrr.extract.batching import AUTO
from swrr.extract.encoders import AudioEncoder, EncoderError, TextEncoder, load_audio_encoder, load_encoders, \
    load_text_encoder
from swrr.extract.featurizer import EncodedBatch, Featurizer, resolve_batch_seconds
from swrr.predict.inputs import Item, PredictError, failure_text
from swrr import objectives
from swrr.bundle import Bundle
from swrr.device import resolve_device
from swrr.errors import option

ABSTAIN = "abstain"  # the label of a row whose top probability is under --abstain-below
NO_TEXT = failure_text("no transcript", "give --text, a <name>.txt sidecar, a text column in the manifest, or --asr MODEL")
NON_FINITE_FEATURES = "non-finite features (NaN or inf from the encoders: audio far outside [-1, 1]?)"
NON_FINITE_OUTPUT = "non-finite model output (NaN or inf)"
NO_SPEECH, SILENCE = "no speech found", "digital silence: every sample is 0"  # as the VAD's "no speech found (VAD)"


def load_recipe_encoders(bundle: Bundle, audio_override: Optional[str] = None,
                         text_override: Optional[str] = None) -> Tuple[AudioEncoder, TextEncoder]:
    """The encoders the bundle's recipe names (or local copies of them), checked against it."""
    recipe = bundle.recipe
    tiny = recipe.config.get("encoders") == "tiny"
    audio_layers, text_layers = recipe.stored_layers("audio"), recipe.stored_layers("text")  # what the head reads
    try:
        audio, text = (load_encoders("tiny", layers=audio_layers, max_tokens=recipe.max_tokens,
                                     text_layers=text_layers) if tiny else (None, None))  # the offline preset is rebuilt in code, not loaded
        if audio_override or not tiny:
            audio = load_audio_encoder(audio_override or recipe.audio_encoder, audio_layers)
        if text_override or not tiny:
            text = load_text_encoder(text_override or recipe.text_encoder, text_layers, recipe.max_tokens)
    except EncoderError as exc:
        raise PredictError(f"the model's recipe needs the encoders {recipe.audio_encoder} (revision "
                           f"{recipe.audio_encoder_revision or '?'}) and {recipe.text_encoder} (revision "
                           f"{recipe.text_encoder_revision or '?'}), and one cannot be loaded: {exc.cause}. Pass "
                           "--audio-encoder PATH / --text-encoder PATH to a local copy of the same model") from None
    for role, encoder, dim, override, flag in (("audio", audio, recipe.audio_dim, audio_override, option("audio_encoder")),
                                                 ("text", text, recipe.text_dim, text_override, option("text_encoder"))):
        differ = [f"hidden_size {encoder.dim} vs {dim}"] if encoder.dim != dim else []
        if role == "audio" and encoder.sample_rate != recipe.sample_rate:
            differ.append(f"sampling_rate {encoder.sample_rate} vs {recipe.sample_rate}")
        if differ:  # name what was given: the override, or the recipe's own encoder
            given = f"{flag} {encoder.name}" if override else f"the recipe's {role} encoder {encoder.name}"
            raise PredictError(f"{given}: its config differs from the model's recipe "
                               f"({', '.join(differ)}); it is not the encoder the model was trained on")
    return audio, text


BACKENDS = ("torch", "onnx")


class Predictor:
    """A bundle ready to score items: its featurizer (both encoders) and head on one device."""

    def __init__(self, bundle: Bundle, device: str = "auto", audio_encoder: Optional[str] = None,
                 text_encoder: Optional[str] = None, batch_seconds: Union[float, str] = AUTO, workers: int = 0,
                 backend: str = "torch"):
        if backend not in BACKENDS:  # before any encoder is loaded
            raise PredictError(f"{option('backend')} must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.bundle, self.recipe = bundle, bundle.recipe
        self.backend = backend
        self.device = resolve_device(device)
        recipe = self.recipe
        self.featurizer = Featurizer(*load_recipe_encoders(bundle, audio_encoder, text_encoder), recipe.dtype,
                                     recipe.max_frames, recipe.max_tokens, recipe.sample_rate)
        self.model = bundle.model.to(self.device).eval()
        self.head = self.model  # (audio, audio_len, text, text_len) -> logits
        self.onnx_encoders = False  # True: the encoders run on onnxruntime too
        if backend == "onnx":
            from swrr.predict.onnx import OnnxHead, use_onnx_encoders

            self.head = OnnxHead(bundle, self.device)
            # the encoders too, when the bundle has them as ONNX (swrr-export --onnx-encoders)
            self.onnx_encoders = use_onnx_encoders(bundle, self.featurizer.audio, self.featurizer.text)
        self.featurizer.to(self.device)  # as swrr-extract places them
        self.batch_seconds, _ = resolve_batch_seconds(batch_seconds, self.device, recipe.dtype)
        self.workers = workers

    @property
    def audio(self) -> AudioEncoder:
        return self.featurizer.audio

    @property
    def text(self) -> TextEncoder:
        return self.featurizer.text

    @property
    def span_seconds(self) -> float:
        """The audio the model sees of one utterance: max_frames of audio (5.1 s for WavLM)."""
        return self.featurizer.max_samples / self.recipe.sample_rate

    def check(self, item: Item) -> int:
        """Probe `item`'s audio: -> samples it will have at the sample rate (before the cut);
        sets its notes. AudioError for unusable audio (digital silence included: no speech)."""
        info, samples = self.featurizer.check(item.source)
        if item.path is not None:
            check_samples(info, item.start, item.end)  # NaN/inf samples in a float file, as swrr-extract checks
        if not item.source.load(self.recipe.sample_rate, self.featurizer.max_samples).any():
            raise AudioError(item.path or item.item_id, NO_SPEECH, SILENCE)  # a 2 s silence is not "sad"
        if info.sample_rate != self.recipe.sample_rate:
            item.notes.append(f"resampled from {info.sample_rate} Hz")
        if info.channels > 1:
            item.notes.append(f"{info.channels} channels averaged")
        if samples > self.featurizer.max_samples:
            item.notes.append(f"cut to the first {self.span_seconds:.1f} s")
        return samples

    def predict(self, items: Sequence[Item], progress=None) -> np.ndarray:
        """Model outputs (len(items), num_outputs) float32; rows of items that are or become
        errors (item.error set) are NaN. `progress` (a tqdm-like bar) is advanced per item."""
        outputs = np.full((len(items), self.model.config.num_outputs), np.nan, dtype=np.float32)
        todo, samples = [], []
        for i, item in enumerate(items):
            if not item.error and item.text is None and self.bundle.needs_text:
                item.error = NO_TEXT
            if not item.error:
                try:
                    samples.append(self.check(item))
                    todo.append(i)
                except AudioError as err:
                    item.error = failure_text(err.reason, err.detail)
            if item.error and progress is not None:
                progress.update()
        if not todo:
            return outputs

        def failed(row: int, failure) -> None:  # a file whose header was fine fails to decode: only its row
            items[todo[row]].error = failure.message
            if progress is not None:
                progress.update()

        plan = self.featurizer.plan(samples, self.batch_seconds)
        sources = [items[i].source for i in todo]
        for encoded in self.featurizer.encode(sources, plan.batches, self.workers, on_failure=failed):
            finite = np.asarray(encoded.finite, dtype=bool)
            for row in np.asarray(encoded.rows)[~finite]:  # as swrr-extract, which never stores such rows
                items[todo[row]].error = NON_FINITE_FEATURES
            if finite.any():
                outputs[[todo[r] for r, ok in zip(encoded.rows, finite) if ok]] = self._head(encoded)[finite]
            if progress is not None:
                progress.update(len(encoded.rows))
        for i in todo:  # e.g. a bundle whose head turns these features into NaN: never a silent empty row
            if not items[i].error and not np.isfinite(outputs[i]).all():
                items[i].error = NON_FINITE_OUTPUT
        return outputs

    @torch.no_grad()
    def _head(self, encoded: EncodedBatch) -> np.ndarray:
        """Features of one batch (cache dtype, B x L x F x D: the hidden states the head reads) ->
        outputs (B, C) float32, as the trainer's evaluation computes them from cache rows (zero
        padded to max_frames / max_tokens; the head mixes the L hidden states with its weights)."""
        recipe, device = self.recipe, self.device
        audio = torch.from_numpy(encoded.audio)
        text = torch.from_numpy(encoded.text)
        audio = F.pad(audio, (0, 0, 0, recipe.max_frames - audio.shape[-2])).to(device)
        text = F.pad(text, (0, 0, 0, recipe.max_tokens - text.shape[-2])).to(device)
        lengths = [torch.as_tensor(np.asarray(x), dtype=torch.long) for x in (encoded.audio_len, encoded.text_len)]
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            out = self.head(audio, lengths[0], text, lengths[1])
        return out.float().cpu().numpy()

    def scores(self, outputs: np.ndarray, abstain_below: Optional[float] = None,
               calibrated: bool = True) -> Dict[str, np.ndarray]:
        """Output columns: 'label' and 'prob_<class>' (classification; softmax of logits / the
        bundle's temperature, which is 1 without calibration or `calibrated`=False), 'score'
        (regression) or 'score_<dimension>' (dimensional: valence, arousal, ...). With `abstain_below`
        a row whose top probability is under it is labelled 'abstain' (its probabilities stay)."""
        if self.bundle.task == "classification":
            temperature = self.bundle.temperature if calibrated else 1.0
            probs = torch.softmax(torch.from_numpy(outputs) / temperature, dim=-1).numpy()
            names = self.bundle.label_names
            labels = np.array([names[k] if np.isfinite(p).all() else "" for k, p in zip(probs.argmax(-1), probs)],
                              dtype=object)
            if abstain_below is not None:
                labels[(labels != "") & (probs.max(axis=-1) < abstain_below)] = ABSTAIN
            return {"label": labels, **{f"prob_{name}": probs[:, k] for k, name in enumerate(names)}}
        scores = objectives.scores(self.bundle.objective, outputs)
        if self.bundle.task == "dimensional":
            return {f"score_{name}": scores[:, k] for k, name in enumerate(self.bundle.label_names)}
        return {"score": scores}


def value_columns(columns) -> List[str]:
    """The score columns of a prediction table: prob_<class>, score_<dimension>, or score."""
    columns = list(columns)
    return ([c for c in columns if c.startswith("prob_")] or [c for c in columns if c.startswith("score_")]
            or ["score"])
