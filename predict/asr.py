"""Transcripts from speech recognition (`--asr MODEL`), through transformers' ASR pipeline.

`--asr` transcribes every item without a transcript and every segment of a long file (each
window gets the words spoken in its own audio, not the whole file's text); `--asr-all` transcribes
every item and ignores given text. Rows transcribed here have text_source "asr".
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import List, Sequence

import numpy as np

from swrr.extract.audio import AudioError
from swrr.predict.inputs import ASR, Item, PredictError

ASR_BATCH = 8
ASR_MAX_NEW_TOKENS = 128  # unless the model's generation config sets its own: a 5 s window holds far fewer


class Transcriber:
    """An ASR model (hub id or folder) on a device: waveforms (16 kHz mono) -> texts."""

    def __init__(self, model: str, device):
        from transformers import pipeline

        try:
            self.pipe = pipeline("automatic-speech-recognition", model=model, device=device)
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise PredictError(f"--asr {model}: cannot load this speech recognition model ({reason}); give a "
                               "hub id such as openai/whisper-small (needs internet once) or a local folder") from None

    def __call__(self, waves: Sequence[np.ndarray], sample_rate: int) -> List[str]:
        if not waves:
            return []
        inputs = [{"raw": w, "sampling_rate": sample_rate} for w in waves]  # the pipeline consumes its dicts
        limit = {} if self.pipe.model.generation_config.max_new_tokens else {"max_new_tokens": ASR_MAX_NEW_TOKENS}
        out = self.pipe(inputs, batch_size=ASR_BATCH, generate_kwargs=limit)
        return [o["text"].strip() for o in out]


@lru_cache(maxsize=2)
def _transcriber(model: str, device: str) -> Transcriber:
    """Loaded once per process (the pipeline takes seconds to build): warm calls from Python reuse it."""
    return Transcriber(model, device)


def needs_asr(item: Item, replace_all: bool) -> bool:
    segment = item.file_id != item.item_id
    return not item.error and (replace_all or item.text is None or segment)


def transcribe_items(items: Sequence[Item], model: str, predictor, replace_all: bool = False) -> int:
    """Fill the text of the items that need it; -> how many were transcribed. Unreadable audio is
    left alone (the prediction step makes it an error row with the reason)."""
    targets = [item for item in items if needs_asr(item, replace_all)]
    if not targets:
        return 0
    rate = predictor.recipe.sample_rate
    waves, ready = [], []
    for item in targets:
        try:
            waves.append(item.source.load(rate, max_samples=None))
            ready.append(item)
        except AudioError:
            continue
    for item, text in zip(ready, _transcriber(model, str(predictor.device))(waves, rate)):
        item.text, item.text_source = text, ASR
    return len(ready)


def save_random_whisper(folder) -> Path:
    """Save a randomly initialised Whisper (one small layer each side, a 27-character vocabulary) to
    `folder`, for tests and offline demos of `--asr` (as `--encoders tiny` is for the encoders): it
    runs the real pipeline and writes words that mean nothing."""
    import json

    import torch
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    folder = Path(folder)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz\u0120")}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=end,
                                 bos_token=end, eos_token=end, pad_token=end)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (end, "<|startoftranscript|>", "<|notimestamps|>")}
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_target_positions=448, pad_token_id=ids[end], bos_token_id=ids[end],
                           eos_token_id=ids[end], decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config.no_timestamps_token_id = ids["<|notimestamps|>"]
    model.generation_config.forced_decoder_ids = None
    model.generation_config.max_new_tokens = 8  # random weights rarely say <|endoftext|>: keep it short
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(folder)
    return folder
