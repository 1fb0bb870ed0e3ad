"""``vfeval profile``: memory and throughput of an encoder over frames x masking x trainable layers.

Only typer is imported here; the measuring code (and torch, in its worker processes) when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vfeval.errors import UsageError


def _numbers(text: str, kind: type, option: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise UsageError(f"{option} must be comma-separated {kind.__name__}s, got {text!r}") from exc
    if not values:
        raise UsageError(f"{option} is empty")
    return values


def _layers(text: str) -> list[int]:
    """'all,4,1' → [-1, 4, 1] (-1: every layer learns)."""
    return _numbers(text.replace("all", "-1"), int, "--trainable-layers")


def _options(overrides: list[str]) -> dict:
    from omegaconf import OmegaConf

    for item in overrides:
        if "=" not in item:
            raise UsageError(f"encoder option {item!r} must look like key=value (e.g. variant=tiny)")
    return OmegaConf.to_container(OmegaConf.from_dotlist(overrides))


def add_profile_command(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_command(
        overrides: list[str] | None = typer.Argument(
            None, help="Encoder options as key=value, e.g. variant=tiny image_size=64 'tubelet=[2,8,8]'."
        ),
        encoder: str = typer.Option("videofirst", help="A registered encoder (training steps: videofirst only)."),
        frames: str = typer.Option("8,16,32", help="Frame counts, comma-separated."),
        mask_ratios: str = typer.Option("0,0.75", help="Fractions of tokens dropped, comma-separated."),
        trainable_layers: str = typer.Option("all", help="Last K blocks that learn in a training step ('all' or K)."),
        kinds: str = typer.Option("train,infer", help="What to measure: train, infer or both."),
        batch: int = typer.Option(2, help="Clips per training step."),
        infer_batch: int = typer.Option(1, help="Clips per inference call."),
        steps: int = typer.Option(2, help="Timed steps per configuration, after one warm-up step."),
        device: str = typer.Option("auto", help="auto, cpu or cuda."),
        optimizer: bool = typer.Option(True, help="Include the AdamW update in a training step."),
        size: int = typer.Option(0, help="Frame size for encoders other than videofirst (0: 224)."),
        out: Path = typer.Option(Path("profile.json"), help="Where to write the JSON report."),
    ) -> None:
        """Peak memory and throughput of training steps and inference, each configuration in a fresh process."""
        from rich.table import Table

        from vfeval.console import make_console
        from vfeval_videofirst.profile import grid, profile

        rows = grid(
            _numbers(frames, int, "--frames"),
            _numbers(mask_ratios, float, "--mask-ratios"),
            _layers(trainable_layers),
            [k.strip() for k in kinds.split(",") if k.strip()],
        )
        if batch < 1 or infer_batch < 1 or steps < 1:
            raise UsageError("--batch, --infer-batch and --steps must be at least 1")
        console = make_console()
        with console.status(f"measuring {len(rows)} configurations, one process each") as status:

            def seen(row: dict) -> None:
                status.update(f"measured {row['kind']} {row['frames']} frames, mask {row['mask_ratio']}")

            report = profile(
                encoder,
                _options(list(overrides or [])),
                rows,
                batch=batch,
                infer_batch=infer_batch,
                steps=steps,
                device=device,
                optimizer=optimizer,
                size=size,
                on_row=seen,
            )
        table = Table(title=f"{encoder} profile ({report['device']}, {report['provenance']['cpus']} CPUs)")
        for column in ("kind", "frames", "mask", "trainable", "batch", "tokens", "peak MiB", "inputs MiB", "step s",
                       "clips/s"):
            table.add_column(column, justify="left" if column == "kind" else "right")
        for r in report["rows"]:
            layers = r["trainable_layers"]
            table.add_row(
                r["kind"],
                str(r["frames"]),
                f"{r['mask_ratio']:g}",
                "-" if layers is None else ("all" if layers < 0 else str(layers)),
                str(r["batch"]),
                "-" if r["tokens"] is None else str(r["tokens"]),
                f"{r['peak_mib']:.0f}",
                "-" if r.get("args_mib") is None else f"{r['args_mib']:.0f}",
                f"{r['step_s']:.3f}",
                f"{r['clips_per_s']:.2f}",
            )
        console.print(table)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")  # renamed once whole: a killed run leaves no torn report
        partial.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        partial.replace(out)
        console.print(f"report: {out}", soft_wrap=True)
