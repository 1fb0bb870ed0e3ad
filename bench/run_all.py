"""Run every benchmark and write bench/RESULTS.md: the machine, the date, and every figure with its spread.

    python bench/run_all.py                  # every benchmark at its default size (about an hour on 2 cores)
    python bench/run_all.py --quick          # every benchmark at a tiny size: proves each one runs
    python bench/run_all.py --quickstart     # also time the quickstart's phases in a fresh clone (~10-20 min)
    python bench/run_all.py --only masking metrics

Each benchmark runs in its own process, one after the other (never two at once: they would time each
other): those named in ``BENCHES`` with their settings, then any other script in bench/ at its defaults. Those that take ``--json`` (built on ``bench/harness.py``) give figures with their spread and
target; the others' printed tables are included as they are. When torch sees a GPU, ``masking.py`` runs a
second time with ``--device cuda`` (bf16 MFU, the frames that fit the GPU's memory at 75% masking).

``--quickstart`` clones this repository's last commit into a temporary folder and runs
``vfeval run configs/quickstart.yaml`` there, as a new user would, timing each line the suite prints; the
phases are data (everything before the first training stage), each training stage (its trainer's own
clock, from its metrics.jsonl), the evaluations and the site.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name: (script, full-size arguments, --quick arguments)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "masking": ("masking.py", [], ["--variant", "tiny", "--size", "64", "--frames", "8", "--rounds", "2",
                                   "--matmul", "256", "--regime-frames", "16", "32", "--regime-size", "64",
                                   "--regime-rounds", "1", "--budget-gib", "1"]),
    "metrics": ("metrics.py", [], ["--n", "2000", "--repeats", "2"]),
    "decode": ("decode.py", [], ["--quick", "--repeat", "1"]),
    "llm_scoring": ("llm_scoring.py", [], ["--prefix", "256", "--questions", "2", "--repeat", "2",
                                           "--width", "128", "--layers", "2"]),
    "trainer": ("trainer.py", [], ["--rounds", "1", "--steps", "1", "--clips", "4"]),
    "pipeline": ("pipeline.py", [], ["--videos", "4", "--memory-videos", "20"]),
    "feature_store": ("feature_store.py", [], ["--videos", "8"]),
    "cache": ("cache.py", [], ["--videos", "20", "--seconds", "2", "--replace", "2"]),
    "backends": ("backends.py", [], ["--variants", "tiny", "--frames", "8", "--size", "64", "--rounds", "1"]),
}


def discover() -> dict[str, tuple[str, list[str], list[str] | None]]:
    """``BENCHES``, and any other script in bench/ (run at its defaults; skipped by --quick, which knows no
    small settings for it)."""
    found: dict[str, tuple[str, list[str], list[str] | None]] = dict(BENCHES)
    for path in sorted(HERE.glob("*.py")):
        if path.stem not in found and path.stem not in ("harness", "run_all") and not path.stem.startswith("_"):
            found[path.stem] = (path.name, [], None)
    return found


def supports_json(script: Path) -> bool:
    return '"--json"' in script.read_text()


def run_bench(name: str, quick: bool, extra: list[str], out_dir: Path) -> dict:
    """Run one benchmark script; returns its JSON figures, or its printed output when it has none."""
    script, full, small = discover()[name]
    path = HERE / script
    if not path.exists():
        return {"bench": name, "error": f"{path.relative_to(ROOT)} does not exist"}
    if quick and small is None:
        return {"bench": name, "skipped": "no --quick settings are known for it; run without --quick"}
    args = [sys.executable, str(path), *(small if quick else full), *extra]
    json_path = out_dir / f"{name}{'-'.join([''] + [a.strip('-') for a in extra])}.json"
    if supports_json(path):
        args += ["--json", str(json_path)]
    print(f"$ {' '.join(args[1:])}", flush=True)
    start = time.perf_counter()
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    print(out.stdout[-4000:], flush=True)
    if out.returncode:
        lines = [x for x in out.stderr.strip().splitlines() if x.strip()]
        return {"bench": name, "error": lines[-1] if lines else f"exit code {out.returncode}", "wall_s": wall,
                "command": " ".join(args[1:-2] if "--json" in args else args[1:])}
    result = json.loads(json_path.read_text()) if json_path.exists() else {"bench": name, "stdout": out.stdout}
    shown = args[1:-2] if args[-2:] == ["--json", str(json_path)] else args[1:]
    result.update(wall_s=wall, command=" ".join(str(Path(a).relative_to(ROOT)) if a == str(path) else a
                                                for a in shown))
    return result


# ---------------------------------------------------------------------------------------------------
# The quickstart's phases


SUITE_TRAIN = re.compile(r"^train (\S+): ")  # the suite's line as a training stage starts (not the progress bar)


def phases(timeline: list[tuple[float, str]], total: float, trained: dict[str, float]) -> list[tuple[str, float]]:
    """Seconds of each phase, from the suite's printed lines, when each arrived, and the trainers' own clocks.

    timeline: (seconds since start, line); trained: run folder -> seconds its trainer reports (the last
    ``elapsed`` of its metrics.jsonl). Data is everything before the suite's first ``train NAME:`` line; the
    site everything from its first ``leaderboard`` line on; evaluations what lies between, less training."""
    starts = [t for t, line in timeline if SUITE_TRAIN.match(line)]
    site = next((t for t, line in timeline if line.startswith("leaderboard")), total)
    first_train = starts[0] if starts else site
    out = [("data (prepare steps, before the first training stage)", first_train)]
    out += [(f"training {name}", seconds) for name, seconds in sorted(trained.items())]
    out.append(("evaluations (every run of every task)", max(0.0, site - first_train - sum(trained.values()))))
    out.append(("leaderboard site", max(0.0, total - site)))
    return out


def trained_seconds(clone: Path) -> dict[str, float]:
    """Each training run's own clock: the last ``elapsed`` in runs/*/metrics.jsonl."""
    out = {}
    for metrics in sorted(clone.glob("runs/*/metrics.jsonl")):
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if records and "elapsed" in records[-1]:
            out[metrics.parent.name] = float(records[-1]["elapsed"])
    return out


def quickstart(keep: Path | None) -> dict:
    """Clone the last commit, run the quickstart in the clone, and time its phases."""
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="vfeval-quickstart-"))
    clone = folder / "vfeval"
    if not clone.exists():
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    # -P: the installed vfeval, not the clone's folder on sys.path (the same code once committed).
    cmd = [sys.executable, "-P", "-m", "vfeval", "run", "configs/quickstart.yaml"]
    print(f"$ (cd {clone} && {' '.join(cmd[1:])})", flush=True)
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    start = time.perf_counter()
    timeline: list[tuple[float, str]] = []
    with subprocess.Popen(cmd, cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            timeline.append((time.perf_counter() - start, line.strip()))
            print(f"{timeline[-1][0]:7.1f} s  {line}", end="", flush=True)
    total = time.perf_counter() - start
    if proc.returncode:
        return {"error": f"the quickstart failed (exit code {proc.returncode}); its output is above",
                "wall_s": total}
    return {"wall_s": total, "phases": phases(timeline, total, trained_seconds(clone)), "folder": str(folder)}


# ---------------------------------------------------------------------------------------------------
# RESULTS.md


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def render(info: dict, results: list[dict], qs: dict | None, quick: bool) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    lines = [
        "# Benchmark results",
        "",
        "Written by `python bench/run_all.py" + (" --quick" if quick else "") + "`; every figure below was measured "
        "on this machine in that run. Ratios are formed from timings of the same interleaved rounds in one "
        "process (best of N, the spread is the range of the per-round ratios); peaks of memory are measured each "
        "in a fresh process.",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| date (UTC) | {info['date']} |",
        f"| CPU | {info['cpu']} |",
        f"| cores | {info['cores']} ({info['usable_cores']} usable) |",
        f"| load average at start | {info['load_average']} |",
        f"| Python | {info['python']} on {info['platform']} |",
        f"| libraries | {libs} |",
    ]
    if info.get("gpu"):
        lines.append(f"| GPU | {info['gpu']} |")
    if quick:
        lines += ["", "**`--quick`: tiny sizes that prove each benchmark runs; these figures say nothing about "
                  "speed.**"]
    lines += ["", "| benchmark | figure | value | unit | spread | target | |", "| --- | --- | --- | --- | --- | --- | --- |"]
    texts = []
    for r in results:
        name = r.get("bench", "?")
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        for f in r.get("figures", []):
            spread = f"{_fmt(f['low'])} - {_fmt(f['high'])} ({f['rounds']} rounds)" if f["rounds"] > 1 else "1 run"
            verdict = "" if f["met"] is None else ("met" if f["met"] else "**not met**")
            lines.append(f"| {name} | {f['name']} | {_fmt(f['value'])} | {f['unit']} | {spread} | {f['target']} | "
                         f"{verdict} |")
        if "stdout" in r:
            texts.append((name, r["command"], r["stdout"]))
    if qs is not None:
        lines += ["", "## The quickstart, from a fresh clone", ""]
        if "error" in qs:
            lines.append(f"failed: {qs['error']}")
        else:
            lines += ["| phase | seconds |", "| --- | --- |"]
            lines += [f"| {p} | {s:.0f} |" for p, s in qs["phases"]]
            lines.append(f"| **total** | **{qs['wall_s']:.0f}** ({qs['wall_s'] / 60:.1f} min) |")
    for name, command, stdout in texts:
        lines += ["", f"## {name}", "", f"`python {command}` printed:", "", "```", stdout.rstrip(), "```"]
    lines += ["", "## Commands", ""]
    lines += [f"- {r.get('bench')}: `python {r['command']}` ({r['wall_s']:.0f} s)" for r in results if "command" in r]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that every benchmark runs")
    parser.add_argument("--only", nargs="+", choices=list(discover()), help="run these benchmarks only")
    parser.add_argument("--quickstart", action="store_true", help="also time the quickstart (minutes)")
    parser.add_argument("--keep", type=Path, help="folder for the quickstart's clone (kept; default: a temp folder)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ns = parser.parse_args()

    info = machine()
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    info["gpu"] = gpu
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ns.only or list(discover()):
            results.append(run_bench(name, ns.quick, [], Path(tmp)))
            if name == "masking" and gpu:
                results.append(run_bench(name, ns.quick, ["--device", "cuda"], Path(tmp)))
                results[-1]["bench"] = "masking (GPU)"
    qs = quickstart(ns.keep) if ns.quickstart else None
    ns.out.write_text(render(info, results, qs, ns.quick))
    print(f"wrote {ns.out}")
    failed = [r["bench"] for r in results if "error" in r]
    if failed:
        print(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
