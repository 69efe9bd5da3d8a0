"""What `swrr-extract` and `swrr.extract_features` accept, turned into an `ExtractConfig`.

    config = extract_config("demo", encoders="tiny", labels="ang,hap")

The option names are swrr-extract's flags with "_" (plus `progress`); every rule about how they
combine lives here, so the command line only parses its flags and calls this.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from swrr.errors import OptionError, option, refuse_unknown
from swrr.extract.encoders import DEFAULT_AUDIO_ENCODER, DEFAULT_TEXT_ENCODER
from swrr.extract.pipeline import ExtractConfig, default_workers

EXTRACT_OPTIONS = ("audio_encoder", "text_encoder", "encoders", "layer", "device", "dtype", "batch_seconds",
                   "workers", "labels", "transcripts", "asr", "overwrite", "progress")


def label_list(labels: Union[None, str, Sequence[str]]) -> Optional[Tuple[str, ...]]:
    """"ang, hap" or ["ang", "hap"] -> ("ang", "hap") (repeats dropped); None when not given."""
    if labels is None:
        return None
    parts = labels.split(",") if isinstance(labels, str) else [str(name) for name in labels]
    names = tuple(dict.fromkeys(name.strip() for name in parts if name.strip()))
    if not names:
        raise OptionError(f"{option('labels')}: give at least one class, e.g. {option('labels', 'ang,hap,neu,sad')}")
    return names


def extract_config(dataset: str, root=None, out=None, **options) -> ExtractConfig:
    """The ExtractConfig of a request; OptionError for unknown or conflicting options."""
    refuse_unknown(options, EXTRACT_OPTIONS, "extract_features")
    if options.get("encoders") == "tiny" and (options.get("audio_encoder") or options.get("text_encoder")):
        raise OptionError(f"{option('encoders', 'tiny')} builds its own random encoders; leave out "
                          f"{option('audio_encoder')}/{option('text_encoder')}, or use "
                          f"{option('encoders', 'pretrained')}")
    workers = options.pop("workers", None)
    if workers is not None and not (isinstance(workers, int) and workers >= 0):
        raise OptionError(f"{option('workers')} must be a whole number >= 0 (0 = decode in the main process), "
                          f"got {workers!r}")
    try:
        return ExtractConfig(dataset=dataset, root=None if root is None else Path(root),
                             out=None if out is None else Path(out),
                             **{**options, "audio_encoder": options.get("audio_encoder") or DEFAULT_AUDIO_ENCODER,
                                "text_encoder": options.get("text_encoder") or DEFAULT_TEXT_ENCODER,
                                "labels": label_list(options.get("labels"))},
                             num_workers=default_workers() if workers is None else workers)
    except ValueError as exc:  # dtype, device, batch_seconds
        raise OptionError(str(exc)) from None
