"""The runner: requests → dedupe → cache lookup → batch → decode (prefetching pool) → pipeline → cache write
→ score → results.

Every batch of answers is committed to the cache before the next is computed, so a run killed at any point
and started again with the same command recomputes nothing that was answered and gives identical metrics:
scores are always computed from the answers as stored, whether they were computed now or earlier.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vfeval.cache import Cache, Entry
from vfeval.config import RunConfig, to_dict
from vfeval.errors import DataError, UsageError
from vfeval.pipeline import Pipeline, VideoInputs
from vfeval.plugins import Host, plugin_versions
from vfeval.requests import Request, VideoWindow
from vfeval.results import build_result, write_run
from vfeval.task import SampleResult, Task


@dataclass
class RunStats:
    requests: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0
    windows_decoded: int = 0
    windows_from_store: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class RunOutcome:
    run_dir: Path
    result: dict[str, Any]
    stats: RunStats
    results: list[SampleResult] = field(repr=False, default_factory=list)


def window_key(window: VideoWindow) -> str:
    return json.dumps(window.identity(), sort_keys=True)


def _batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), max(1, size)):
        yield items[i : i + size]


def _failure(exc: BaseException) -> str:
    """The reason a window failed, starting with a short slug and a colon: results count failures by it."""
    if isinstance(exc, DataError):
        return str(exc)
    if isinstance(exc, CancelledError):
        return "cancelled: decoding was cancelled"
    return f"decode-error: {type(exc).__name__}: {exc}"


def _sample_extra(entries: list[Entry]) -> dict[str, Any]:
    """Provenance for a sample's line in samples.jsonl: the frame times its answers were computed from."""
    for entry in entries:
        if entry.extra and "frame_times" in entry.extra:
            return {"frame_times": entry.extra["frame_times"]}
    return {}


class Runner:
    def __init__(self, cfg: RunConfig, host: Host, console: Console | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.host = host
        self.console = console or Console(stderr=True)
        self.show_progress = progress

    def build_task(self) -> Task:
        spec = self.host.registry.get("tasks", self.cfg.task.name)
        return spec.load()(self.cfg.task)

    def execute(self) -> RunOutcome:
        cfg, registry = self.cfg, self.host.registry
        t0 = time.perf_counter()
        task = self.build_task()
        samples = task.load()
        if cfg.run.limit is not None:
            samples = samples[: cfg.run.limit]
        if not samples:
            raise UsageError(f"task {task.name!r} split {task.split!r} has no samples under {cfg.task.root}")
        per_sample = [task.requests(s) for s in samples]
        unique: dict[str, Request] = {}
        for reqs in per_sample:
            for r in reqs:
                unique.setdefault(r.key(), r)

        pipeline = Pipeline.from_config(cfg.pipeline, registry, cfg.run.seed)
        pipeline.check({r.kind for r in unique.values()}, registry)
        pfp = pipeline.fingerprint()
        cache = Cache(Path(cfg.output.cache_dir) / "vfeval.sqlite")
        stats = RunStats(requests=len(unique))
        try:
            known = cache.get_answers(pfp, list(unique))
            pending = [r for k, r in unique.items() if k not in known or (cfg.run.retry_failed and not known[k].ok)]
            stats.cached = len(unique) - len(pending)
            self._compute(pending, pipeline, cache, stats)
            entries = cache.get_answers(pfp, list(unique))
        finally:
            cache.close()

        results = []
        for sample, reqs in zip(samples, per_sample):
            got = [entries[r.key()] for r in reqs]
            bad = next((e for e in got if not e.ok), None)
            res = SampleResult(sample, None, error=bad.error) if bad else SampleResult(sample, [e.value for e in got])
            res.extra = _sample_extra(got)
            if not res.failed:
                res.prediction, res.correct = task.predict(res)
            results.append(res)
        stats.failed = sum(r.failed for r in results)
        scores = task.score(results, seed=cfg.run.seed)
        run_dir = cfg.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        outputs = {k: str(v) for k, v in task.write_outputs(results, run_dir).items()}
        wall = time.perf_counter() - t0
        n_videos = len({r.sample.video.video_id for r in results if r.sample.video is not None})
        cost = {
            "wall_s": round(wall, 3),
            "videos_per_s": round(n_videos / wall, 3) if wall > 0 else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "requests": stats.to_dict(),
        }
        result = build_result(
            run_name=cfg.run_name(), config=to_dict(cfg), protocol=task.protocol(), pipeline=pipeline.describe(),
            pipeline_fingerprint=pfp, results=results, scores=scores, cost=cost,
            plugins=plugin_versions(self.host), outputs=outputs, limit=cfg.run.limit,
        )
        write_run(run_dir, result, results)
        return RunOutcome(run_dir, result, stats, results)

    # -- computing answers ------------------------------------------------------------------------
    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=self.console, disable=not self.show_progress, transient=False,
        )

    def _compute(self, pending: list[Request], pipeline: Pipeline, cache: Cache, stats: RunStats) -> None:
        if not pending:
            return
        pfp = pipeline.fingerprint()
        bs = self.cfg.run.batch_size
        groups: dict[str, tuple[VideoWindow, list[Request]]] = {}
        plain: list[Request] = []
        for r in pending:
            if pipeline.needs_video(r):
                assert r.video is not None
                groups.setdefault(window_key(r.video), (r.video, []))[1].append(r)
            else:
                plain.append(r)
        with self._progress() as progress:
            bar = progress.add_task("answering", total=len(pending))
            for chunk in _batched(plain, bs):
                answers = pipeline.answer(chunk, [None] * len(chunk))
                cache.put_answers(pfp, {r.key(): Entry(True, a) for r, a in zip(chunk, answers)})
                stats.computed += len(chunk)
                progress.advance(bar, len(chunk))
            for batch, inputs in self._video_batches(list(groups.values()), pipeline, cache, stats):
                entries: dict[str, Entry] = {}
                ok_reqs, ok_inputs = [], []
                for (_window, reqs), inp in zip(batch, inputs):
                    if isinstance(inp, str):  # the window failed to decode
                        entries.update({r.key(): Entry(False, error=inp) for r in reqs})
                    else:
                        ok_reqs.extend(reqs)
                        ok_inputs.extend([inp] * len(reqs))
                if ok_reqs:
                    answers = pipeline.answer(ok_reqs, ok_inputs)
                    entries.update({r.key(): Entry(True, a, extra={"frame_times": inp.frame_times})
                                    for r, a, inp in zip(ok_reqs, answers, ok_inputs)})
                cache.put_answers(pfp, entries)
                stats.computed += len(entries)
                progress.advance(bar, len(entries))

    def _video_batches(
        self, groups: list[tuple[VideoWindow, list[Request]]], pipeline: Pipeline, cache: Cache, stats: RunStats
    ) -> Iterator[tuple[list[tuple[VideoWindow, list[Request]]], list[VideoInputs | str]]]:
        """Yield batches of windows with their VideoInputs (or a failure reason).

        Windows not in the feature store are decoded by a pool (``run.decode``) while the caller encodes the
        batch before. Ahead of the batch being encoded, ``run.prefetch`` batches are submitted, or as many as
        keep every worker busy (two windows each), never more: memory stays bounded however long the dataset.
        """
        from vfeval.video.pool import open_pool

        cfg = self.cfg.run
        fkey = pipeline.features_key()
        batches = iter(_batched(groups, cfg.batch_size))
        with open_pool(cfg.decode, cfg.workers, cfg.video_timeout, pipeline.sampling.decoder, len(groups)) as pool:
            queue: deque[tuple[list, list[Any]]] = deque()

            def submit(batch: list[tuple[VideoWindow, list[Request]]]) -> None:
                jobs: list[Any] = []
                for window, _ in batch:
                    stored = cache.get_features(fkey, window_key(window))
                    jobs.append(stored if stored is not None else pool.submit(window, pipeline.sampling))
                queue.append((batch, jobs))

            while True:
                while len(queue) <= cfg.prefetch or sum(len(b) for b, _ in queue) < 2 * pool.size + cfg.batch_size:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    submit(batch)
                if not queue:
                    return
                batch, jobs = queue.popleft()
                yield batch, self._inputs_for(batch, jobs, pipeline, cache, fkey, stats)

    def _inputs_for(self, batch: list, jobs: list[Any], pipeline: Pipeline, cache: Cache, fkey: str,
                    stats: RunStats) -> list[VideoInputs | str]:
        out: list[VideoInputs | str | None] = [None] * len(batch)
        to_encode: list[tuple[int, list[Any]]] = []
        for i, job in enumerate(jobs):
            if isinstance(job, dict):
                stats.windows_from_store += 1
                out[i] = VideoInputs(times=job["times"], embeddings=job["embeddings"], captions=job["captions"],
                                     frame_times=job["frame_times"])
                continue
            try:  # the pool enforces run.video_timeout
                to_encode.append((i, job.result()))
                stats.windows_decoded += 1
            except Exception as exc:  # a bad video is a failed sample, never a crashed run
                out[i] = _failure(exc)
        if to_encode:
            computed = pipeline.compute_inputs([clips for _, clips in to_encode])
            cache.put_features(fkey, [(window_key(batch[i][0]), inp) for (i, _), inp in zip(to_encode, computed)])
            for (i, _), inp in zip(to_encode, computed):
                out[i] = inp
        return out  # type: ignore[return-value]


def run(cfg: RunConfig, host: Host, console: Console | None = None, progress: bool | None = None) -> RunOutcome:
    if progress is None:
        progress = sys.stderr.isatty()
    return Runner(cfg, host, console, progress).execute()


def rescore(run_dir: str | Path, host: Host) -> tuple[dict[str, Any], dict[str, Any]]:
    """Recompute a run's metrics from its saved answers (samples.jsonl), without the model or the videos.

    Returns (old result, new result); results.json is rewritten with the new metrics and a ``rescored`` date.
    """
    import datetime as _dt

    from vfeval.config import from_dict
    from vfeval.results import RESULTS_FILE, read_run, scores_to_dict

    run_dir = Path(run_dir)
    old, samples = read_run(run_dir)
    cfg = from_dict(old["run"]["config"], host.registry)
    task = host.registry.get("tasks", cfg.task.name).load()(cfg.task)
    for res in samples:
        if not res.failed:
            res.prediction, res.correct = task.predict(res)
    scores = task.score(samples, seed=cfg.run.seed)
    new = {**old, **scores_to_dict(scores),
           "rescored": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    write_run(folder, new, samples)
    assert (folder / RESULTS_FILE).exists()
    return old, new
