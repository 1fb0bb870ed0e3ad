"""The ``vfeval`` command line.

Exit codes: 0 done, 1 the run failed, 2 a usage or config error (one line naming the key or file).
Nothing heavy is imported here: ``vfeval --help``, ``vfeval ls`` and ``vfeval plugins`` stay fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from vfeval.console import make_console
from vfeval.errors import UsageError
from vfeval.plugins import Host, get_plugin_manager

KINDS = ("tasks", "encoders", "aggregators", "trainers", "decoders")
out = make_console()
err = make_console(stderr=True)


def _fmt_metric(m: dict) -> str:
    ci = m.get("ci95")
    if m["value"] is None:  # nothing could be scored
        return "—"
    if ci and ci[0] is not None:
        return f"{m['value']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
    return f"{m['value']:.4g}"


def print_summary(result: dict, run_dir: Path, stats: dict | None = None) -> None:
    table = Table(title=f"{result['task']['name']} / {result['task']['split']} — {result['run']['name']}")
    table.add_column("metric")
    table.add_column("value [95% CI]", justify="right")
    for name, m in result.get("metrics", {}).items():
        star = " *" if name == result.get("headline") else ""
        table.add_row(name + star, _fmt_metric(m))
    out.print(table)
    t = result["task"]
    out.print(f"samples: {t['n']}  failed: {t['n_failed']}  complete: {result['complete']}")
    if stats:
        out.print(
            f"requests: {stats['requests']} (cached {stats['cached']}, computed {stats['computed']}); "
            f"windows decoded {stats['windows_decoded']}, from feature store {stats['windows_from_store']}"
        )
    for note in result.get("notes", []):
        out.print(f"note: {note}")
    for label, path in result.get("outputs", {}).items():
        out.print(f"{label}: {path}")
    out.print(f"results: {run_dir / 'results.json'}")


def _check_results_file(run_dir: Path) -> None:
    """A ``results.json`` that ``vfeval rescore`` can read, or a one-line ``UsageError`` naming the file."""
    import json

    path = run_dir / "results.json" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise UsageError(f"no results.json at {path}; pass a run folder written by `vfeval run`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not a JSON results file ({_one_line(str(exc))})") from exc
    except RecursionError as exc:
        raise UsageError(f"{path} is nested too deeply to be a results file") from exc
    config = data.get("run", {}).get("config") if isinstance(data, dict) and isinstance(data.get("run"), dict) else None
    if not isinstance(config, dict):
        raise UsageError(f"{path} has no run.config mapping: it is not a results.json written by `vfeval run`")


def _cache_folder(cache_dir: Path) -> Path:
    from vfeval.config import check_folder

    return check_folder(cache_dir, "--cache-dir (or $VFEVAL_CACHE)")


def build_app(host: Host) -> typer.Typer:
    app = typer.Typer(
        name="vfeval", no_args_is_help=True, add_completion=False,
        help="Evaluate video encoders on long-video benchmarks under one protocol.",
    )

    @app.command()
    def run(
        config: Path = typer.Argument(..., help="Run config YAML (see configs/)."),
        overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. task.root=/data"),
        limit: int | None = typer.Option(None, help="Score only the first N samples (a quick look)."),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Decode videos that failed before again."),
        name: str | None = typer.Option(None, help="Run name (folder under output.dir)."),
    ) -> None:
        """Run a task with a pipeline, or a suite config; resumes from the cache; writes runs/<name>/results.json."""
        from vfeval.config import check_paths, check_run_name, load_run_config
        from vfeval.runner import run as run_task
        from vfeval.suite import is_suite

        if limit is not None and limit < 1:
            raise UsageError(f"--limit {limit}: score at least 1 sample (leave --limit out to score them all)")
        if is_suite(config):
            _single_process("a suite config")
            _run_suite(config, list(overrides or []), limit, retry_failed, name)
            return
        extra = list(overrides or [])
        if limit is not None:
            extra.append(f"run.limit={limit}")
        if retry_failed:
            extra.append("run.retry_failed=true")
        cfg = load_run_config(config, extra, host.registry)
        if name is not None:  # a plain name, never parsed as YAML or interpolated
            cfg.output.name = check_run_name(name, "--name")
        check_paths(cfg)  # before anything is computed
        outcome = _as_rank(lambda world: run_task(cfg, host, world=world))
        if outcome is not None:  # rank 0 (or the only process) reports; the other ranks' answers are in it
            print_summary(outcome.result, outcome.run_dir, outcome.stats.to_dict())

    @app.command()
    def extract(
        config: Path = typer.Argument(..., help="Run config YAML (the same one `vfeval run` will use)."),
        overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. task.root=/data"),
        limit: int | None = typer.Option(None, help="Only the first N samples' videos."),
    ) -> None:
        """Fill the feature store with a task's video features, scoring nothing; under torchrun every rank
        takes its share. `vfeval run` with the same config then decodes no video, at any number of processes."""
        from vfeval.config import check_paths, load_run_config
        from vfeval.runner import extract as run_extract
        from vfeval.suite import is_suite

        if limit is not None and limit < 1:
            raise UsageError(f"--limit {limit}: extract at least 1 sample (leave --limit out for all)")
        if is_suite(config):
            raise UsageError(f"{config} is a suite; `vfeval extract` takes one run config")
        cfg = load_run_config(config, [*(overrides or []), *([f"run.limit={limit}"] if limit else [])],
                              host.registry)
        check_paths(cfg)
        summary = _as_rank(lambda world: run_extract(cfg, host, world=world))
        if summary is None:
            return
        world = summary["world"]
        out.print(f"windows: {summary['windows']} (already stored {summary['already_stored']}, decoded and "
                  f"encoded now {summary['decoded']}, failed to decode {summary['failed']})")
        for rank in world["ranks"]:
            out.print(f"rank {rank['rank']} of {world['world_size']}: {rank['windows_decoded']} windows in "
                      f"{rank['compute_s']} s ({rank['per_s']} windows/s)")
        out.print(f"feature store: {summary['cache_dir']} ({summary['wall_s']} s)", soft_wrap=True)

    def _single_process(what: str) -> None:
        import os

        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 or int(os.environ.get("JAX_NUM_PROCESSES", "1") or 1) > 1:
            raise UsageError(f"{what} runs in one process; start each of its run configs under torchrun instead")

    def _as_rank(body: Any) -> Any:
        """Join the job the environment describes (torchrun, jax.distributed; or none) and run ``body(world)``
        as this rank. A rank that fails prints its error naming itself; the others stop with exit code 1
        naming it. Returns what ``body`` returned on rank 0, None on the other ranks."""
        import traceback

        from vfeval.distributed import RankFailed, join

        world = join()
        try:
            value = body(world)
        except RankFailed as exc:
            err.print(f"error: rank {world.rank} of {world.size} stopped: {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(1) from exc
        except UsageError as exc:
            if world.distributed:
                raise UsageError(f"rank {world.rank} of {world.size}: {exc}") from exc
            raise
        except Exception as exc:
            if not world.distributed:
                raise
            traceback.print_exc()
            err.print(f"error: rank {world.rank} of {world.size} failed: {type(exc).__name__}: "
                      f"{escape(_one_line(str(exc)))}", soft_wrap=True)
            raise typer.Exit(1) from exc
        world.close()
        return value if world.main else None

    def _run_suite(config: Path, overrides: list[str], limit: int | None, retry_failed: bool,
                   name: str | None) -> None:
        from vfeval.suite import SuiteFailed, load_suite, run_suite

        if name:
            raise UsageError("--name does not apply to a suite: it names each run after its task and pipeline")
        suite = load_suite(config, overrides)
        try:
            run_suite(suite, host, out, limit=limit, retry_failed=retry_failed)
        except SuiteFailed as exc:
            err.print(f"[red]suite {suite.name} failed:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from exc

    @app.command()
    def rescore(run_dir: Path = typer.Argument(..., help="A run folder written by `vfeval run`.")) -> None:
        """Recompute metrics from a run's saved answers, without the model or the videos."""
        from vfeval.runner import rescore as do_rescore

        _check_results_file(run_dir)
        old, new = do_rescore(run_dir, host)
        same = old.get("metrics") == new.get("metrics")
        print_summary(new, run_dir if run_dir.is_dir() else run_dir.parent)
        out.print("metrics unchanged" if same else "metrics changed from the saved ones")

    @app.command("ls")
    def ls(kind: str | None = typer.Argument(None, help="tasks, encoders, aggregators, trainers or decoders")) -> None:
        """List what the installed plugins registered."""
        kinds = KINDS if kind is None else (kind,)
        if kind is not None and kind not in KINDS:
            raise UsageError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        for k in kinds:
            table = Table(title=k)
            for col in ("name", "plugin", "details", "description"):
                table.add_column(col)
            for name, spec in sorted(host.registry.table(k).items()):
                details = ""
                if k == "tasks":
                    details = f"v{spec.version}; splits: {', '.join(spec.splits)}"
                elif k == "encoders":
                    details = f"{'/'.join(spec.backends)}; {', '.join(spec.capabilities)}"
                elif k == "aggregators":
                    details = ", ".join(spec.kinds)
                table.add_row(name, spec.plugin, details, spec.description)
            for (contested_kind, name), owners in sorted(host.registry.contested.items()):
                if contested_kind == k:
                    table.add_row(name, ", ".join(owners), "[red]unusable: registered by more than one plugin[/red]", "")
            out.print(table)

    @app.command()
    def plugins() -> None:
        """Show installed plugins, and those that failed to load with their error."""
        registry = None
        try:
            registry = host.registry  # registration hooks that raise are recorded as failures
        except UsageError as exc:
            err.print(f"[red]registry error:[/red] {escape(str(exc))}")
        table = Table(title="plugins")
        for col in ("name", "module", "distribution", "status"):
            table.add_column(col)
        contested: dict[str, list[str]] = {}
        if registry is not None:
            for (k, name), owners in sorted(registry.contested.items()):
                for owner in owners:
                    others = ", ".join(o for o in owners if o != owner)
                    contested.setdefault(owner, []).append(f"{k[:-1]} {name!r} unusable: also registered by {others}")
        for p in host.plugins:
            status = "; ".join(["ok", *contested.get(p.name, [])])
            table.add_row(p.name, p.target, f"{p.distribution} {p.version}".strip(), escape(status))
        for f in host.failures:
            table.add_row(f.name, f.target, "", f"[red]failed: {escape(f.error)}[/red]")
        out.print(table)

    @app.command()
    def train(
        config: Path = typer.Argument(..., help="Training config YAML (see configs/train/)."),
        overrides: list[str] | None = typer.Argument(None, help="key=value overrides"),
    ) -> None:
        """Run a registered training recipe (its name is the config's `trainer` key)."""
        from vfeval.config import load_trainer_config

        spec, cfg = load_trainer_config(config, list(overrides or []), host.registry)
        final = spec.load()(cfg)
        out.print(f"final checkpoint: {final}")

    cache_app = typer.Typer(help="Show or free the answer cache and feature store.", no_args_is_help=True)

    @cache_app.command("info")
    def cache_info(cache_dir: Path = typer.Option(Path(".vfeval_cache"), envvar="VFEVAL_CACHE")) -> None:
        """Size and contents of the cache."""
        from vfeval.cache import Cache

        c = Cache(_cache_folder(cache_dir) / "vfeval.sqlite")
        for k, v in c.info().items():
            out.print(f"{k}: {v}")
        c.close()
        from vfeval.cache import cache_files

        shards = [p for p in cache_files(cache_dir) if p.parent.name == "shards"]
        if shards:  # written by runs over several processes; every run reads them too
            out.print(f"shards: {len(shards)} files ({sum(p.stat().st_size for p in shards)} bytes) in {shards[0].parent}")

    @cache_app.command("clear")
    def cache_clear(cache_dir: Path = typer.Option(Path(".vfeval_cache"), envvar="VFEVAL_CACHE")) -> None:
        """Delete every cached answer and feature."""
        from vfeval.cache import Cache

        c = Cache(_cache_folder(cache_dir) / "vfeval.sqlite")
        c.clear()
        c.close()
        from vfeval.cache import remove_shards

        remove_shards(cache_dir)  # runs read every shard: a cleared cache keeps none
        out.print(f"cleared {cache_dir}")

    app.add_typer(cache_app, name="cache")

    board_app = typer.Typer(help="Result records and the static leaderboard site.", no_args_is_help=True)
    results_opt = typer.Option(Path("leaderboard/results"), "--results", help="Folder of result records.")

    @board_app.command("add")
    def board_add(
        runs: list[Path] = typer.Argument(..., help="Run folders (or results.json files) written by `vfeval run`."),
        dir: Path = typer.Option(Path("leaderboard/results"), "--dir", help="Folder of result records."),
        replace: bool = typer.Option(False, help="Remove earlier records of the same task, split and run name."),
    ) -> None:
        """Validate results and copy them into the records folder as <task>-<split>-<run>-<pipeline fp>.json."""
        from vfeval.leaderboard.records import add_run

        for run_path in runs:
            added = add_run(run_path, dir, replace=replace)
            out.print(f"added {added.path}" + (f" (samples: {added.samples.name})" if added.samples else ""), soft_wrap=True)
            for note in added.notes:
                out.print(f"  {note}")

    @board_app.command("table")
    def board_table(
        results: Path = results_opt,
        fmt: str = typer.Option("markdown", "--format", help="markdown or csv"),
    ) -> None:
        """Print every record, ranked within its protocol, as a markdown or CSV table."""
        from vfeval.leaderboard.records import load_records, table, to_markdown

        if fmt not in ("markdown", "csv"):
            raise UsageError(f"--format must be markdown or csv, not {fmt!r}")
        df = table(load_records(results))
        if df.empty:
            err.print(f"no records in {results}")
            return
        sys.stdout.write(to_markdown(df) + "\n" if fmt == "markdown" else df.to_csv(index=False))

    @board_app.command("build")
    def board_build(
        results: Path = results_opt,
        site: Path = typer.Option(Path("leaderboard/site"), "--out", help="Folder for the static site."),
    ) -> None:
        """Build the static leaderboard site (HTML, CSS, JS, SVG plots; works from file://)."""
        from vfeval.leaderboard.build import build_site

        index = build_site(results, site)
        out.print(f"site: {index.resolve()}", soft_wrap=True)

    app.add_typer(board_app, name="leaderboard")
    host.add_commands(app)
    return app


def _is_cli_exception(exc: BaseException, *names: str) -> bool:
    """Whether ``exc`` is one of click's exceptions called ``names`` (or a subclass of one), from whichever
    click the installed typer uses: the ``click`` package, or the copy that newer typers bundle."""
    for cls in type(exc).__mro__:
        if cls.__name__ in names and cls.__module__.split(".")[0] in ("click", "typer"):
            return True
    return False


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _usage_message(exc: Any) -> str:
    """A click usage error as one line that names the command and the option, argument or command at fault."""
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None and getattr(ctx, "command_path", "") else ""
    if _is_cli_exception(exc, "NoArgsIsHelpError"):
        names = ctx.command.list_commands(ctx) if ctx is not None and hasattr(ctx.command, "list_commands") else []
        return f"{where}a command is needed: {', '.join(names)} (`{ctx.command_path if ctx else 'vfeval'} --help`)"
    try:
        message = exc.format_message()
    except Exception:  # a click without format_message, or one that needs a context it lacks
        message = str(exc)
    return f"{where}{_one_line(message) or type(exc).__name__}"


def main(argv: list[str] | None = None) -> None:
    """The ``vfeval`` entry point: every usage error, from click or from vfeval, is one line and exit code 2."""
    try:
        host = get_plugin_manager()
        app = build_app(host)
        code = app(args=argv, prog_name="vfeval", standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(n) in a command: click returns n when not standalone
            sys.exit(code)
    except UsageError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; answers computed so far are cached; run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if _is_cli_exception(exc, "Exit"):
            sys.exit(getattr(exc, "exit_code", 0))
        if _is_cli_exception(exc, "Abort"):
            print("aborted", file=sys.stderr)
            sys.exit(1)
        if _is_cli_exception(exc, "NoArgsIsHelpError"):  # `vfeval`, `vfeval cache`: the help, then the error
            ctx = getattr(exc, "ctx", None)
            text = ctx.get_help() if ctx is not None else ""  # typer prints its rich help itself
            if text:
                print(text)
        if _is_cli_exception(exc, "UsageError", "BadParameter"):
            print(f"error: {_usage_message(exc)}", file=sys.stderr)
            sys.exit(2)
        if _is_cli_exception(exc, "ClickException"):  # FileError and the like
            print(f"error: {_usage_message(exc)}", file=sys.stderr)
            sys.exit(getattr(exc, "exit_code", 1) or 1)
        raise
