"""`swrr-export RUN_FOLDER [--fold K] --out DIR [--onnx]`: copy one fold's model bundle out of a
run, with its head as ONNX beside the safetensors when asked."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import click

from swrr.bundle import BundleError, load_bundle
from swrr.cli import CONTEXT, OneLineErrors


def export_bundle(run_or_bundle, out, fold: Optional[int] = None, onnx: bool = False,
                  report: Optional[Dict[str, Any]] = None, onnx_encoders: bool = False,
                  audio_encoder: Optional[str] = None, text_encoder: Optional[str] = None) -> Path:
    """Validate the chosen bundle, then copy it to `out` (through `<out>.partial`); -> out.
    `onnx`: also write the head as ONNX there (validated; see swrr.predict.onnx.export_head);
    `onnx_encoders`: the recipe's encoders too (or the local copies audio_encoder / text_encoder;
    implies `onnx`). Their details (max |logit difference|, opset) go into `report` when given."""
    if not Path(run_or_bundle).exists():
        raise BundleError(f"{run_or_bundle}: no such run or bundle folder")
    source = load_bundle(run_or_bundle, fold=fold).path  # a damaged bundle is refused here, not later
    out = Path(out)
    if out.exists():
        raise BundleError(f"--out {out} already exists; choose a new folder")
    if out.resolve().is_relative_to(Path(run_or_bundle).resolve()):
        raise BundleError(f"--out {out} lies inside {run_or_bundle}; export to a folder outside the run or bundle")
    if not out.parent.is_dir():
        raise BundleError(f"--out {out}: the folder {out.parent} does not exist")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(source, partial)
        if onnx or onnx_encoders:
            from swrr.predict.engine import load_recipe_encoders
            from swrr.predict.onnx import export_encoders, export_head

            bundle = load_bundle(partial)
            details = export_head(bundle, partial)
            if onnx_encoders:
                encoders = load_recipe_encoders(bundle, audio_encoder, text_encoder)
                details.update(export_encoders(bundle, partial, *encoders))
            if report is not None:
                report.update(details)
        partial.rename(out)
    except OSError as exc:
        raise BundleError(f"--out {out}: cannot copy the bundle there ({copy_failure(exc)}); nothing was "
                          "written") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone after the rename; a failed export leaves nothing
    return out


def copy_failure(exc: OSError) -> str:
    """The first cause of a failed copy in words: shutil.Error carries a list of (src, dst, why)."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        source, _, why = exc.args[0][0]
        return f"{Path(source).name}: {why}"
    return exc.strerror or str(exc)


@click.command("swrr-export", cls=OneLineErrors, context_settings=CONTEXT)
@click.argument("run_folder", type=click.Path(path_type=Path))
@click.option("--fold", type=click.IntRange(min=1), help="Which fold (1-based); needed when the run has several.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The new bundle folder.")
@click.option("--onnx", is_flag=True,
              help="Also write the head as head.onnx (dynamic batch, dynamo exporter), checked against PyTorch with "
                   "onnxruntime (max |logit difference| must be < 1e-4, else nothing is written); run it with "
                   "swrr-predict --backend onnx. Needs the extra swrr[onnx].")
@click.option("--onnx-encoders", is_flag=True,
              help="Also write the recipe's audio and text encoders as ONNX (dynamic batch and length, exact "
                   "batching included), checked through the head: its logits on their features must be within 1e-4 "
                   "of PyTorch's. Implies --onnx.")
@click.option("--audio-encoder", help="With --onnx-encoders: a local copy of the audio encoder the recipe names.")
@click.option("--text-encoder", help="With --onnx-encoders: a local copy of the text encoder the recipe names.")
def main(run_folder, fold, out, onnx, onnx_encoders, audio_encoder, text_encoder):
    """Copy one fold's model bundle (weights, config, recipe, model card) out of a run folder."""
    details: Dict[str, Any] = {}
    path = export_bundle(run_folder, out, fold, onnx=onnx, report=details, onnx_encoders=onnx_encoders,
                         audio_encoder=audio_encoder, text_encoder=text_encoder)
    if onnx or onnx_encoders:
        click.echo(f"ONNX head: opset {details['opset']}, max |logit difference| vs PyTorch "
                   f"{details['max_abs_logit_diff']:.2g} on {details['validated_on']}")
    if onnx_encoders:
        click.echo(f"ONNX encoders: max |logit difference| of the head on their features "
                   f"{details['encoders_max_abs_logit_diff']:.2g}, max |feature difference| "
                   f"{details['encoders_max_abs_feature_diff']:.2g}")
    click.echo(f"exported {path} (load it with swrr-predict --model {path})")


if __name__ == "__main__":
    main()
