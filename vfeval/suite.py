"""Suites: many runs from one YAML, then the leaderboard (``vfeval run configs/quickstart.yaml``).

A YAML whose top-level key is ``suite`` (instead of ``task`` and ``pipeline``) is a suite::

    suite:
      name: quickstart
      include: suites/synthetic.yaml    # a suite file (relative to this one) whose settings this one extends
      vars: {data: data/synthetic}      # values the rest refers to as ${suite.vars.data}
      prepare:                          # vfeval commands, in order; skipped when every path of `creates` exists
        data: {command: "data synthetic --out data/synthetic", creates: [data/synthetic/README.md]}
      train:                            # `vfeval train` recipes, resumed if killed; done when `checkpoint` exists
        mask0: {config: configs/train/synthetic.yaml, overrides: [name=x], checkpoint: runs/train-x/final.safetensors}
        # processes: 2 trains under torchrun (python -m torch.distributed.run --standalone --nproc_per_node=2)
      tasks:                            # run configs; their task sections are evaluated
        egoschema: {config: configs/egoschema.yaml, overrides: [task.root=data/synthetic/egoschema]}
      pipelines:                        # merged over each task config's pipeline (encoder and aggregator replace it)
        blind: {pipeline: {encoder: {name: hashed-text}, aggregator: {name: blind}}, tasks: [egoschema]}
        trained: {pipeline: {...}, needs: [runs/train-x/final.safetensors]}
      output: runs/${suite.name}         # each run writes <output>/<task>/<pipeline>/results.json
      leaderboard: {results: leaderboard/results, site: leaderboard/site}

Every task is evaluated with every pipeline (a pipeline's ``tasks`` narrows that) through the normal runner
and its cache, so running a suite again recomputes nothing. A training recipe that is not registered is
skipped with the reason, and so is every pipeline that ``needs`` what it would have written: nothing is
replaced by something else. Paths are relative to the working directory, except ``include``.

A suite killed at any moment and run again continues where it stopped and ends with the records of a run
never killed. A prepare command must make its ``creates`` appear only when complete (written under a
temporary name, then renamed, as ``vfeval data synthetic`` and ``vfeval profile --out`` do). A training
step runs its recipe with ``resume=true`` (when the recipe has that option), so it continues its own
unfinished run from the last checkpoint, and a run folder whose saved config differs from the step's stops
the suite with one line naming the folder.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from vfeval.config import (
    build_run_config,
    check_paths,
    describe,
    load_raw,
    load_trainer_config,
    parse_overrides,
)
from vfeval.console import make_console
from vfeval.errors import UsageError
from vfeval.plugins import Host


@dataclass
class PrepareStep:
    command: str = MISSING
    """A vfeval command line without ``vfeval``, e.g. ``data synthetic --out data/synthetic``."""
    creates: list[str] = field(default_factory=list)
    """The step is skipped when every one of these paths exists (and must exist after it ran). The command
    must create each of them only once complete (a temporary name, renamed), so that a killed step is redone."""


@dataclass
class TrainStep:
    config: str = MISSING
    overrides: list[str] = field(default_factory=list)
    checkpoint: str = MISSING
    """The final checkpoint the training writes: when it exists, the training is done (the trainer only
    checks that its saved config is the step's). The ``metrics.jsonl`` next to it becomes the run's loss
    curve on the leaderboard."""
    processes: int = 1
    """Training processes on this machine. Above 1 the suite launches ``vfeval train`` with torchrun
    (``python -m torch.distributed.run --standalone --nproc_per_node=N``) and the recipe runs in its own
    data-parallel mode, which it must have (the videofirst trainer's DDP: ``optim.batch_size`` is then per
    process). On a CPU a small model keeps about one core busy per process, so two processes on two cores
    train nearly twice as fast."""


@dataclass
class TaskEntry:
    config: str = MISSING
    overrides: list[str] = field(default_factory=list)


@dataclass
class PipelineEntry:
    pipeline: dict[str, Any] = field(default_factory=dict)
    """Merged over the task config's pipeline section; ``encoder`` and ``aggregator`` replace it whole."""
    tasks: list[str] = field(default_factory=list)
    """Keys of ``suite.tasks`` to evaluate this pipeline on; empty means all of them."""
    needs: list[str] = field(default_factory=list)
    """Paths that must exist (e.g. a trained checkpoint); if one is missing, the pipeline is skipped."""


@dataclass
class LeaderboardStep:
    results: str = "leaderboard/results"
    """Records folder the suite's results are added to ('' to leave the leaderboard alone)."""
    site: str = "leaderboard/site"
    """Where the static site is built ('' to build none)."""


@dataclass
class SuiteConfig:
    name: str = MISSING
    include: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, PrepareStep] = field(default_factory=dict)
    train: dict[str, TrainStep] = field(default_factory=dict)
    tasks: dict[str, TaskEntry] = field(default_factory=dict)
    pipelines: dict[str, PipelineEntry] = field(default_factory=dict)
    output: str = "runs/${suite.name}"
    leaderboard: LeaderboardStep = field(default_factory=LeaderboardStep)


class SuiteFailed(RuntimeError):
    """A step of the suite failed (exit code 1)."""


def is_suite(path: str | Path) -> bool:
    raw = load_raw(path, [])
    return "suite" in raw


def _suite_node(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """The ``suite`` mapping of a file, over the one it includes."""
    if path.resolve() in seen:
        raise UsageError(f"config: {path} includes itself (through {' -> '.join(map(str, seen))})")
    raw = load_raw(path, [])
    extra = sorted(set(raw) - {"suite"})
    if extra:
        raise UsageError(f"config: {path}: a suite file holds only the 'suite' key, not {', '.join(extra)}")
    node = raw.suite
    if not isinstance(node, DictConfig):
        raise UsageError(f"config: {path}: 'suite' must be a mapping")
    include = node.get("include")
    if include:
        base = _suite_node(path.parent / str(include), (*seen, path.resolve()))
        node = OmegaConf.merge(base, {k: v for k, v in node.items_ex(resolve=False) if k != "include"})
    return node


def load_suite(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SuiteConfig:
    """A typed suite config from a YAML file and ``suite.key=value`` overrides."""
    bad = [o for o in overrides if not o.startswith("suite.")]
    if bad:
        raise UsageError(f"override {bad[0]!r}: a suite's overrides start with 'suite.' (e.g. suite.output=runs/x)")
    node = _suite_node(Path(path))
    schema = OmegaConf.structured({"suite": SuiteConfig})
    try:
        root = OmegaConf.merge(schema, {"suite": node}, parse_overrides(overrides))
        cfg = OmegaConf.to_object(root.suite)
    except OmegaConfBaseException as exc:
        raise UsageError(describe(exc, schema)) from exc
    assert isinstance(cfg, SuiteConfig)
    for key, pipe in cfg.pipelines.items():
        for task in pipe.tasks:
            if task not in cfg.tasks:
                raise UsageError(f"config: 'suite.pipelines.{key}.tasks' names {task!r}, which is not in suite.tasks")
    for key, step in cfg.train.items():
        if step.processes < 1:
            raise UsageError(f"config: 'suite.train.{key}.processes' must be at least 1, got {step.processes}")
    return cfg


@dataclass
class SuiteOutcome:
    runs: list[Any] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    curves: dict[str, Path] = field(default_factory=dict)
    index: Path | None = None
    wall_s: float = 0.0


class SuiteRunner:
    def __init__(self, cfg: SuiteConfig, host: Host, console: Console, limit: int | None = None,
                 retry_failed: bool = False) -> None:
        self.cfg, self.host, self.console = cfg, host, console
        self.limit, self.retry_failed = limit, retry_failed
        self.outcome = SuiteOutcome()

    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)

    def skip(self, text: str) -> None:
        self.outcome.skipped.append(text)
        self.say(f"[yellow]skipped[/yellow] {text}")

    def run(self) -> SuiteOutcome:
        start = time.perf_counter()
        self.say(f"[bold]suite {self.cfg.name}[/bold]")
        for name, step in self.cfg.prepare.items():
            self.prepare(name, step)
        for name, step in self.cfg.train.items():
            self.train(name, step)
        self.evaluate()
        self.leaderboard()
        self.outcome.wall_s = time.perf_counter() - start
        self.summary()
        return self.outcome

    # -- steps ----------------------------------------------------------------------------------
    def prepare(self, name: str, step: PrepareStep) -> None:
        if step.creates and all(Path(p).exists() for p in step.creates):
            more = f" and {len(step.creates) - 1} more" if len(step.creates) > 1 else ""
            self.say(f"prepare {name}: up to date ({step.creates[0]}{more})")
            return
        args = shlex.split(step.command)
        self.say(f"prepare {name}: vfeval {step.command}")
        res = subprocess.run([sys.executable, "-m", "vfeval", *args])
        if res.returncode:
            raise SuiteFailed(f"prepare {name}: `vfeval {step.command}` exited with {res.returncode}")
        missing = [p for p in step.creates if not Path(p).exists()]
        if missing:
            raise SuiteFailed(f"prepare {name}: `vfeval {step.command}` did not create {missing[0]}")

    def train(self, name: str, step: TrainStep) -> None:
        checkpoint = Path(step.checkpoint)
        trainer = str(OmegaConf.select(load_raw(step.config, step.overrides), "trainer", default=""))
        if trainer not in self.host.registry.table("trainers"):
            if not checkpoint.exists():
                self.skip(f"train {name}: trainer {trainer!r} is not registered (see `vfeval ls trainers`), so "
                          f"{checkpoint} cannot be made; pipelines that need it are skipped too")
                return
            self.say(f"train {name}: up to date ({checkpoint}; trainer {trainer!r} is not registered to check it)")
        else:
            self.run_trainer(name, step, trainer, checkpoint)
        metrics = checkpoint.parent / "metrics.jsonl"
        if metrics.is_file():
            self.outcome.curves[f"{self.cfg.name}-{name}"] = metrics

    def run_trainer(self, name: str, step: TrainStep, trainer: str, checkpoint: Path) -> None:
        """Train, or continue the step's own unfinished run. A recipe with a ``resume`` option runs with
        ``resume=true``: its trainer continues the run from its last checkpoint, returns at once when the run
        had finished, and refuses (one line naming the folder) a run whose saved config differs from the step's."""
        spec = self.host.registry.get("trainers", trainer)
        resumable = is_dataclass(spec.config) and "resume" in {f.name for f in fields(spec.config)}
        done, folder = checkpoint.exists(), checkpoint.parent
        if done and not resumable:
            self.say(f"train {name}: up to date ({checkpoint})")
            return
        if not done:
            unfinished = resumable and folder.is_dir() and any(folder.iterdir())
            launcher = f"in {step.processes} processes (torchrun): " if step.processes > 1 else ""
            self.say(f"train {name}: {launcher}" + (f"continuing the unfinished run in {folder}" if unfinished else
                                                    f"vfeval train {step.config} {' '.join(step.overrides)}"))
        overrides = [*step.overrides, *(["resume=true"] if resumable else [])]
        try:
            spec, tcfg = load_trainer_config(step.config, overrides, self.host.registry)
            final = spec.load()(tcfg) if step.processes == 1 else self.launch(name, step, overrides)
        except UsageError as exc:
            raise UsageError(f"suite step train.{name}: {exc}") from exc
        if not checkpoint.exists():
            raise SuiteFailed(f"train {name}: the trainer wrote {final}, not the suite's checkpoint {checkpoint}")
        if done:
            self.say(f"train {name}: up to date ({checkpoint})")

    def launch(self, name: str, step: TrainStep, overrides: list[str]) -> str:
        """Run ``vfeval train`` under torchrun with ``step.processes`` processes (the config was checked here
        first, so a bad key is still one line); the processes print their own progress and errors."""
        if importlib.util.find_spec("torch") is None:
            raise UsageError(f"processes: {step.processes} launches torchrun, which needs PyTorch "
                             "(pip install \"vfeval[torch]\"), or set processes: 1")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={step.processes}", "-m", "vfeval", "train", step.config, *overrides]
        done = subprocess.run(command, check=False)
        if done.returncode == 2:
            raise UsageError(f"vfeval train {step.config} under {step.processes} processes refused its config "
                             "(the line above says why)")
        if done.returncode != 0:
            raise SuiteFailed(f"train {name}: torchrun with {step.processes} processes exited with "
                              f"{done.returncode} (the lines above say why)")
        return step.checkpoint

    def run_config(self, task_key: str, pipe_key: str) -> Any:
        task, pipe = self.cfg.tasks[task_key], self.cfg.pipelines[pipe_key]
        raw = load_raw(task.config, task.overrides)
        fragment = OmegaConf.create(pipe.pipeline)
        for part in ("encoder", "aggregator"):
            if part in fragment:
                OmegaConf.update(raw, f"pipeline.{part}", fragment.pop(part), merge=False)
        raw = OmegaConf.merge(raw, {"pipeline": fragment})
        extra = [f"output.dir={Path(self.cfg.output) / task_key}", f"output.name={pipe_key}"]
        if self.limit is not None:
            extra.append(f"run.limit={self.limit}")
        if self.retry_failed:
            extra.append("run.retry_failed=true")
        cfg = build_run_config(OmegaConf.merge(raw, parse_overrides(extra)), self.host.registry)
        check_paths(cfg)  # before anything is computed
        return cfg

    def evaluate(self) -> None:
        from vfeval.runner import run

        for task_key in self.cfg.tasks:
            for pipe_key, pipe in self.cfg.pipelines.items():
                if pipe.tasks and task_key not in pipe.tasks:
                    continue
                missing = [p for p in pipe.needs if not Path(p).exists()]
                if missing:
                    self.skip(f"{task_key} / {pipe_key}: needs {missing[0]}, which does not exist")
                    continue
                outcome = run(self.run_config(task_key, pipe_key), self.host)
                self.outcome.runs.append(outcome)
                res, stats = outcome.result, outcome.stats
                head = res["metrics"].get(res.get("headline"))
                score = f"{res['headline']} {head['value']:.2f}" if head and head["value"] is not None else "not scored"
                self.say(f"run {task_key} / {pipe_key}: {score}  ({res['cost']['wall_s']:.1f} s, "
                         f"{stats.cached} of {stats.requests} answers from the cache)")

    def leaderboard(self) -> None:
        lb = self.cfg.leaderboard
        if not lb.results:
            return
        from vfeval.leaderboard.build import build_site
        from vfeval.leaderboard.records import add_run

        results = Path(lb.results)
        for outcome in self.outcome.runs:
            for note in add_run(outcome.run_dir, results, replace=True).notes:
                self.say(f"leaderboard: {outcome.run_dir}: {note}")
        if self.outcome.curves:
            (results / "training").mkdir(parents=True, exist_ok=True)
            for name, path in self.outcome.curves.items():
                shutil.copyfile(path, results / "training" / f"{name}.jsonl")
        self.say(f"leaderboard: {len(self.outcome.runs)} results added to {results}")
        if lb.site:
            self.outcome.index = build_site(results, lb.site)

    def summary(self) -> None:
        table = Table(title=f"suite {self.cfg.name}: headline metric [95% CI]")
        tasks = list(self.cfg.tasks)
        # In a terminal too narrow for the table, names fold onto a second line rather than end in "…".
        table.add_column("pipeline", overflow="fold")
        for t in tasks:
            table.add_column(t, justify="right", overflow="fold")
        cells: dict[tuple[str, str], str] = {}
        for o in self.outcome.runs:
            m = o.result["metrics"].get(o.result.get("headline"))
            ci = m.get("ci95") if m else None
            text = "—" if not m or m["value"] is None else \
                f"{m['value']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci and None not in ci else "")
            cells[(o.run_dir.parent.name, o.run_dir.name)] = text
        for p in self.cfg.pipelines:
            if any((t, p) in cells for t in tasks):
                table.add_row(p, *[cells.get((t, p), "") for t in tasks])
        self.console.print(table)
        self.say(f"{len(self.outcome.runs)} runs in {self.outcome.wall_s:.0f} s"
                 + (f"; {len(self.outcome.skipped)} steps skipped (see above)" if self.outcome.skipped else ""))
        if self.outcome.index is not None:
            index = self.outcome.index.resolve()
            self.say(f"[bold]leaderboard site:[/bold] {index}")
            self.say(f"open it in a browser: {index.as_uri()}")


def run_suite(cfg: SuiteConfig, host: Host, console: Console | None = None, *, limit: int | None = None,
              retry_failed: bool = False) -> SuiteOutcome:
    return SuiteRunner(cfg, host, console or make_console(), limit, retry_failed).run()
