"""`swrr-extract`: parse options -> extract_config -> runner.run_extraction -> print the summary."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from swrr.extract.batching import AUTO, CPU_BATCH_SECONDS
from swrr.extract.datasets import READERS
from swrr.extract.encoders import DEFAULT_AUDIO_ENCODER, DEFAULT_TEXT_ENCODER, PRESETS
from swrr.extract.featurizer import default_workers
from swrr.extract.options import extract_config
from swrr.extract.pipeline import DEVICES, DTYPES
from swrr.extract.runner import run_extraction
from swrr.extract.transcripts import TRANSCRIPT_SOURCES
from swrr.cache import partial_path
from swrr.cli import CONTEXT, OneLineErrors


@click.command("swrr-extract", cls=OneLineErrors, context_settings=CONTEXT)
@click.option("--dataset", required=True, type=click.Choice(list(READERS)),
              help="Which reader: iemocap (original release tree), mosei (CMU-MOSEI raw release), "
                   "meld (MELD.Raw: *_sent_emo.csv + mp4 clips), mmsa (MMSA's label.csv + Raw/<video>/<clip>.mp4 "
                   "of MOSI, MOSEI, SIMS, SIMS v2), msp-podcast (Labels/labels_consensus.csv, Audios/, "
                   "Transcripts/), manifest (your CSV: path,text,label[,speaker,session,split,start,end]), "
                   "demo (96 bundled clips, works offline). mp4 clips need PyAV: pip install 'swrr[video]'.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="The dataset folder (manifest: the CSV or a folder holding manifest.csv). "
                   "Default: $SWRR_DATA/<dataset folder>, then data/<dataset folder>.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="The cache file to write. Default: cache/<dataset>.h5.")
@click.option("--audio-encoder", default=None,
              help=f"Hugging Face hub id or local folder of a WavLM/wav2vec2-style model. "
                   f"Default: {DEFAULT_AUDIO_ENCODER}.")
@click.option("--text-encoder", default=None,
              help=f"Hugging Face hub id or local folder of a BERT-style model. Default: {DEFAULT_TEXT_ENCODER}.")
@click.option("--encoders", type=click.Choice(PRESETS), default="pretrained", show_default=True,
              help="pretrained: load the two encoders above. tiny: small RANDOMLY initialised encoders "
                   "built offline, for tests and demos; the cache records that they are random.")
@click.option("--layer", type=int, default=-1, show_default=True,
              help="Hidden layer of both encoders to store: -1 = the last, 0 = the transformer's input, "
                   "N = the output of layer N.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where the encoders run; auto = cuda when torch sees a GPU, else cpu.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float16", show_default=True,
              help="Dtype of the stored features. float16 also runs the encoders under fp16 autocast on CUDA; "
                   "float32 computes and stores full precision (twice the disk).")
@click.option("--batch-seconds", default=AUTO, show_default=True, metavar="auto|SECONDS",
              help="Audio per batch, in seconds of padded audio (rows x longest row). auto: from the GPU's "
                   "total memory, the largest of 40..400 s whose estimated peak (base-size encoders) stays "
                   "under 45% of it: 200 s on an 11 GB card, 400 s on 24 GB and up with float16; "
                   f"{CPU_BATCH_SECONDS:g} s on the CPU. The summary says which was used. "
                   "0 encodes one utterance at a time.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help=f"Processes decoding audio while the GPU encodes. Default: min(4, CPUs - 1), here "
                   f"{default_workers()}; 0 = decode in the main process.")
@click.option("--labels", default=None, metavar="A,B,...",
              help="Keep only these classes (e.g. ang,hap,neu,sad); the utterances of other classes are counted "
                   "skips. Class indices follow the dataset's own order. Default: every class (for msp-podcast: "
                   "all but O and X, which only --labels brings in).")
@click.option("--transcripts", type=click.Choice(TRANSCRIPT_SOURCES), default="gold", show_default=True,
              help="Where the text features come from: gold = the corpus' own transcripts; asr = speech "
                   "recognition with --asr (the transformers pipeline swrr-predict uses), the corpus' transcripts "
                   "kept as references with each row's WER and the corpus WER (jiwer) in the cache and the summary. "
                   "Interrupted ASR resumes from <out>.asr-progress.jsonl.")
@click.option("--asr", metavar="MODEL",
              help="The ASR model for --transcripts asr: a hub id (e.g. openai/whisper-small) or a local folder.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing swrr cache (never any other file), or discard an interrupted one made "
                   "with another config or dataset, or damaged. An interrupted run of the same command resumes "
                   "where it stopped, with or without --overwrite.")
def main(dataset, root, out, audio_encoder, text_encoder, encoders, layer, device, dtype, batch_seconds,
         workers, labels, transcripts, asr, overwrite):
    """Extract WavLM (audio) and BERT (text) features of a dataset into one HDF5 cache,
    which `swrr-train --cache` then reads.

    \b
    Examples:
      swrr-extract --dataset demo --encoders tiny        # offline, seconds
      swrr-extract --dataset iemocap --root /data/IEMOCAP_full_release
      swrr-extract --dataset manifest --root my.csv --out cache/mine.h5
      swrr-extract --dataset iemocap --transcripts asr --asr openai/whisper-small --out cache/iemocap-asr.h5
    """
    config = extract_config(dataset, root, out, audio_encoder=audio_encoder, text_encoder=text_encoder,
                            encoders=encoders, layer=layer, device=device, dtype=dtype, batch_seconds=batch_seconds,
                            workers=workers, labels=labels, transcripts=transcripts, asr=asr,
                            overwrite=overwrite)
    try:
        summary = run_extraction(config)
    except KeyboardInterrupt:
        part = partial_path(config.out_path)
        kept = f"finished batches are kept in {part}: " if part.exists() else ""
        replaced = (f"; {config.out_path} is replaced only when the new cache is complete"
                    if overwrite and config.out_path.exists() else "")
        click.echo(f"\nswrr-extract: interrupted; {kept}run the same command again (with or without --overwrite) "
                   f"to resume{replaced}", err=True)
        sys.exit(130)
    if summary is not None:  # None on ranks other than 0 of a distributed run
        click.echo("\n".join(summary.lines()))


if __name__ == "__main__":
    main()
