"""The bundled demo dataset: 96 short espeak-ng clips, 4 classes x 24, read as a manifest.

extract/demo_data/demo.csv lists them (path, text, label, speaker, session, split); the clips
were synthesised once by scripts/make_demo.py, with class-dependent words and prosody, so a
model can learn the classes from either modality. It lets the first README command run offline.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import List

from .manifest import ManifestReader

# The clips ship as package data of swrr.extract (an installed wheel and an editable checkout alike).
BUNDLED_ROOT = Path(str(resources.files("swrr.extract") / "demo_data"))


class DemoReader(ManifestReader):
    name = "demo"
    default_dirname = "demo"
    manifest_filename = "demo.csv"

    @classmethod
    def candidate_roots(cls) -> List[Path]:
        return super().candidate_roots() + [BUNDLED_ROOT]
