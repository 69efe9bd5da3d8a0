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
                  report: Optional[Dict[str, Any]] = None) -> Path:
    """Validate the chosen bundle, then copy it to `out` (through `<out>.partial`); -> out.
    `onnx`: also write the head as ONNX there (validated; see swrr.predict.onnx.export_head),
    its details (max |logit difference|, opset) put into `report` when given."""
    if not Path(run_or_bundle).exists():
        raise BundleError(f"{run_or_bundle}: no such run or bundle folder")
    source = load_bundle(run_or_bundle, fold=fold).path  # a damaged bundle is refused here, not later
    out = Path(out)
    if out.exists():
        raise BundleError(f"--out {out} already exists; choose a new folder")
    if not out.parent.is_dir():
        raise BundleError(f"--out {out}: the folder {out.parent} does not exist")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(source, partial)
        if onnx:
            from swrr.predict.onnx import export_head

            details = export_head(load_bundle(partial), partial)
            if report is not None:
                report.update(details)
        partial.rename(out)
    except OSError as exc:
        raise BundleError(f"--out {out}: cannot copy the bundle there ({exc})") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone after the rename; a failed export leaves nothing
    return out


@click.command("swrr-export", cls=OneLineErrors, user_errors=(BundleError,), context_settings=CONTEXT)
@click.argument("run_folder", type=click.Path(path_type=Path))
@click.option("--fold", type=click.IntRange(min=1), help="Which fold (1-based); needed when the run has several.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The new bundle folder.")
@click.option("--onnx", is_flag=True,
              help="Also write the head as head.onnx (dynamic batch, dynamo exporter), checked against PyTorch with "
                   "onnxruntime (max |logit difference| must be < 1e-4, else nothing is written); run it with "
                   "swrr-predict --backend onnx. Needs the extra swrr[onnx].")
def main(run_folder, fold, out, onnx):
    """Copy one fold's model bundle (weights, config, recipe, model card) out of a run folder."""
    details: Dict[str, Any] = {}
    path = export_bundle(run_folder, out, fold, onnx=onnx, report=details)
    if onnx:
        click.echo(f"ONNX head: opset {details['opset']}, max |logit difference| vs PyTorch "
                   f"{details['max_abs_logit_diff']:.2g} on {details['validated_on']}")
    click.echo(f"exported {path} (load it with swrr-predict --model {path})")


if __name__ == "__main__":
    main()
