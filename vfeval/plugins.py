"""The plugin host: finds plugins through the ``vfeval`` entry-point group and collects what they register.

- ``get_plugin_manager()`` builds a fresh ``pluggy.PluginManager`` (no global is built at import time).
- A plugin that fails to import is recorded in ``host.failures`` and skipped, so one broken plugin never takes
  the CLI down; ``VFEVAL_STRICT_PLUGINS=1`` makes the failure fatal.
- ``VFEVAL_PLUGINS=a,b`` loads only the entry points with those names (tests use it so that plugins that
  happen to be installed stay out of their way); ``VFEVAL_PLUGINS=`` (empty) loads none.
- A name that two plugins register is unusable, with an error naming both; every other name works
  (``VFEVAL_STRICT_PLUGINS=1`` makes the conflict fatal too).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import pluggy

from vfeval import hookspecs
from vfeval.errors import UsageError
from vfeval.specs import AggregatorSpec, DecoderSpec, EncoderSpec, Registry, TaskSpec, TrainerSpec

GROUP = "vfeval"
from vfeval import hookimpl  # noqa: E402,F401  (re-exported)


@dataclass
class PluginFailure:
    name: str
    target: str
    error: str
    detail: str = ""


@dataclass
class PluginInfo:
    name: str
    target: str
    distribution: str
    version: str


@dataclass
class Host:
    """A plugin manager with its loaded plugins, failures, and the registry they filled."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            registry = collect(self.pm, self._hook_failed)
            if registry.contested and _strict():
                kind, name = next(iter(registry.contested))
                raise UsageError(registry.conflict_message(kind, name))
            registry.failed = {f.name: _one_line(f.error) for f in self.failures}
            self._registry = registry
        return self._registry

    def _hook_failed(self, plugin: str, hook: str, exc: BaseException) -> None:
        """A plugin whose hook raises is reported like one that fails to import, and skipped."""
        failure = PluginFailure(plugin, hook, f"{type(exc).__name__} in {hook}: {exc}", traceback.format_exc())
        if _strict():
            raise UsageError(f"plugin {plugin!r} failed in {hook}: {failure.error}") from exc
        self.failures.append(failure)

    def add_commands(self, app: Any) -> None:
        """Let every plugin add sub-commands; a failing plugin is reported and the others still load."""
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(app=app)
            except Exception as exc:
                self._hook_failed(impl.plugin_name, "register_commands", exc)

    def register(self, plugin: Any, name: str) -> None:
        """Register a plugin object directly (tests, embedding); invalidates the collected registry."""
        self.pm.register(plugin, name=name)
        self.pm.check_pending()
        self.plugins.append(PluginInfo(name, getattr(plugin, "__name__", repr(plugin)), "", ""))
        self._registry = None

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.plugins = [p for p in self.plugins if p.name != name]
        self._registry = None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _strict() -> bool:
    return os.environ.get("VFEVAL_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def _allowed() -> set[str] | None:
    value = os.environ.get("VFEVAL_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def get_plugin_manager(load_entrypoints: bool = True) -> Host:
    """A new host with the hook specs added and (by default) every ``vfeval`` entry point loaded."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    host = Host(pm)
    if not load_entrypoints:
        return host
    allowed = _allowed()
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.has_plugin(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
            pm.check_pending()
        except Exception as exc:  # a broken plugin must not take the others down
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
            failure = PluginFailure(ep.name, ep.value, f"{type(exc).__name__}: {exc}", traceback.format_exc())
            if _strict():
                raise UsageError(f"plugin {ep.name!r} ({ep.value}) failed to load: {failure.error}") from exc
            host.failures.append(failure)
            continue
        host.plugins.append(
            PluginInfo(ep.name, ep.value, dist.metadata["Name"] if dist else "", dist.version if dist else "")
        )
    return host


_HOOKS = {
    "tasks": ("register_tasks", TaskSpec),
    "encoders": ("register_encoders", EncoderSpec),
    "aggregators": ("register_aggregators", AggregatorSpec),
    "trainers": ("register_trainers", TrainerSpec),
    "decoders": ("register_decoders", DecoderSpec),
}


def collect(pm: pluggy.PluginManager, on_error: Any = None) -> Registry:
    """Call every registration hook and build the registry.

    A name registered by several plugins is contested (``Registry.contested``): only that name is unusable.
    ``on_error(plugin, hook, exc)`` is told of a hook that raised (including registering something that is
    not a spec of the hook's type); the plugin's other hooks still run and the other plugins are unaffected.
    Without ``on_error`` the exception propagates.
    """
    registry = Registry()
    for kind, (hook_name, spec_type) in _HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            plugin_name = impl.plugin_name

            def register(spec: Any, _plugin: str = plugin_name, _kind: str = kind, _type: type = spec_type,
                         _hook: str = hook_name) -> None:
                if not isinstance(spec, _type):
                    raise UsageError(
                        f"plugin {_plugin!r} registered {type(spec).__name__} through {_hook}; "
                        f"expected {_type.__name__}"
                    )
                registry.add(_kind, replace(spec, plugin=_plugin))

            try:
                impl.function(register=register)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(plugin_name, hook_name, exc)
    return registry


def plugin_versions(host: Host) -> dict[str, str]:
    """``{plugin name: 'distribution version'}`` for provenance."""
    return {p.name: f"{p.distribution} {p.version}".strip() for p in host.plugins}
