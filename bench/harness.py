"""What every benchmark shares: interleaved timing rounds, figures with their spread, and the machine.

A ratio of two timings is only as good as the moment each was taken: on a busy machine a numerator timed
now and a denominator timed a minute ago (or in another process) can differ by more than the effect being
measured. So every benchmark here times all the variants it compares in one process, round by round: each
round runs every variant once (in a rotating order, so none is always first), and a ratio is formed from
timings of the same rounds. A figure is the ratio of the best times (best of N), with the spread of the
per-round ratios beside it.

``Figure`` is what a benchmark reports; ``--json PATH`` (``write_json``) saves its figures for
``bench/run_all.py``, which gathers them into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

LIBRARIES = ("numpy", "torch", "av", "transformers", "jax", "flax")


@dataclass
class Figure:
    """One measured figure: ``value`` (best of N), and ``low``..``high`` over the N rounds.

    ``target`` states what it should reach (``">= 3"``, ``"<= 1.5"``, ``"50-100"``) in its own unit, or
    is empty; ``met`` is None when there is no target. ``note`` says how it was measured, briefly."""

    name: str
    value: float
    low: float
    high: float
    unit: str = "x"
    target: str = ""
    note: str = ""
    rounds: int = 1
    met: bool | None = field(default=None)

    def __post_init__(self) -> None:
        self.met = meets(self.value, self.target) if self.target else None

    def line(self, width: int = 64) -> str:
        spread = f"[{self.low:.3g} - {self.high:.3g}]" if self.rounds > 1 else "(1 round)"
        verdict = "" if self.met is None else ("  target " + self.target + (" met" if self.met else " NOT met"))
        return f"{self.name:<{width}} {self.value:9.3g} {self.unit:<7} {spread:<20}{verdict}"


def meets(value: float, target: str) -> bool:
    """Whether ``value`` meets ``">= a"``, ``"<= b"`` or ``"a-b"`` (both ends included)."""
    t = target.replace(" ", "")
    if t.startswith(">="):
        return value >= float(t[2:])
    if t.startswith("<="):
        return value <= float(t[2:])
    low, _, high = t.partition("-")
    if not high:
        raise ValueError(f"target {target!r}: write '>= a', '<= b' or 'a-b'")
    return float(low) <= value <= float(high)


def interleaved(
    variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Seconds of each variant in each of ``rounds`` rounds, after ``warmup`` untimed rounds.

    Round r runs every variant once, starting at the r-th one (a rotation), so that a variant does not
    always follow the same other one. ``sync`` runs before each clock reading (a GPU synchronisation)."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            if sync:
                sync()
            start = time.perf_counter()
            variants[name]()
            if sync:
                sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def ratio(
    name: str, numerator: list[float], denominator: list[float], *, scale: float = 1.0, unit: str = "x",
    target: str = "", note: str = "",
) -> Figure:
    """``scale * numerator / denominator`` of timings taken in the same rounds (index i = round i).

    The figure is the ratio of the two best times; the spread is the range of the per-round ratios."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"{name}: numerator and denominator need the same non-empty rounds")
    per_round = [scale * a / b for a, b in zip(numerator, denominator, strict=True)]
    best = scale * min(numerator) / min(denominator)
    return Figure(name, best, min(per_round), max(per_round), unit, target, note, len(per_round))


def best(name: str, values: list[float], *, unit: str = "s", target: str = "", note: str = "",
         higher_is_better: bool = False) -> Figure:
    """A plain measurement: its best value over the rounds, with the range of all of them."""
    if not values:
        raise ValueError(f"{name}: no measurements")
    value = max(values) if higher_is_better else min(values)
    return Figure(name, value, min(values), max(values), unit, target, note, len(values))


def single(name: str, value: float, *, unit: str = "MiB", target: str = "", note: str = "") -> Figure:
    """A figure measured once (a peak of memory in its own process: it does not vary with load)."""
    return Figure(name, value, value, value, unit, target, note, 1)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    """The machine the figures were measured on: CPU model, cores, GPU if any, library versions, date."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def print_figures(title: str, figures: list[Figure]) -> None:
    print(title)
    print(f"{'figure':<64} {'value':>9} {'unit':<7} {'spread (per round)':<20}")
    for f in figures:
        print(f.line())


def write_json(path: str | os.PathLike | None, bench: str, figures: list[Figure], extra: dict | None = None) -> None:
    """Save a benchmark's figures for ``bench/run_all.py`` (nothing when ``path`` is None)."""
    if not path:
        return
    out = {"bench": bench, "machine": machine(), "figures": [asdict(f) for f in figures], **(extra or {})}
    Path(path).write_text(json.dumps(out, indent=1))
