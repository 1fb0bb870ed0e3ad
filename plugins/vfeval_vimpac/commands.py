"""``vfeval convert dvae --from-pickle encoder.pkl --out dvae.safetensors``: the one-time conversion of the
official DALL-E dVAE encoder into a tokenizer file. Only typer is imported here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def _convert_group(app: Any) -> typer.Typer:
    """The ``convert`` sub-command group, shared with other plugins' conversions when one exists."""
    for group in getattr(app, "registered_groups", []):
        if group.name == "convert" and group.typer_instance is not None:
            return group.typer_instance
    group = typer.Typer(help="Convert checkpoints between layouts.", no_args_is_help=True)
    app.add_typer(group, name="convert")
    return group


def add_convert_command(app: Any) -> None:
    group = _convert_group(app)

    @group.command("dvae")
    def dvae(
        from_pickle: Path = typer.Option(..., "--from-pickle", help="The official dVAE encoder.pkl (a pickled "
                                         "torch module); read once, with a restricted unpickler."),
        out: Path = typer.Option(..., "--out", help="The tokenizer file to write (.safetensors)."),
        overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    ) -> None:
        """DALL-E dVAE encoder: official pickle -> tokenizer .safetensors (VIMPAC's tokenizer, 8192 codes)."""
        from vfeval_vimpac.tokenizer import convert_dvae

        typer.echo(f"wrote {convert_dvae(from_pickle, out, overwrite)}")
