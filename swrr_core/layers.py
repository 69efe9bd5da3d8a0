"""Which hidden states: the `--layers` spelling shared by swrr-extract, swrr-train and swrr-predict.

    all      every hidden state: 0 (the transformer's input) .. L (the last layer's output)
    last     the last one, L (the paper's choice, the default)
    N        one hidden state; -1 = the last (the `--layer N` spelling)
    A,B,C    these hidden states
    A:B      A through B, both included

Decision: "A:B" includes B: `--layers 9:12` reads as "layers 9 to 12" does in a paper's table,
where a Python slice would silently drop layer 12.

Extraction resolves a spelling against an encoder's L (`resolve`); training picks among the
hidden states a cache holds (`select`). Pure Python: the trainer imports it.
"""
from __future__ import annotations

from typing import List, Sequence, Union

from swrr.errors import SwrrError, option

LayerSpec = Union[str, int, Sequence[int]]
HELP = "all | last | N | A,B,C | A:B (0 = the transformer's input, -1 = the last; A:B includes B)"


class LayerError(SwrrError, ValueError):
    """A layer spelling that does not parse or does not fit the encoder / cache; the message says why."""


def canonical(spec: LayerSpec) -> str:
    """The spelling as stored in configs: "all", "last", "3", "1,4,7" or "2:5"; LayerError if malformed."""
    if isinstance(spec, int):
        return str(spec)
    if not isinstance(spec, str):
        return ",".join(str(int(i)) for i in spec)
    text = spec.strip().lower().replace(" ", "")
    if text in ("all", "last"):
        return text
    try:
        if ":" in text:
            start, stop = (int(part) for part in text.split(":"))
            if start < 0 or stop < start:
                raise ValueError
            return f"{start}:{stop}"
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise LayerError(f"{option('layers', spec)}: expected {HELP}") from None
    if len(values) > 1 and min(values) < 0:
        raise LayerError(f"{option('layers', spec)}: a list names hidden states 0..L (-1 only alone)")
    return ",".join(str(v) for v in values)


def resolve(spec: LayerSpec, n_layers: int, name: str) -> List[int]:
    """Hidden-state indices (sorted, unique, each in 0..n_layers) of an encoder with n_layers layers."""
    text = canonical(spec)
    if text == "all":
        return list(range(n_layers + 1))
    if text == "last":
        return [n_layers]
    if ":" in text:
        start, stop = (int(part) for part in text.split(":"))
        wanted = list(range(start, stop + 1))
    else:
        wanted = [n_layers if v == -1 else v for v in (int(part) for part in text.split(","))]
    bad = [v for v in wanted if not 0 <= v <= n_layers]
    if bad:
        raise LayerError(f"{option('layers', text)} is out of range for {name}: it has {n_layers} layers; use 0..{n_layers} "
                         "(0 = the transformer's input) or -1 for the last")
    return sorted(set(wanted))


def select(spec: LayerSpec, stored: Sequence[int], where: str) -> List[int]:
    """Positions (into `stored`) of the hidden states a spelling picks among those a cache holds.

    "all" keeps every stored one, "last" the highest; numbers must be stored ones (-1 alone: the last)."""
    stored = [int(s) for s in stored]
    text = canonical(spec)
    if text == "all":
        return list(range(len(stored)))
    if text == "last" or text == "-1":
        return [max(range(len(stored)), key=stored.__getitem__)]
    if ":" in text:
        start, stop = (int(part) for part in text.split(":"))
        wanted = list(range(start, stop + 1))
        picked = [i for i, s in enumerate(stored) if start <= s <= stop]
    else:
        wanted = [int(part) for part in text.split(",")]
        picked = [stored.index(v) for v in wanted if v in stored]
    missing = [v for v in wanted if v not in stored] if ":" not in text else []
    if missing or not picked:
        raise LayerError(f"{option('layers', text)}: {where} holds the hidden states {stored}, not {missing or wanted}")
    return sorted(set(picked))
