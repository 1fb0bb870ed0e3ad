"""``vfeval csv-mc-template``: writes a questions.csv to start a ``csv-mc`` dataset from."""

from __future__ import annotations

import csv
from pathlib import Path

import typer

from vfeval.errors import UsageError

EXAMPLE_ROWS = (
    ("videos/red.mp4", "Which colour fills the video?", ("red", "green", "blue", "yellow"), "0"),
    # An empty answer: the question is predicted and logged but not scored.
    ("videos/blue.mp4", "Which colour fills the video?", ("yellow", "blue", "red", "green"), ""),
)


def csv_mc_template(
    out: Path = typer.Option(..., "--out", help="Where to write the CSV."),
    options: int = typer.Option(4, help="Number of option columns (option_0..option_{N-1})."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write an example questions.csv for the csv-mc task (header and two rows to edit)."""
    if options < 2:
        raise UsageError(f"--options must be at least 2, not {options}")
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "question", *(f"option_{i}" for i in range(options)), "answer"])
        for video, question, opts, answer in EXAMPLE_ROWS:
            cells = list(opts[:options]) + [""] * max(0, options - len(opts))
            writer.writerow([video, question, *cells, answer])
    print(f"wrote {out}; put the videos under the same folder and run with task.name=csv-mc task.root=DIR")
