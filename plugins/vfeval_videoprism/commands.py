"""``vfeval convert videoprism SRC DST``: between the official ``.npz`` layout and the hf (transformers) layout.

Only typer is imported here; numpy and safetensors when the command runs. Neither torch nor jax is needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from vfeval.errors import UsageError


def convert(src: Path, dst: Path, tokenizer: Path | None = None, overwrite: bool = False) -> str:
    """Convert ``src`` (an official ``.npz`` or an hf folder) into the other layout at ``dst``; returns what
    was written. Arrays are moved and reshaped, never recomputed: a round trip gives the same bytes."""
    from vfeval_videoprism import checkpoint
    from vfeval_videoprism.inputs import TOKENIZER_FILES

    src, dst = src.expanduser(), dst.expanduser()
    if dst.exists() and not overwrite and (dst.is_file() or any(dst.iterdir())):
        raise UsageError(f"convert: {str(dst)!r} exists; remove it or pass --overwrite")
    if src.is_file() and src.suffix == ".npz":
        if dst.suffix == ".npz":
            raise UsageError(f"convert: {str(src)!r} is an official .npz; DST must be a folder for the hf layout")
        state, config = checkpoint.official_to_hf(checkpoint.read_official(src))
        checkpoint.write_hf(state, config, dst)
        if tokenizer is not None:
            copied = [f for f in TOKENIZER_FILES if (tokenizer / f).is_file()]
            if not copied:
                raise UsageError(f"convert: --tokenizer {str(tokenizer)!r} holds none of {', '.join(TOKENIZER_FILES)}")
            for f in copied:
                shutil.copy2(tokenizer / f, dst / f)
        return f"hf folder {dst} ({len(state)} tensors, {config['architectures'][0]})"
    if src.is_dir():
        if dst.suffix != ".npz":
            raise UsageError(f"convert: {str(src)!r} is an hf folder; DST must be a file ending in .npz")
        state, config = checkpoint.read_hf(src)
        params = checkpoint.hf_to_official(state, config)
        dst.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_official(params, dst)
        return f"official checkpoint {dst} ({len(params)} arrays)"
    raise UsageError(f"convert: {str(src)!r} is neither an official .npz file nor an hf folder")


def add_convert_command(app: typer.Typer) -> None:
    convert_app = typer.Typer(help="Convert checkpoints between layouts.", no_args_is_help=True)

    @convert_app.command("videoprism")
    def videoprism(
        src: Path = typer.Argument(..., help="An official VideoPrism .npz, or an hf folder (config.json + "
                                             "model.safetensors)."),
        dst: Path = typer.Argument(..., help="A folder (from an .npz) or a .npz file (from a folder)."),
        tokenizer: Path | None = typer.Option(None, help="A folder whose tokenizer files are copied into the hf "
                                                         "folder (npz -> hf only)."),
        overwrite: bool = typer.Option(False, help="Replace DST if it exists."),
    ) -> None:
        """VideoPrism: official .npz <-> transformers (hf) layout, both ways, bit-exact."""
        typer.echo(f"wrote {convert(src, dst, tokenizer, overwrite)}")

    app.add_typer(convert_app, name="convert")
