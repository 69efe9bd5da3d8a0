"""Scoring items with a bundle: features through extract's own code path, then the bundle's head.

    predictor = Predictor(load_bundle("runs/demo-split/fold01/model"))
    rows = predictor.predict([Item("clip", Path("clip.wav"), "what was said", "given")])

The features are made exactly as `swrr-extract` made the training cache: the encoders named by
the bundle's recipe (extract.encoders.load_encoders), audio loading, resampling and the cut to
max_frames (extract.audio.load_audio via extract.pipeline.BatchInputs), length-sorted batches
(extract.batching.plan_batches), exact batching and tokenization (extract.encoders), and the
rounding to the cache dtype (extract.pipeline.encode_ahead / PendingBatch). The head then runs
as the trainer's evaluation runs it (fp16 autocast on CUDA, float32 on the CPU).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from swrr.extract.audio import AudioError, check_audio, check_samples, probe_audio
from swrr.extract.batching import AUTO, plan_batches
from swrr.extract.datasets import Utterance
from swrr.extract.encoders import AudioEncoder, EncoderError, TextEncoder, load_audio_encoder, load_encoders, \
    load_text_encoder
from swrr.extract.pipeline import (BatchInputs, LoadFailure, LoadedBatch, decoding_loader, encode_ahead, place_encoders,
                              resolve_batch_seconds)
from swrr.predict.inputs import Item, PredictError, failure_text
from swrr import objectives
from swrr.bundle import Bundle
from swrr.device import resolve_device

NO_TEXT = failure_text("no transcript", "give --text, a <name>.txt sidecar, a text column in the manifest, or --asr MODEL")
NON_FINITE_FEATURES = "non-finite features (NaN or inf from the encoders: audio far outside [-1, 1]?)"
NON_FINITE_OUTPUT = "non-finite model output (NaN or inf)"
DIGITAL_SILENCE = failure_text("no speech found", "digital silence: every sample is 0")


def load_recipe_encoders(bundle: Bundle, audio_override: Optional[str] = None,
                         text_override: Optional[str] = None) -> Tuple[AudioEncoder, TextEncoder]:
    """The encoders the bundle's recipe names (or local copies of them), checked against it."""
    recipe = bundle.recipe
    tiny = recipe.config.get("encoders") == "tiny"
    try:
        audio, text = (load_encoders("tiny", layer=recipe.layer, max_tokens=recipe.max_tokens) if tiny
                       else (None, None))  # the offline preset is rebuilt in code, not loaded
        if audio_override or not tiny:
            audio = load_audio_encoder(audio_override or recipe.audio_encoder, recipe.layer)
        if text_override or not tiny:
            text = load_text_encoder(text_override or recipe.text_encoder, recipe.layer, recipe.max_tokens)
    except EncoderError as exc:
        raise PredictError(f"the model's recipe needs the encoders {recipe.audio_encoder} (revision "
                           f"{recipe.audio_encoder_revision or '?'}) and {recipe.text_encoder} (revision "
                           f"{recipe.text_encoder_revision or '?'}), and one cannot be loaded: {exc.cause}. Pass "
                           "--audio-encoder PATH / --text-encoder PATH to a local copy of the same model") from None
    for role, encoder, dim, override, option in (("audio", audio, recipe.audio_dim, audio_override, "--audio-encoder"),
                                                 ("text", text, recipe.text_dim, text_override, "--text-encoder")):
        differ = [f"hidden_size {encoder.dim} vs {dim}"] if encoder.dim != dim else []
        if role == "audio" and encoder.sample_rate != recipe.sample_rate:
            differ.append(f"sampling_rate {encoder.sample_rate} vs {recipe.sample_rate}")
        if differ:  # name what was given: the override, or the recipe's own encoder
            given = f"{option} {encoder.name}" if override else f"the recipe's {role} encoder {encoder.name}"
            raise PredictError(f"{given}: its config differs from the model's recipe "
                               f"({', '.join(differ)}); it is not the encoder the model was trained on")
    return audio, text


def _mark_silent(batch: LoadedBatch, failed: Dict[int, str]) -> None:
    """Rows whose waveform is digital silence (every sample 0) get the error a silent long file
    gets from the VAD: no speech, whatever the length (a 2 s silence is not "sad")."""
    for k, (row, length) in enumerate(zip(batch.rows, batch.sample_lengths.tolist())):
        if not bool(batch.input_values[k, :length].any()):
            failed[row] = DIGITAL_SILENCE


class Predictor:
    """A bundle ready to score items: its encoders and head on one device."""

    def __init__(self, bundle: Bundle, device: str = "auto", audio_encoder: Optional[str] = None,
                 text_encoder: Optional[str] = None, batch_seconds: Union[float, str] = AUTO, workers: int = 0):
        self.bundle, self.recipe = bundle, bundle.recipe
        self.device = resolve_device(device)
        self.audio, self.text = load_recipe_encoders(bundle, audio_encoder, text_encoder)
        place_encoders(self.audio, self.text, self.device, self.recipe.dtype)  # as swrr-extract does
        self.model = bundle.model.to(self.device).eval()
        self.max_samples = self.audio.samples_for(self.recipe.max_frames)
        self.batch_seconds, _ = resolve_batch_seconds(batch_seconds, self.device, self.recipe.dtype)
        self.workers = workers

    @property
    def span_seconds(self) -> float:
        """The audio the model sees of one utterance: max_frames of audio (5.1 s for WavLM)."""
        return self.max_samples / self.recipe.sample_rate

    def check(self, item: Item) -> int:
        """Probe `item`'s audio: -> samples it will have at the sample rate (before the cut);
        sets its notes. AudioError for an unusable file."""
        info = probe_audio(item.path)
        samples = check_audio(info, item.start, item.end, self.recipe.sample_rate)
        check_samples(info, item.start, item.end)  # NaN/inf samples in a float file, as swrr-extract checks
        if info.sample_rate != self.recipe.sample_rate:
            item.notes.append(f"resampled from {info.sample_rate} Hz")
        if info.channels > 1:
            item.notes.append(f"{info.channels} channels averaged")
        if samples > self.max_samples:
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
        utts = [Utterance(str(i), items[i].path, items[i].text or "", "", start=items[i].start, end=items[i].end)
                for i in todo]
        failed: Dict[int, str] = {}  # rows whose file failed to decode -> reason
        for rows, out in self._outputs(utts, np.asarray(samples, dtype=np.int64), failed):
            outputs[[todo[r] for r in rows]] = out
            if progress is not None:
                progress.update(len(rows))
        for r, reason in failed.items():
            items[todo[r]].error = reason
            if progress is not None:
                progress.update()
        for i in todo:  # e.g. a bundle whose head turns these features into NaN: never a silent empty row
            if not items[i].error and not np.isfinite(outputs[i]).all():
                items[i].error = NON_FINITE_OUTPUT
        return outputs

    def _outputs(self, utts: List[Utterance], samples: np.ndarray,
                 failed: Dict[int, str]) -> Iterator[Tuple[List[int], np.ndarray]]:
        """(rows, head outputs) per planned batch, in plan order; rows that fail go to `failed`."""
        recipe = self.recipe
        plan = plan_batches(np.minimum(samples, self.max_samples), recipe.sample_rate, self.batch_seconds)
        inputs = BatchInputs(plan.batches, utts, self.audio.feature_extractor, self.text.tokenizer,
                             recipe.sample_rate, self.max_samples, recipe.max_tokens)
        for encoded in encode_ahead(self._loaded(inputs, failed), self.audio, self.text, recipe.dtype):
            finite = np.asarray(encoded.finite, dtype=bool)
            failed.update({row: NON_FINITE_FEATURES for row, ok in zip(encoded.rows, finite)
                           if not ok and row not in failed})
            keep = np.array([row not in failed for row in encoded.rows], dtype=bool)
            if keep.any():  # as swrr-extract, which never stores non-finite rows: the head does not see them
                yield [row for row, ok in zip(encoded.rows, keep) if ok], self._head(encoded)[keep]

    def _loaded(self, inputs: BatchInputs, failed: Dict[int, str]) -> Iterator[LoadedBatch]:
        """The planned batches decoded (by `workers` processes); a batch holding a file that fails
        to decode is retried one row at a time, so only that row becomes an error."""
        workers = min(self.workers, len(inputs) - 1)  # one batch: a worker process would only add its start-up
        for i, batch in enumerate(decoding_loader(inputs, workers, self.device.type == "cuda")):  # in plan order: batch i is inputs.batches[i]
            if not isinstance(batch, LoadFailure):
                _mark_silent(batch, failed)
                yield batch
                continue
            for row in inputs.batches[i]:
                single = BatchInputs([[row]], inputs.utterances, inputs.feature_extractor, inputs.tokenizer,
                                     inputs.sample_rate, inputs.max_samples, inputs.max_tokens)[0]
                if isinstance(single, LoadFailure):
                    failed[row] = failure_text(single.reason, single.detail)
                else:
                    _mark_silent(single, failed)
                    yield single

    @torch.no_grad()
    def _head(self, encoded) -> np.ndarray:
        """Features of one batch (cache dtype, B x F x D) -> outputs (B, C) float32, as the trainer's
        evaluation computes them from cache rows (zero padded to max_frames / max_tokens)."""
        recipe, device = self.recipe, self.device
        audio = torch.from_numpy(encoded.audio)
        text = torch.from_numpy(encoded.text)
        audio = F.pad(audio, (0, 0, 0, recipe.max_frames - audio.shape[1])).to(device)
        text = F.pad(text, (0, 0, 0, recipe.max_tokens - text.shape[1])).to(device)
        lengths = [torch.as_tensor(np.asarray(x), dtype=torch.long) for x in (encoded.audio_len, encoded.text_len)]
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            out = self.model(audio, lengths[0], text, lengths[1])
        return out.float().cpu().numpy()

    def scores(self, outputs: np.ndarray) -> Dict[str, np.ndarray]:
        """Output columns: 'label' and 'prob_<class>' (classification) or 'score' (regression)."""
        if self.bundle.task == "classification":
            probs = torch.softmax(torch.from_numpy(outputs), dim=-1).numpy()
            names = self.bundle.label_names
            labels = np.array([names[k] if np.isfinite(p).all() else "" for k, p in zip(probs.argmax(-1), probs)],
                              dtype=object)
            return {"label": labels, **{f"prob_{name}": probs[:, k] for k, name in enumerate(names)}}
        return {"score": objectives.scores(self.bundle.objective, outputs)}
