"""swrr from Python, end to end and offline on the bundled demo (tiny RANDOM encoders: the numbers
only show that everything runs; see docs/API.md).

    python docs/examples/quickstart.py [FOLDER]      # FOLDER: where to work (default: a temporary one)

Extracts the 96 demo clips, trains two short runs that differ in their learning rate and one model on
every clip (the one to deploy), classifies a clip from its file and from memory with it, and
compares the two runs unit by unit.
"""
import logging
import sys
import tempfile
from importlib import resources
from pathlib import Path

import swrr


def quickstart(folder: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # show what the library reports

    # 1. features: the demo set through two tiny random encoders (seconds on a CPU)
    result = swrr.extract_features("demo", out=folder / "demo.h5", encoders="tiny", device="cpu", progress=False)
    print(f"cache {result.cache}: {result.rows} clips, classes {result.per_class}")

    # 2. two short runs of a small head (2 seeds each, so the comparison has units to pair)
    common = dict(runs_dir=folder / "runs", epochs=3, seeds=2, lstm_hidden=16, model_set={"cnn_channels": [4, 8]},
                  threads=1, device="cpu", progress=False)
    base = swrr.train_model(result.cache, name="base", **common)
    faster = swrr.train_model(result.cache, name="lr-2e-3", lr=2e-3, **common)
    print(base.summary[["metric", "mean", "std"]].to_string(index=False))
    print(base.units[["fold", "seed", "ua"]].to_string(index=False))

    # 3. one clip, from its file and from memory (8 kHz stereo: mixed down and resampled like a file)
    demo = resources.files("swrr.extract") / "demo_data"
    clip, text = demo / "wav" / "S1M_ang_2.wav", "Get out of my way!"
    deploy = swrr.train_model(result.cache, name="deploy", protocol="all", **{**common, "seeds": None})  # every row
    recognizer = deploy.recognizer(device="cpu")  # one unit: its model (a run with several needs fold=/a bundle)
    from_file = recognizer.classify_file(clip, text=text)
    print(f"from the file:   {from_file.label} {max(from_file.probs.values()):.2f} {from_file.notes}")

    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly

    samples, rate = sf.read(str(clip), dtype="float32")  # 16 kHz mono
    low = resample_poly(samples, 1, 2).astype(np.float32)
    stereo = np.stack([low, 0.5 * low])  # (channels, samples) at 8 kHz, as torchaudio.load gives it
    from_memory = recognizer.classify(stereo, rate // 2, text=text)
    print(f"from memory:     {from_memory.label} {max(from_memory.probs.values()):.2f} {from_memory.notes}")

    # 4. the two runs compared unit by unit (paired tests)
    table = swrr.compare(base, faster, metric="UA")
    print(table.loc[0, "verdict"])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        quickstart(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="swrr-quickstart-") as tmp:
            quickstart(Path(tmp))
