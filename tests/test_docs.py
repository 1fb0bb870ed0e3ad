"""Docs that cannot drift: every hook is documented for plugin authors, every CLI command in the README."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import typer

from vfeval import hookspecs
from vfeval.cli import build_app
from vfeval.plugins import get_plugin_manager
from vfeval.requests import KINDS

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DOC = REPO / "docs" / "plugins.md"
README = REPO / "README.md"


def hook_names() -> list[str]:
    """Functions of vfeval.hookspecs that carry pluggy's spec marker."""
    return sorted(
        name
        for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and hasattr(obj, "vfeval_spec")
    )


def core_commands() -> list[str]:
    """Top-level commands and command groups of the core CLI, without any plugin's."""
    app = build_app(get_plugin_manager(load_entrypoints=False))
    return sorted(typer.main.get_command(app).commands)


def documented(text: str, name: str) -> bool:
    heading = re.search(rf"^#+ .*\b{re.escape(name)}\b", text, re.MULTILINE)
    code = re.search(rf"`{re.escape(name)}[`(]", text)
    return bool(heading or code)


def test_the_hookspecs_are_found():
    names = hook_names()
    assert {"register_tasks", "register_encoders", "register_commands"} <= set(names)
    assert all(name.startswith("register_") for name in names)


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_in_the_plugin_guide(hook):
    assert documented(PLUGINS_DOC.read_text(encoding="utf-8"), hook), (
        f"docs/plugins.md does not document {hook}"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_request_kind_is_in_the_plugin_guide(kind):
    assert f"`{kind}`" in PLUGINS_DOC.read_text(encoding="utf-8")


def test_the_core_commands_are_found():
    assert {"run", "ls", "plugins"} <= set(core_commands())


@pytest.mark.parametrize("command", core_commands())
def test_every_core_command_is_in_the_readme(command):
    if not README.is_file():
        pytest.skip("README.md does not exist yet")
    text = README.read_text(encoding="utf-8")
    assert re.search(rf"vfeval {re.escape(command)}\b", text) or f"`{command}`" in text, (
        f"README.md does not mention `vfeval {command}`"
    )
