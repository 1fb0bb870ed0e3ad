"""The site's plots as inline SVG (matplotlib with the Agg canvas; no pyplot, so no global state).

Text is written as SVG ``<text>`` (``svg.fonttype: none``), which matplotlib escapes; dollar signs are
escaped so that no record string is read as mathtext; the result is parsed and refused if it holds
anything active (scripts, event handlers, external links) before it is inlined into a page.

Inputs besides records: profile reports written by ``vfeval profile`` (``vfeval.profile/1``: ``rows`` of
``kind``, ``frames``, ``mask_ratio``, ``trainable_layers``, ``peak_mib``, ...) and trainer logs
(``metrics.jsonl``: one JSON object per line with ``step`` and ``loss``).
"""

from __future__ import annotations

import io
import json
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

from vfeval.errors import UsageError
from vfeval.leaderboard.records import FAMILIES, Protocol, family_label

PROFILE_SCHEMA = "vfeval.profile/1"
FAMILY_STYLE = {
    "video-first": ("#0072B2", "o"),
    "llm-over-segments": ("#D55E00", "s"),
    "image-first": ("#009E73", "^"),
    "baseline": ("#777777", "D"),
    "other": ("#CC79A7", "v"),
}
_RC = {
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def text(value: Any, limit: int = 60) -> str:
    """A string safe to hand to matplotlib: no mathtext, bounded length."""
    s = str(value)
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _figure(salt: str, size: tuple[float, float] = (5.2, 3.2)) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    fig.set_label(salt)
    return fig


_FORBIDDEN_TAGS = {"script", "foreignobject", "iframe", "object", "embed", "image", "a"}


def _check_svg(svg: str) -> None:
    root = ET.fromstring(svg)
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1].lower()
        if tag in _FORBIDDEN_TAGS:
            raise ValueError(f"plot SVG holds a <{tag}> element")
        for key, value in el.attrib.items():
            name = key.rsplit("}", 1)[-1].lower()
            if name.startswith("on") or (name == "href" and not value.startswith("#")):
                raise ValueError(f"plot SVG holds an active attribute {name!r}")


def to_svg(fig: Any) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog or comments), checked to hold nothing active."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": fig.get_label()}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    _check_svg(svg)
    svg = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1', svg, count=1)
    return svg.replace("<svg ", '<svg role="img" class="plot" ', 1)


def _rc() -> Any:
    import matplotlib

    return matplotlib.rc_context(_RC)


def metric_vs_frames(group: Protocol) -> str | None:
    """The headline metric of the ranked records against frames per video, one colour per pipeline family:
    every pipeline as a point (with its 95% CI), and a line through each family's best at each frame count."""
    points: dict[str, list[tuple[int, float, tuple[float, float] | None]]] = defaultdict(list)
    for rec in group.ranked:
        if rec.frames is not None and rec.value is not None:
            points[rec.family].append((rec.frames, rec.value, rec.ci))
    if not points:
        return None
    with _rc():
        fig = _figure(f"frames-{group.slug}")
        ax = fig.add_subplot()
        higher = group.ranked[0].higher_is_better
        for fam in [*FAMILIES, *sorted(set(points) - set(FAMILIES))]:  # a plugin's own families last
            pts = points.get(fam)
            if not pts:
                continue
            color, marker = FAMILY_STYLE.get(fam, FAMILY_STYLE["other"])
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            err = [[max(0.0, y - c[0]) if c else 0.0 for (_, y, c) in pts],
                   [max(0.0, c[1] - y) if c else 0.0 for (_, y, c) in pts]]
            ax.errorbar(xs, ys, yerr=err, fmt=marker, color=color, alpha=0.55, capsize=2, markersize=4)
            best: dict[int, float] = {}
            for x, y, _ in pts:
                best[x] = y if x not in best else (max if higher else min)(best[x], y)
            bx = sorted(best)
            ax.plot(bx, [best[x] for x in bx], marker=marker, color=color, label=text(family_label(fam)))
        frames = sorted({x for pts in points.values() for x, _, _ in pts})
        ax.set_xscale("log", base=2)
        ax.set_xticks(frames, [str(f) for f in frames])
        ax.minorticks_off()
        ax.set_xlabel("frames per video")
        ax.set_ylabel(text(group.headline) + ("" if higher else " (lower is better)"))
        ax.legend(fontsize=8)
        return to_svg(fig)


# ---------------------------------------------------------------------------------------------------
# Profiles and training curves


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_profile(path: Path) -> dict[str, Any]:
    """A ``vfeval profile`` report; a bad one is refused naming the file and the field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable JSON profile ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != PROFILE_SCHEMA:
        raise UsageError(f"{path}: field 'schema' must be {PROFILE_SCHEMA!r}")
    if not isinstance(data.get("rows"), list):
        raise UsageError(f"{path}: field 'rows' must be a list")
    for i, row in enumerate(data["rows"]):
        for key in ("frames", "peak_mib"):
            if not isinstance(row, dict) or not _num(row.get(key)):
                raise UsageError(f"{path}: field 'rows[{i}].{key}' must be a number")
    return data


def read_curve(path: Path) -> list[tuple[float, float]]:
    """(step, loss) pairs of a trainer's metrics.jsonl; lines without a loss (e.g. evaluations) are skipped."""
    points = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from exc
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{i}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or not _num(row.get("step")):
            raise UsageError(f"{path}:{i}: field 'step' must be a number")
        if _num(row.get("loss")):
            points.append((row["step"], row["loss"]))
    return points


def memory_vs_frames(profile: dict[str, Any], salt: str) -> str | None:
    """Peak memory of a training step against frames, one line per (mask ratio, trainable layers)."""
    lines: dict[tuple[float, Any], list[tuple[float, float]]] = defaultdict(list)
    for row in profile["rows"]:
        if row.get("kind", "train") == "train":
            key = (row.get("mask_ratio") or 0.0, row.get("trainable_layers"))
            lines[key].append((row["frames"], row["peak_mib"]))
    if not lines:
        return None
    with _rc():
        fig = _figure(f"memory-{salt}")
        ax = fig.add_subplot()
        frames: set[float] = set()
        for (ratio, layers), pts in sorted(lines.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            pts.sort()
            frames.update(x for x, _ in pts)
            which = "all layers" if layers in (None, -1) else f"last {layers} layers"
            ratio_text = f"{ratio:.0%}" if _num(ratio) else text(ratio)
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"mask {ratio_text}, {which}")
        ax.set_xscale("log", base=2)
        ticks = sorted(frames)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("frames per clip")
        ax.set_ylabel("peak memory of a training step (MiB)")
        ax.legend(fontsize=8)
        return to_svg(fig)


def loss_curves(curves: dict[str, list[tuple[float, float]]]) -> str | None:
    """Training loss against optimizer step, one line per training run."""
    curves = {name: pts for name, pts in curves.items() if pts}
    if not curves:
        return None
    with _rc():
        fig = _figure("training-loss")
        ax = fig.add_subplot()
        for name, pts in sorted(curves.items()):
            ax.plot([s for s, _ in pts], [v for _, v in pts], label=text(name))
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=8)
        return to_svg(fig)
