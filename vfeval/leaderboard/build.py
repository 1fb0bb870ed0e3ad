"""``vfeval leaderboard build``: the static site, from the records in a results folder.

The site is plain files that work from ``file://`` and any static host: ``index.html`` (the headline
comparison by pipeline family and the plots), ``protocols/<task>-<split>-<fp>.html`` (a sortable,
filterable table per protocol), ``results/<record>.html`` (a record's full provenance, with its samples
file when the results folder has one), ``recipes.html`` (the pre-training recipes side by side, when records
say how their encoder was trained) and ``assets/`` (CSS and JS). Every string from a record is escaped
by jinja2's autoescaping; table data for the script travels as JSON in a ``<script type="application/json">``
block with ``<``, ``>`` and ``&`` escaped.

Optional inputs in the results folder: ``profiles/*.json`` (``vfeval profile`` reports: memory against
frames) and ``training/*.jsonl`` (trainer ``metrics.jsonl`` files: loss curves, named by file).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vfeval import __version__
from vfeval.errors import UsageError
from vfeval.leaderboard import plots
from vfeval.leaderboard.records import (
    FAMILIES,
    Protocol,
    Record,
    family_label,
    load_records,
    rank,
    safe_name,
    samples_of,
)

MARKER = ".vfeval-site"
"""Written into every built site, so that a rebuild may replace it and no other folder is ever emptied."""
TEMPLATES = Path(__file__).with_name("templates")
COLUMNS = (
    ("rank", "#"), ("run", "run"), ("value", "metric [95% CI]"), ("family", "family"), ("encoder", "encoder"),
    ("aggregator", "aggregator"), ("backend", "backend"), ("frames", "frames"), ("sampling", "sampling"),
    ("masking", "masking"), ("parameters", "parameters"), ("n", "n"), ("failed", "failed"), ("wall_s", "cost"),
)
MAIN_FAMILIES = ("video-first", "llm-over-segments", "image-first", "baseline")


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script type="application/json">`` element (no ``</``, ``<!--``, ``&``)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _prepare(out: Path, results_dir: Path) -> None:
    if out.resolve() == results_dir.resolve() or results_dir.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out} must not be the results folder or inside it")
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a folder for the site")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise UsageError(f"--out {out} is not empty and was not built by `vfeval leaderboard build`; "
                             "choose an empty or new folder")
        shutil.rmtree(out)
    (out / "protocols").mkdir(parents=True)
    (out / "results").mkdir()
    shutil.copytree(TEMPLATES / "assets", out / "assets")
    (out / MARKER).write_text("built by vfeval leaderboard build; rebuilt in place\n", encoding="utf-8")


def _finite(v: Any) -> Any:
    return v if isinstance(v, (int, float)) and v == v and abs(v) != float("inf") else None


def _row(rec: Record) -> dict[str, Any]:
    """The sort keys of one table row (what the script compares)."""
    return {
        "rank": rec.rank, "run": rec.run, "family": rec.family_label, "encoder": rec.encoder,
        "aggregator": rec.aggregator, "backend": rec.backend, "frames": rec.frames if rec.frames is not None else
        rec.frames_label, "sampling": rec.sampling_label, "masking": rec.masking, "parameters": rec.parameters,
        "value": _finite(rec.value), "n": rec.n, "failed": rec.n_failed, "wall_s": _finite(rec.cost("wall_s")),
    }


def _page_names(records: list[Record]) -> dict[str, str]:
    """Record stem → a unique, file-name-safe page name."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for rec in records:
        base = safe_name(rec.stem, 150)
        name, i = base, 1
        while name.lower() in used:
            i += 1
            name = f"{base}-{i}"
        used.add(name.lower())
        names[rec.stem] = name
    return names


def _extras(results_dir: Path) -> tuple[list[tuple[str, str]], str | None, list[str]]:
    """(memory plots with captions, the loss plot, the training runs' names) from the optional inputs."""
    memory = []
    for path in sorted((results_dir / "profiles").glob("*.json")):
        profile = plots.read_profile(path)
        svg = plots.memory_vs_frames(profile, safe_name(path.stem))
        if svg:
            enc = profile.get("encoder", {}) if isinstance(profile.get("encoder"), dict) else {}
            options = enc.get("options", {}) if isinstance(enc.get("options"), dict) else {}
            details = ", ".join(f"{k} {options[k]}" for k in ("variant", "image_size", "attention") if k in options)
            caption = f"{path.stem}: {enc.get('name', 'encoder')}"
            caption += f" ({details})" if details else ""
            caption += f", batch {profile['rows'][0].get('batch', '?')}, {profile.get('device', '')}"
            memory.append((caption, svg))
    curves = {path.stem: plots.read_curve(path) for path in sorted((results_dir / "training").glob("*.jsonl"))}
    return memory, plots.loss_curves(curves), sorted(name for name, pts in curves.items() if pts)


def build_site(results_dir: str | Path, out: str | Path) -> Path:
    """Build the site into ``out`` (replacing a site built there before); returns the path of index.html.

    The site is a function of ``results_dir`` alone: the same folder gives the same bytes, whatever plugins
    are installed (every value shown is read from the records).
    """
    results_dir, out = Path(results_dir), Path(out)
    records = load_records(results_dir)  # every record is validated before anything is written
    protocols = rank(records)
    memory_plots, loss_plot, curve_names = _extras(results_dir)
    _prepare(out, results_dir)
    env = _environment()
    pages = _page_names(records)
    recipe_columns, recipes = recipe_rows(protocols)
    common = {"protocols": protocols, "n_records": len(records), "version": __version__, "pages": pages,
              "families": FAMILIES, "recipes_page": bool(recipes)}

    best: dict[str, dict[str, Record]] = {}
    frame_plots: list[tuple[Protocol, str]] = []
    for g in protocols:
        best[g.fingerprint] = {}
        for rec in g.ranked:
            best[g.fingerprint].setdefault(rec.family, rec)
        svg = plots.metric_vs_frames(g)
        if svg:
            frame_plots.append((g, svg))
        rows = [_row(r) for r in g.records]
        html = env.get_template("protocol.html").render(
            **common, root="../", g=g, columns=COLUMNS, rows_json=_markup(script_json(rows)),
            frame_plot=_markup(svg) if svg else None,
        )
        (out / "protocols" / f"{g.slug}.html").write_text(html, encoding="utf-8")
        for rec in g.records:
            _result_page(env, common, out, g, rec, pages[rec.stem])

    family_columns = [(f, FAMILIES[f]) for f in MAIN_FAMILIES]
    extra = sorted({r.family for r in records} - set(MAIN_FAMILIES) - {"other"})  # a plugin's own families
    family_columns += [(f, family_label(f)) for f in extra]
    if any(r.family == "other" for r in records):
        family_columns.append(("other", FAMILIES["other"]))
    index = env.get_template("index.html").render(
        **common, root="", best=best, family_columns=family_columns, any_synthetic=any(g.synthetic for g in protocols),
        frame_plots=[(g, _markup(s)) for g, s in frame_plots],
        memory_plots=[(c, _markup(s)) for c, s in memory_plots],
        loss_plot=_markup(loss_plot) if loss_plot else None, curve_names=curve_names,
    )
    (out / "index.html").write_text(index, encoding="utf-8")
    if recipes:
        html = env.get_template("recipes.html").render(**common, root="", columns=recipe_columns, rows=recipes)
        (out / "recipes.html").write_text(html, encoding="utf-8")
    return out / "index.html"


@dataclass
class RecipeRow:
    """One trained encoder on the recipes page: its run name and how it was trained, and its record per
    protocol (the best ranked one when several share it, e.g. two backends)."""

    run: str
    lead: Record
    cells: dict[str, Record] = field(default_factory=dict)


def recipe_rows(protocols: list[Protocol]) -> tuple[list[Protocol], list[RecipeRow]]:
    """The recipes view: the protocols that hold records with a training summary (``pipeline.training``), and
    one row per (run name, training summary), in order of run name; random weights last."""
    rows: dict[str, RecipeRow] = {}
    columns = []
    for g in protocols:
        with_training = [r for r in g.records if r.training_stages is not None]
        if with_training:
            columns.append(g)
        for rec in with_training:  # ranked first, best first (``rank`` sorted them)
            key = json.dumps([rec.run, rec.data["pipeline"]["training"]], sort_keys=True, default=str)
            row = rows.setdefault(key, RecipeRow(rec.run, rec))
            row.cells.setdefault(g.fingerprint, rec)
    ordered = sorted(rows.values(), key=lambda r: (not r.lead.training_stages, r.run))
    return columns, ordered


def _markup(svg: str) -> Any:
    """Trusted markup: SVG made by ``plots`` (text escaped by matplotlib, checked by ``plots.to_svg``) or
    JSON made by ``script_json``."""
    from markupsafe import Markup

    return Markup(svg)


def _result_page(env: Any, common: dict[str, Any], out: Path, g: Protocol, rec: Record, page: str) -> None:
    samples = samples_of(rec)
    link = None
    if samples is not None:
        link = f"{page}.samples.jsonl"
        shutil.copyfile(samples, out / "results" / link)
    enc = rec.data["pipeline"]["encoder"]
    html = env.get_template("result.html").render(
        **common, root="../", g=g, rec=rec, family=rec.family_label, samples=link,
        weights=enc.get("weights") if isinstance(enc.get("weights"), str) else "",
        failures=rec.data["failures"],
        record_json=json.dumps(rec.data, indent=2, ensure_ascii=False, sort_keys=False),
    )
    (out / "results" / f"{page}.html").write_text(html, encoding="utf-8")
