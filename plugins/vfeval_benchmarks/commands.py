"""``vfeval data ...``: commands that make data for the benchmark tasks.

Only typer and rich are imported here; the generator (numpy, PyAV) is imported when a command runs,
so that ``vfeval --help`` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer


def _describe(path: Path) -> tuple[str, str]:
    """``(number of files, total size)`` of a file or folder, for the summary table."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    return str(len(files)), f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def add_data_commands(app: typer.Typer) -> None:
    """Add the ``data`` sub-app (``vfeval data synthetic ...``) to ``app``."""
    data_app = typer.Typer(help="Make data for vfeval's tasks.", no_args_is_help=True)

    @data_app.command("synthetic")
    def synthetic(
        out: Path = typer.Option(
            ..., "--out", help="Folder to write into: new, empty, or written by this command before."
        ),
        seed: int = typer.Option(0, help="Same seed and sizes give the same files."),
        videos: int = typer.Option(
            100, help="Evaluation videos per format (EgoSchema questions, MSR-VTT test, YouCook2 validation)."
        ),
        train_videos: int = typer.Option(1000, help="Captioned training videos (0 for none)."),
        formats: list[str] = typer.Option(
            ["egoschema"], help="Benchmark formats to write, any of egoschema, msrvtt, youcook2, order (the "
            "synthetic_order probe); repeat or "
            "comma-separate (e.g. --formats egoschema,msrvtt,youcook2)."
        ),
        size: int = typer.Option(64, help="Frame width and height in pixels (even)."),
        fps: int = typer.Option(4, help="Frames per second."),
        duration: float = typer.Option(24.0, help="Seconds per video."),
        events: int = typer.Option(4, help="Shapes per video, one per equal time slot (at most 6)."),
        workers: int = typer.Option(0, help="Processes writing videos (0: one per core)."),
    ) -> None:
        """Write synthetic long videos in the real benchmarks' file formats, with a training split.

        For running every task end to end offline; scores on it are not comparable to real benchmark scores.
        """
        from rich.table import Table

        from vfeval.console import make_console
        from vfeval_benchmarks.synthetic import write_synthetic

        names = [name.strip() for value in formats for name in value.split(",") if name.strip()]
        start = time.perf_counter()
        written = write_synthetic(
            out,
            seed=seed,
            formats=names,
            n_videos=videos,
            n_train_videos=train_videos,
            duration=duration,
            n_events=events,
            fps=fps,
            size=size,
            workers=workers or None,
        )
        table = Table(title=f"synthetic data, seed {seed} (not comparable to real benchmark numbers)")
        for column, justify in (("part", "left"), ("path", "left"), ("files", "right"), ("size", "right")):
            table.add_column(column, justify=justify)
        for part, path in written.items():
            table.add_row(part, str(path), *_describe(path))
        console = make_console()
        console.print(table)
        console.print(f"written in {time.perf_counter() - start:.1f} s")

    app.add_typer(data_app, name="data")
