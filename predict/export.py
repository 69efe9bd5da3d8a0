"""`swrr-export RUN_FOLDER [--fold K] --out DIR`: copy one fold's model bundle out of a run."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import click

from swrr.bundle import BundleError, load_bundle
from swrr.cli import CONTEXT, OneLineErrors


def export_bundle(run_or_bundle, out, fold: Optional[int] = None) -> Path:
    """Validate the chosen bundle, then copy it to `out` (through `<out>.partial`); -> out."""
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
        partial.rename(out)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BundleError(f"--out {out}: cannot copy the bundle there ({copy_failure(exc)}); nothing was "
                          "written") from None
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
def main(run_folder, fold, out):
    """Copy one fold's model bundle (weights, config, recipe, model card) out of a run folder."""
    path = export_bundle(run_folder, out, fold)
    click.echo(f"exported {path} (load it with swrr-predict --model {path})")


if __name__ == "__main__":
    main()
