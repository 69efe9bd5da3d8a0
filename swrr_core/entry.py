"""The console scripts (setup.cfg) and `python -m swrr.<stage>`: set up the process, then run the
command's CLI. Nothing here imports torch: OMP_WAIT_POLICY must be in the environment before
torch loads its OpenMP runtime (swrr.threads explains why idle threads should sleep)."""
from __future__ import annotations

from importlib import import_module

from swrr.threads import wait_passively


def _command(module: str):
    def main():
        wait_passively()
        import_module(module).main()

    main.__doc__ = f"Run {module}.main with passive OpenMP waiting."
    return main


extract = _command("swrr.extract.cli")
train = _command("swrr.train.cli")
predict = _command("swrr.predict.cli")
export = _command("swrr.predict.export")
compare = _command("swrr.train.compare_cli")
evaluate = _command("swrr.train.evaluate_cli")
