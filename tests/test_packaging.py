"""One import package: a built wheel and an editable install put only `swrr` at the top level.

Both are installed into fresh virtual environments (with the system's site-packages for the
dependencies) from a copy of the checkout, and probed from a neutral folder: `import swrr.extract`
works, `import extract` / `import train` fail, the package data is found, the commands start.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache", "runs",
                              "*.h5", "gpu-results")
PROBE = """
import importlib, importlib.util, sys
from importlib import resources
from pathlib import Path
import swrr, swrr.extract, swrr.train, swrr.predict
installed = Path(sys.argv[1]).resolve()
for module in (swrr, swrr.extract, swrr.train, swrr.predict):
    assert Path(module.__file__).resolve().is_relative_to(installed), module.__file__
for name in ("extract", "train", "predict", "swrr_core"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"import {name} worked: a top-level package leaked")
data = resources.files("swrr.extract")
assert (data / "tiny_vocab.txt").is_file() and (data / "demo_data" / "demo.csv").is_file()
assert len([p for p in (data / "demo_data" / "wav").iterdir() if p.name.endswith(".wav")]) == 96
print("ok", swrr.__version__)
"""


def _run(*args, cwd, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _fresh_venv(folder: Path) -> Path:
    """A virtual environment that sees the system's packages (torch, pip, setuptools, ...) but holds no
    swrr; -> its python. It builds too: the system's setuptools and wheel, not the test venv's."""
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", folder, cwd=folder.parent)
    return folder / "bin" / "python"


def _pip(python: Path, *args, cwd):
    return _run(python, "-m", "pip", *args, "--no-deps", "--no-index", "--no-build-isolation", cwd=cwd)


# A user's own train.py in the working folder (nanoGPT's layout) is what `import train` finds, and
# swrr.train is not shadowed by it.
USER_TRAIN = """
import importlib.util, swrr.train
from pathlib import Path
assert Path(importlib.util.find_spec("train").origin).resolve() == Path("train.py").resolve()
assert Path(swrr.train.__file__).resolve() != Path("train.py").resolve()
print("ok")
"""


def _probe(python: Path, site: Path, cwd: Path):
    neutral, project = cwd / "neutral", cwd / "project"
    neutral.mkdir()
    project.mkdir()
    (project / "train.py").write_text("print('a user script that is not swrr')\n")
    assert _run(python, "-c", PROBE, site, cwd=neutral).stdout.startswith("ok")
    assert _run(python, "-c", USER_TRAIN, cwd=project).stdout.startswith("ok")
    for command in ("swrr-extract", "swrr-train", "swrr-predict", "swrr-export", "swrr-compare"):
        assert "Usage:" in _run(python.parent / command, "--help", cwd=neutral).stdout
    assert "Usage:" in _run(python, "-m", "swrr.train", "--help", cwd=neutral).stdout


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of the source tree (building writes egg-info and build/ into it)."""
    return Path(shutil.copytree(REPO, tmp_path / "src", ignore=SKIP))


@pytest.mark.slow
def test_the_wheel_holds_only_swrr_with_its_data_and_installs_so(checkout, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "wheel", "-w", tmp_path / "dist", checkout, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("swrr-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["swrr"]
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"swrr"}
    assert {"swrr/__init__.py", "swrr/extract/cli.py", "swrr/train/cli.py", "swrr/predict/cli.py",
            "swrr/extract/tiny_vocab.txt", "swrr/extract/demo_data/demo.csv"} <= set(names)
    assert len([n for n in names if n.startswith("swrr/extract/demo_data/wav/") and n.endswith(".wav")]) == 96

    _pip(python, "install", wheel, cwd=tmp_path)
    site = next((tmp_path / "venv" / "lib").glob("python*/site-packages"))
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == ["swrr"]
    _probe(python, site / "swrr", tmp_path)


@pytest.mark.slow
def test_an_editable_install_maps_only_swrr_too(checkout, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "install", "-e", checkout, cwd=tmp_path)
    _probe(python, checkout, tmp_path)  # swrr from swrr_core/, swrr.extract from extract/, ...
