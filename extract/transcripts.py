"""`swrr-extract --transcripts asr --asr MODEL`: text features from speech recognition.

Every utterance that passed the audio check is transcribed with the transformers ASR pipeline
swrr-predict uses (predict/asr.py), over its whole audio (not cut to the 5.1 s the audio encoder
keeps); the cache's `transcript` column then holds the ASR text, the one the text encoder saw.
Where the corpus has a human transcript, it is kept as the row's reference and the row's WER and
the corpus WER are computed with jiwer.

Decision: WER is computed after lower-casing, removing punctuation and collapsing spaces on both
sides (the gold transcripts carry punctuation, ASR output may or may not); rows with an empty
reference have no WER (NaN) and stay out of the corpus WER, which is jiwer's over all other rows
(total edits / total reference words, not a mean of row WERs).

Resume: transcripts are appended to `<out>.asr-progress.jsonl` batch by batch (with the model),
so an interrupted extraction transcribes only what is missing when run again; the file is
deleted once the cache is complete.
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence

import numpy as np

from swrr.extract.audio import AudioError, load_audio
from swrr.extract.datasets import Utterance
from swrr.extract.encoders import EncoderError
from swrr.progress import progress_bar

TRANSCRIPT_SOURCES = ("gold", "asr")
ASR_CHUNK = 16  # utterances transcribed (and saved to the progress file) at a time
PROGRESS_SUFFIX = ".asr-progress.jsonl"


class Transcribed(NamedTuple):
    utterances: List[Utterance]  # transcript = the ASR text
    references: List[str]  # the corpus' transcripts ("" where it has none)
    wer: np.ndarray  # (n,) float: per row, NaN without a reference
    corpus_wer: float  # NaN when no row has a reference


def progress_path(out: Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + PROGRESS_SUFFIX)


def _normalise():
    import jiwer

    return jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                          jiwer.ReduceToListOfListOfWords()])


def _words(text: str) -> List[str]:
    return _normalise()(text)[0] if text.strip() else []


def word_error_rates(references: Sequence[str], hypotheses: Sequence[str]):
    """-> ((n,) per-row WER, NaN where the normalised reference is empty; the corpus WER over the rest)."""
    import jiwer

    transform = _normalise()
    scored = [i for i, r in enumerate(references) if _words(r)]
    rows = np.full(len(references), np.nan)
    for i in scored:
        rows[i] = jiwer.wer(references[i], hypotheses[i], reference_transform=transform, hypothesis_transform=transform)
    if not scored:
        return rows, math.nan
    corpus = jiwer.wer([references[i] for i in scored], [hypotheses[i] for i in scored],
                       reference_transform=transform, hypothesis_transform=transform)
    return rows, float(corpus)


def _load_progress(path: Path, model: str) -> Dict[str, str]:
    done = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: that chunk is transcribed again
        if record.get("model") == model:
            done[record["utt_id"]] = record["text"]
    return done


def transcribe(utterances: Sequence[Utterance], model: str, device, sample_rate: int, out: Path,
               show_progress: bool = True) -> Transcribed:
    """ASR transcripts of `utterances` (see the module); EncoderError when the model cannot be loaded."""
    from swrr.predict.asr import Transcriber
    from swrr.predict.inputs import PredictError

    if importlib.util.find_spec("jiwer") is None:
        raise EncoderError("--transcripts asr computes WER with jiwer: pip install 'swrr[asr]' (or pip install jiwer)")
    progress = progress_path(out)
    done = _load_progress(progress, model)
    todo = [u for u in utterances if u.utt_id not in done]
    if todo:
        try:
            transcriber = Transcriber(model, device)
        except PredictError as exc:
            raise EncoderError(str(exc)) from None
        bar = progress_bar(total=len(utterances), initial=len(utterances) - len(todo), unit="utt",
                           desc=f"asr {Path(model).name}", disable=not show_progress, dynamic_ncols=True)
        try:
            with open(progress, "a", encoding="utf-8") as log:
                for start in range(0, len(todo), ASR_CHUNK):
                    chunk = todo[start:start + ASR_CHUNK]
                    waves = [_audio(u, sample_rate) for u in chunk]
                    for utt, text in zip(chunk, transcriber(waves, sample_rate)):
                        done[utt.utt_id] = text
                        log.write(json.dumps({"utt_id": utt.utt_id, "model": model, "text": text}) + "\n")
                    log.flush()
                    bar.update(len(chunk))
        finally:
            bar.close()
    references = [u.transcript for u in utterances]
    hypotheses = [done[u.utt_id] for u in utterances]
    wer, corpus = word_error_rates(references, hypotheses)
    return Transcribed([replace(u, transcript=h) for u, h in zip(utterances, hypotheses)], references, wer, corpus)


def _audio(utt: Utterance, sample_rate: int) -> np.ndarray:
    try:
        return load_audio(utt, sample_rate, max_samples=None)
    except AudioError as exc:  # it passed the audio check: a file changed or broke since
        raise AudioError(exc.path, exc.reason, "while transcribing it; fix the file and rerun") from None
