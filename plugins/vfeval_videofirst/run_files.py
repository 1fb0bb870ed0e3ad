"""The files of a training run's folder, the same for the torch and the JAX trainer.

``train_config.json`` (the options), ``metrics.jsonl`` (one record per ``log_every`` steps, written by
process 0), resumable checkpoints ``step-<s>.safetensors`` (weights, ``checkpoint.py``'s layout, so any of
them runs in ``vfeval run``) with ``step-<s>.state.safetensors`` beside it (the optimizer's state), and
``final.safetensors``. Each is written to a temporary name and renamed into place, weights first, so a
run killed while writing leaves a whole checkpoint or none. Backend-neutral: nothing here imports a
framework.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vfeval.errors import UsageError

FINAL = "final.safetensors"
METRICS = "metrics.jsonl"
CONFIG = "train_config.json"
FREE_ON_RESUME = {"resume", "log_every", "checkpoint_every", "keep_checkpoints", "data.num_workers", "data.cache"}
"""Options that do not change which weights a run reaches: they may differ when a run is resumed."""
_STEP = re.compile(r"^step-(\d+)\.state\.safetensors$")


def weights_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:07d}.safetensors"


def state_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:07d}.state.safetensors"


def atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers see the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def latest_step(folder: Path) -> int | None:
    """The newest step with both files of a checkpoint in ``folder``, or None."""
    steps = [
        int(m.group(1))
        for p in folder.glob("step-*.state.safetensors")
        if (m := _STEP.match(p.name)) and weights_path(folder, int(m.group(1))).is_file()
    ]
    return max(steps, default=None)


def prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (``keep`` 0 keeps all)."""
    if keep <= 0:
        return
    steps = sorted(int(m.group(1)) for p in folder.glob("step-*.state.safetensors") if (m := _STEP.match(p.name)))
    for step in steps[:-keep]:
        state_path(folder, step).unlink(missing_ok=True)
        weights_path(folder, step).unlink(missing_ok=True)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_run(saved: dict[str, Any], now: dict[str, Any], folder: Path) -> None:
    """Refuse to resume a run with options that would change the weights it reaches. An option added since
    the run was saved (absent from its config) is the same when it has its default value."""
    from vfeval.config import to_dict
    from vfeval_videofirst.train_config import TrainConfig

    a, b, default = _flat(saved), _flat(now), _flat(to_dict(TrainConfig()))
    differ = sorted(
        k for k in set(a) | set(b)
        if k not in FREE_ON_RESUME and a.get(k) != b.get(k) and not (k not in a and k in default and b[k] == default[k])
    )
    if differ:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differ[:4])
        raise UsageError(
            f"cannot resume {folder}: the config differs from the run's ({shown}); "
            "use the same options or another name"
        )


def resume_point(out: Path, snapshot: dict[str, Any], resume: bool) -> tuple[bool, int | None]:
    """Where a trainer starts in the run folder ``out``: ``(finished, step to resume from or None)``.

    With ``resume`` a saved config that differs from ``snapshot`` is refused (``check_same_run``); without it,
    a folder that already holds a run is refused rather than overwritten."""
    final = out / FINAL
    latest = latest_step(out) if out.is_dir() else None
    if resume and (out / CONFIG).is_file():
        check_same_run(json.loads((out / CONFIG).read_text(encoding="utf-8")), snapshot, out)
    if resume:
        return final.is_file(), latest
    if final.is_file() or latest is not None:
        raise UsageError(f"{out} already holds a training run; set resume=true to continue it, or another name")
    return False, None


def open_run(out: Path, snapshot: dict[str, Any], start: int) -> None:
    """Process 0's preparation of the run folder before the first step: the folder, the config (renamed into
    place once whole, so a kill never leaves a torn one) and ``metrics.jsonl`` cut back to step ``start``."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(snapshot, indent=2, sort_keys=True) + "\n"
    atomic(out / CONFIG, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    truncate_metrics(out / METRICS, start)


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to ``step``: a resumed run rewrites those after its checkpoint. A last line without
    its newline is a record cut off by a kill while it was written (always after ``step``): it is dropped."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")[:-1]  # the torn tail goes
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise UsageError(f"{path}: line {number} is not a metrics record; delete that line to resume the run")
        if record["step"] <= step:
            kept.append(line)
    atomic(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8"))


def loss_record(
    step: int, losses: list[float], lr: float, clips_per_step: int, accum: int, seconds: float, elapsed: float
) -> dict[str, Any]:
    """A ``metrics.jsonl`` record of the ``losses`` of the forward passes since the last one (``accum`` per
    optimizer step, taking ``seconds``): mean loss, learning rate, clips per second, and the run's time."""
    return {
        "step": step,
        "loss": sum(losses) / len(losses),
        "lr": lr,
        "clips_per_s": clips_per_step * len(losses) / accum / max(seconds, 1e-9),
        "elapsed": elapsed,
    }


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """One record as one line, flushed before the call returns."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


@contextlib.contextmanager
def progress_bar(show: bool, total: int, start: int, name: str):
    """A rich progress bar on process 0 (loss, lr, clips/s); elsewhere a stand-in that shows nothing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vfeval.console import make_console

    progress = Progress(
        TextColumn(f"train {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[rate]:.1f} clips/s"),
        TimeRemainingColumn(),
        console=make_console(stderr=True),
        disable=not show,
    )
    task = progress.add_task("train", total=total, completed=start, loss=float("nan"), lr=0.0, rate=0.0)
    with progress:
        yield progress, task



def window_record(
    step: int, window: list[Any], lr: float, clips_per_step: int, accum: int, seconds: float, elapsed: float
) -> dict[str, Any]:
    """A ``metrics.jsonl`` record of the forward passes since the last one (``accum`` per optimizer step, taking
    ``seconds``): each a loss, or a dict of the loss and its parts. The record: the mean loss (and the mean of
    each part), learning rate, clips per second and the run's time."""
    parts = window if window and isinstance(window[0], dict) else [{"loss": x} for x in window]
    record = loss_record(step, [p["loss"] for p in parts], lr, clips_per_step, accum, seconds, elapsed)
    record.update({k: sum(p[k] for p in parts) / len(parts) for k in parts[0] if k != "loss"})
    return record


class Loop:
    """What every trainer's loop does after an optimizer step, beside its own arithmetic: the run's clock
    (continued across resumes), a ``metrics.jsonl`` record every ``log_every`` steps and at the last (of the
    forward passes gathered in ``window`` since the one before), the progress bar, and the steps that save a
    resumable checkpoint (every ``checkpoint_every`` before the last). Process 0 writes. Made by
    ``training_loop``."""

    def __init__(self, out: Path, cfg: Any, total: int, elapsed_before: float, main: bool, progress: Any, task: Any):
        self.out, self.total, self.main = out, total, main
        self.log_every, self.checkpoint_every, self.keep = cfg.log_every, cfg.checkpoint_every, cfg.keep_checkpoints
        self.elapsed_before = elapsed_before
        self.progress, self.task = progress, task
        self.window: list[Any] = []
        self.began = self.window_start = time.perf_counter()

    def step_done(self, done: int, lr: float, clips_per_step: int, accum: int, **extra: float) -> bool:
        """After optimizer step ``done`` (1-based): the record when one is due (``window_record`` of the window,
        with ``extra`` fields), and whether this step saves a checkpoint (then ``checkpoint_meta`` and
        ``prune``)."""
        if done % self.log_every == 0 or done == self.total:
            now = time.perf_counter()
            if self.main:
                elapsed = self.elapsed_before + now - self.began
                record = window_record(done, self.window, lr, clips_per_step, accum, now - self.window_start, elapsed)
                record.update(extra)
                append_metrics(self.out / METRICS, record)
                self.progress.update(self.task, loss=record["loss"], lr=lr, rate=record["clips_per_s"])
            self.window_start, self.window = now, []
        self.progress.update(self.task, completed=done)
        return bool(self.checkpoint_every) and done % self.checkpoint_every == 0 and done < self.total

    def checkpoint_meta(self, done: int) -> dict[str, Any]:
        """What a checkpoint's state file records of the run: its step and its time so far."""
        return {"step": done, "elapsed": self.elapsed_before + time.perf_counter() - self.began}

    def prune(self) -> None:
        prune(self.out, self.keep)


@contextlib.contextmanager
def training_loop(out: Path, cfg: Any, total: int, start: int, elapsed_before: float, main: bool) -> Iterator[Loop]:
    """The ``Loop`` of a run from step ``start`` to ``total``, its progress bar shown on process 0 while open.
    ``cfg``: the trainer's config (``name``, ``log_every``, ``checkpoint_every``, ``keep_checkpoints``)."""
    with progress_bar(main, total, start, cfg.name) as (progress, task):
        yield Loop(out, cfg, total, elapsed_before, main, progress, task)
