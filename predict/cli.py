"""`swrr-predict`: parse options -> PredictConfig -> run_predict -> print the summary."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from swrr.extract.batching import AUTO
from swrr.extract.featurizer import default_workers
from swrr.predict.engine import BACKENDS
from swrr.predict.runner import AGGREGATES, FORMATS, SEGMENT_MODES, PredictConfig, run_predict
from swrr.cli import CONTEXT, OneLineErrors


@click.command("swrr-predict", cls=OneLineErrors, context_settings=CONTEXT)
@click.option("--model", required=True,
              help="A model bundle folder (runs/<name>/fold*/model, or one copied by swrr-export), a run folder "
                   "(with --fold when it has several folds), or a Hugging Face hub id of a bundle.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--fold", type=click.IntRange(min=1), help="Which fold's model of a run folder (1-based).")
@click.option("--text", "texts", multiple=True,
              help="The transcript of an audio file INPUT (repeat once per file, in order). Without it a "
                   "<name>.txt beside the audio is used. Not allowed with folder or manifest inputs.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("predictions.csv"), show_default=True,
              help="The table to write (atomically): name it .csv or .jsonl. It may replace only an earlier "
                   "swrr-predict output, never an input, a file of the model, or another file.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="csv, or jsonl (one JSON object per line). Default: from the --out suffix (.csv or .jsonl); "
                   "a suffix that contradicts it is refused.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-seconds", default=AUTO, show_default=True, metavar="auto|SECONDS",
              help="Padded audio per batch, as in swrr-extract (the numbers do not depend on it).")
@click.option("--segment", type=click.Choice(SEGMENT_MODES), default="vad", show_default=True,
              help="Files longer than the model's audio span (5.1 s): vad = Silero VAD speech regions, cut into "
                   "windows of the span; window = windows over the whole file; none = score the first 5.1 s only "
                   "(as swrr-extract does).")
@click.option("--hop", type=float, help="Seconds between window starts. Default: half the span (2.55 s).")
@click.option("--aggregate", type=click.Choice(AGGREGATES),
              help="mean: also write one row per input file with the mean of its rows' probabilities.")
@click.option("--plot", is_flag=True, help="Write <out>.<file>.png: class probabilities over time per segmented file.")
@click.option("--asr", help="ASR model (hub id or folder, e.g. openai/whisper-small) for utterances without text.")
@click.option("--asr-all", is_flag=True, help="With --asr: transcribe every utterance, ignoring given text.")
@click.option("--audio-encoder", help="A local copy of the audio encoder the model's recipe names (same model).")
@click.option("--text-encoder", help="A local copy of the text encoder the model's recipe names (same model).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help=f"Processes decoding audio while the encoders run. Default: as swrr-extract, here "
                   f"{default_workers()}; 0 = decode in the main process.")
@click.option("--no-calibration", is_flag=True,
              help="Report the raw softmax instead of applying the temperature the model was calibrated with on "
                   "validation data (a model trained without validation rows has none: both are the same).")
@click.option("--abstain-below", type=click.FloatRange(0.0, 1.0, min_open=True), metavar="P",
              help="Label a row 'abstain' when its highest class probability is under P (its probabilities are "
                   "still written); the summary counts them.")
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
              help="Run the model on PyTorch, or on onnxruntime from the bundle's ONNX files (made by swrr-export "
                   "--onnx: the head; --onnx-encoders: the encoders too, else they stay on PyTorch). Needs the extra "
                   "swrr[onnx].")
@click.option("--strict", is_flag=True,
              help="Refuse encoders whose weights differ from those the model's features were made with (the "
                   "recipe's weights digest), instead of warning.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="A progress bar over the rows to score (one line per update in a log).")
def main(model, inputs, fold, texts, out, fmt, device, batch_seconds, segment, hop, aggregate, plot, asr, asr_all,
         audio_encoder, text_encoder, workers, no_calibration, abstain_below, backend, strict, progress):
    """Predict emotions (or sentiment scores) of audio files, folders or a manifest CSV with a trained
    swrr model, through the same feature code path as swrr-extract.

    \b
    Examples:
      swrr-predict --model runs/demo-split clip.wav --text "what was said"
      swrr-predict --model runs/iemocap-all recordings/ --asr openai/whisper-small --out preds.csv
      swrr-predict --model runs/iemocap-loso-speaker --fold 3 my.csv --format jsonl --out preds.jsonl
    """
    try:
        config = PredictConfig(model=model, inputs=list(inputs), texts=list(texts), out=out, fold=fold, format=fmt,
                               device=device, batch_seconds=batch_seconds, segment=segment, hop=hop,
                               aggregate=aggregate, plot=plot, asr=asr, asr_all=asr_all,
                               audio_encoder=audio_encoder, text_encoder=text_encoder,
                               workers=default_workers() if workers is None else workers,
                               progress=progress, calibration=not no_calibration, abstain_below=abstain_below,
                               backend=backend, strict=strict)
        summary = run_predict(config)
    except KeyboardInterrupt:
        click.echo("\nswrr-predict: interrupted; nothing was written", err=True)
        sys.exit(130)
    click.echo("\n".join(summary.lines()))


if __name__ == "__main__":
    main()
