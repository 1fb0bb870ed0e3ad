"""The runner: requests → dedupe → cache lookup → batch → decode (prefetching pool) → pipeline → cache write
→ score → results.

Every batch of answers is committed to the cache before the next is computed, so a run killed at any point
and started again with the same command recomputes nothing that was answered and gives identical metrics:
scores are always computed from the answers as stored, whether they were computed now or earlier.

What names a cached answer:
- the pipeline fingerprint, which here includes ``run.batch_size``: a learned encoder's outputs differ in the
  last bits between batch sizes (BLAS picks other kernels, texts are padded to another length), and options
  can be closer than that, so a cache never mixes answers computed at different batch sizes. A run at another
  batch size computes its own answers; results.json shows the batch size under ``pipeline``;
- the request (kind, video window, texts);
- for requests answered from a video, the identity of the video file's content (``vfeval.content``), so a
  video replaced under the same id is computed again, and the run says how many windows that invalidated.
The feature store is keyed the same way (encoder, sampling, batch size; window and its file's content).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import secrets
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

from vfeval.cache import SHARDS, Cache, Entry, open_cache
from vfeval.config import RunConfig, to_dict
from vfeval.console import make_console
from vfeval.distributed import RankFailed, World, shard
from vfeval.errors import DataError, UsageError
from vfeval.hashing import fingerprint
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
    windows_invalidated: int = 0
    """Windows answered before from other content of their video file (replaced since), computed again."""
    files_hashed: int = 0
    """Video files whose content was hashed in this run (new or changed since their identity was remembered)."""
    identity_s: float = 0.0
    """Seconds spent on the content identity of video files: stat, lookups and hashing, the answer keys that
    include it, and counting invalidated windows (what this run costs over one keyed by window alone)."""

    def to_dict(self) -> dict[str, int | float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class RunOutcome:
    run_dir: Path
    result: dict[str, Any]
    stats: RunStats
    results: list[SampleResult] = field(repr=False, default_factory=list)


def window_key(window: VideoWindow) -> str:
    return json.dumps(window.identity(), sort_keys=True)


def content_window_key(window: VideoWindow, content: str) -> str:
    """A window and the content identity of its file: names a window's features in the store."""
    return json.dumps({**window.identity(), "content": content}, sort_keys=True)


def answer_key(request_key: str, content: str | None) -> str:
    """The cache key of a request's answer: its ``request.key()``, with the video file's content identity when
    the answer is computed from the video (``content`` not None)."""
    if content is None:
        return request_key
    return hashlib.sha256(f"{request_key}\n{content}".encode()).hexdigest()[:32]


def pipeline_description(pipeline: Pipeline, batch_size: int) -> dict[str, Any]:
    """What results.json records under ``pipeline``, and what its fingerprint hashes: the pipeline's parts and
    the batch size its answers were computed at."""
    return {**pipeline.describe(), "batch_size": int(batch_size)}


def features_key(pipeline: Pipeline, batch_size: int) -> str:
    """Names a pipeline's per-window features: encoder, sampling, what is computed, and the batch size."""
    return fingerprint({"features": pipeline.features_key(), "batch_size": int(batch_size)})


def stored_features(cache: Cache, pipeline: Pipeline, window: VideoWindow, batch_size: int) -> dict[str, Any] | None:
    """The features the store holds for ``window`` as its file is now, under ``pipeline`` at ``batch_size``."""
    content = cache.content.identify([window.path])[window.path]
    return cache.get_features(features_key(pipeline, batch_size), content_window_key(window, content))


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


@dataclass
class _Plan:
    """What every rank derives alike from the config and the data, before touching the cache."""

    task: Task
    samples: list[Any]
    per_sample: list[list[Request]]
    unique: dict[str, Request]
    pipeline: Pipeline
    described: dict[str, Any]
    pfp: str


def _one_line(text: Any) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _merge_stats(parts: list[dict[str, Any]], requests: int) -> RunStats:
    """One run's stats from every rank's: work done is summed; what every rank looked up alike (cached) and
    what rank 0 alone counts (invalidated windows) is taken once."""
    merged = RunStats(requests=requests, cached=parts[0]["cached"],
                      windows_invalidated=parts[0]["windows_invalidated"])
    for part in parts:
        for key in ("computed", "windows_decoded", "windows_from_store", "files_hashed"):
            setattr(merged, key, getattr(merged, key) + part[key])
        merged.identity_s = max(merged.identity_s, part["identity_s"])
    return merged


class Runner:
    def __init__(self, cfg: RunConfig, host: Host, console: Console | None = None, progress: bool = True,
                 world: World | None = None) -> None:
        self.cfg = cfg
        self.host = host
        self.console = console or make_console(stderr=True)
        self.world = world or World()
        self.show_progress = progress and self.world.main

    def build_task(self) -> Task:
        spec = self.host.registry.get("tasks", self.cfg.task.name)
        return spec.load()(self.cfg.task)

    def execute(self) -> RunOutcome:
        return self._as_rank(self._execute)

    def extract(self) -> dict[str, Any]:
        """Fill the feature store with the windows of the task's requests, scoring nothing (``vfeval
        extract``): the same sharding as a run, so a run afterwards, at any world size, decodes no video."""
        return self._as_rank(self._extract)

    def _as_rank(self, body: Any) -> Any:
        """Run ``body``; if it raises in one rank of a job, tell every other rank before raising here."""
        self.world.next_round()
        try:
            return body()
        except RankFailed:
            raise
        except BaseException as exc:
            self.world.fail(f"{type(exc).__name__}: {_one_line(exc)}")
            raise

    def _plan(self) -> _Plan:
        cfg, registry = self.cfg, self.host.registry
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
        described = pipeline_description(pipeline, cfg.run.batch_size)
        return _Plan(task, samples, per_sample, unique, pipeline, described, fingerprint(described))

    def _agree(self, plan: _Plan) -> Path:
        """Agree with every rank on the run folder (rank 0's), and check that every rank computes the same
        pipeline over the same requests and sees the same cache folder. Returns the run folder."""
        world, cfg = self.world, self.cfg
        cache_dir = Path(cfg.output.cache_dir)
        if not world.distributed:
            return cfg.run_dir()
        token = f".job-{secrets.token_hex(8)}" if world.main else ""
        if world.main:
            (cache_dir / SHARDS).mkdir(parents=True, exist_ok=True)
            (cache_dir / SHARDS / token).write_text(str(os.getpid()))
        mine = {"run_dir": str(cfg.run_dir().absolute()), "cache_dir": str(cache_dir.absolute()), "token": token,
                "pipeline": plan.pfp, "requests": fingerprint(sorted(plan.unique))}
        agreed = world.broadcast("agree", mine)
        try:
            for key, what in (("pipeline", "pipeline (its fingerprint)"), ("requests", "requests")):
                if agreed[key] != mine[key]:
                    raise UsageError(
                        f"rank {world.rank} has other {what} than rank 0: every rank must run the same config "
                        "on the same data and code"
                    )
            seen = self._sees(cache_dir / SHARDS / agreed["token"])
            if not seen:
                raise UsageError(
                    f"rank {world.rank} does not see rank 0's cache folder {agreed['cache_dir']} (as "
                    f"{cache_dir.absolute()}): set output.cache_dir to one folder that every rank's machine "
                    "mounts"
                )
            world.barrier("agreed")
        finally:
            if world.main:
                (cache_dir / SHARDS / token).unlink(missing_ok=True)
        return Path(agreed["run_dir"])

    @staticmethod
    def _sees(path: Path, wait_s: float = 10.0) -> bool:
        """Whether ``path`` exists, allowing a shared filesystem a few seconds to show a new file."""
        deadline = time.monotonic() + wait_s
        while not path.exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def _progress_counter(self, progress: Progress, bar: Any, name: str) -> tuple[Any, Any]:
        """``(tick, refresh)``: ``tick(n)`` counts ``n`` answers of this rank and shows the job's total;
        ``refresh()`` shows the job's total while this rank waits for the others."""
        world = self.world

        def tick(n: int) -> None:
            progress.update(bar, completed=world.advance(name, n))

        def refresh() -> None:
            progress.update(bar, completed=world.count(name))

        return tick, refresh

    def _rank_record(self, stats: RunStats, seconds: float, work: int) -> dict[str, Any]:
        """One rank's share and speed, for the result's cost."""
        return {"rank": self.world.rank, "computed": stats.computed, "windows_decoded": stats.windows_decoded,
                "windows_from_store": stats.windows_from_store, "compute_s": round(seconds, 3),
                "per_s": round(work / seconds, 3) if seconds > 0 else None}

    def _execute(self) -> RunOutcome:
        cfg, world = self.cfg, self.world
        t0 = time.perf_counter()
        plan = self._plan()
        task, samples, per_sample, unique = plan.task, plan.samples, plan.per_sample, plan.unique
        pipeline, described, pfp = plan.pipeline, plan.described, plan.pfp
        run_dir = self._agree(plan)
        cache = open_cache(cfg.output.cache_dir, world.rank, world.size)
        stats = RunStats(requests=len(unique))
        with self._progress() as progress:
            try:
                started = time.perf_counter()
                contents = self._identify(list(unique.values()), pipeline, cache, stats)
                keys = {k: answer_key(k, contents.get(r.video.path) if r.video is not None and
                                      pipeline.needs_video(r) else None)
                        for k, r in unique.items()}
                stats.identity_s += time.perf_counter() - started
                known = cache.get_answers(pfp, list(keys.values()))
                pending = [r for k, r in unique.items()
                           if keys[k] not in known or (cfg.run.retry_failed and not known[keys[k]].ok)]
                stats.cached = len(unique) - len(pending)
                world.barrier("looked-up")  # every rank has read the cache before any rank writes to it
                changed: dict[str, str] = {}
                if world.main:  # one count of what changed, said once
                    started = time.perf_counter()
                    changed = self._count_invalidated(pending, pipeline, cache, pfp, contents, stats)
                    stats.identity_s += time.perf_counter() - started
                bar = progress.add_task("answering", total=len(pending))
                tick, refresh = self._progress_counter(progress, bar, "answered")
                started = time.perf_counter()
                self._compute(pending, pipeline, cache, stats, pfp, keys, contents, tick)
                compute_s = time.perf_counter() - started
                if changed:
                    started = time.perf_counter()
                    cache.put_answered_content(pfp, changed)
                    stats.identity_s += time.perf_counter() - started
                if not world.distributed:
                    stored = cache.get_answers(pfp, list(keys.values()))
            finally:
                cache.close()
            record = self._rank_record(stats, compute_s, stats.computed)
            done = world.gather("done", {"stats": stats.to_dict(), "rank": record}, on_wait=refresh)
            refresh()  # every rank counted its answers before saying done: the bar ends at the job's total
        if not world.main:
            world.broadcast("final")  # rank 0 has merged, scored and written
            world.gather("bye", True)
            return RunOutcome(run_dir, {}, stats)
        if world.distributed:
            stats = _merge_stats([d["stats"] for d in done], len(unique))
            merged = open_cache(cfg.output.cache_dir, 0, world.size)  # reads every rank's shard
            try:
                stored = merged.get_answers(pfp, list(keys.values()))
            finally:
                merged.close()
        missing = [k for k, ck in keys.items() if ck not in stored]
        if missing:
            raise RuntimeError(f"{len(missing)} answers are missing from the cache after every rank finished "
                               f"(e.g. {missing[0]}); a shard in {cfg.output.cache_dir} was removed or not written")
        entries = {k: stored[ck] for k, ck in keys.items()}

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
        run_dir.mkdir(parents=True, exist_ok=True)
        outputs = {k: str(v) for k, v in task.write_outputs(results, run_dir).items()}
        wall = time.perf_counter() - t0
        n_videos = len({r.sample.video.video_id for r in results if r.sample.video is not None})
        cost = {
            "wall_s": round(wall, 3),
            "videos_per_s": round(n_videos / wall, 3) if wall > 0 else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "requests": stats.to_dict(),
            "world": {**world.describe(), "ranks": [d["rank"] for d in done]},
        }
        result = build_result(
            run_name=run_dir.name, config=to_dict(cfg), protocol=task.protocol(), pipeline=described,
            pipeline_fingerprint=pfp, family=pipeline.family, results=results, scores=scores, cost=cost,
            plugins=plugin_versions(self.host), outputs=outputs, limit=cfg.run.limit,
            world_size=world.size, training=pipeline.encoder.training(),
        )
        write_run(run_dir, result, results)
        world.broadcast("final", {"run_dir": str(run_dir)})
        world.gather("bye", True)  # rank 0 may host the job's store: it leaves last
        return RunOutcome(run_dir, result, stats, results)

    def _extract(self) -> dict[str, Any]:
        cfg, world = self.cfg, self.world
        t0 = time.perf_counter()
        plan = self._plan()
        pipeline = plan.pipeline
        self._agree(plan)
        cache = open_cache(cfg.output.cache_dir, world.rank, world.size)
        stats = RunStats(requests=len(plan.unique))
        fkey = features_key(pipeline, cfg.run.batch_size)
        failed = 0
        with self._progress() as progress:
            try:
                videos = [r for r in plan.unique.values() if r.video is not None and pipeline.needs_video(r)]
                contents = self._identify(videos, pipeline, cache, stats)
                windows: dict[str, VideoWindow] = {}
                for r in videos:
                    assert r.video is not None
                    windows.setdefault(content_window_key(r.video, contents[r.video.path]), r.video)
                stored = cache.has_features(fkey, list(windows))
                todo = [(key, (window, [])) for key, window in windows.items() if key not in stored]
                world.barrier("looked-up")
                bar = progress.add_task("extracting", total=len(todo))
                tick, refresh = self._progress_counter(progress, bar, "extracted")
                batches = list(_batched(todo, cfg.run.batch_size))
                mine = [batches[i] for i in shard(len(batches), world.rank, world.size)]
                started = time.perf_counter()
                for batch, inputs in self._video_batches(mine, pipeline, cache, stats):
                    failed += sum(isinstance(inp, str) for inp in inputs)
                    world.check()
                    tick(len(batch))
                compute_s = time.perf_counter() - started
            finally:
                cache.close()
            record = {**self._rank_record(stats, compute_s, stats.windows_decoded), "failed": failed}
            done = world.gather("extracted", record, on_wait=refresh)
            refresh()
        world.gather("bye", True)
        return {
            "windows": len(windows), "already_stored": len(stored),
            "decoded": sum(d["windows_decoded"] for d in done), "failed": sum(d["failed"] for d in done),
            "wall_s": round(time.perf_counter() - t0, 3), "world": {**world.describe(), "ranks": done},
            "cache_dir": str(cfg.output.cache_dir),
        }

    # -- computing answers ------------------------------------------------------------------------
    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=self.console, disable=not self.show_progress, transient=False,
        )

    def _identify(self, requests: list[Request], pipeline: Pipeline, cache: Cache, stats: RunStats) -> dict[str, str]:
        """``{video path: content identity}`` of every video file an answer will be computed from."""
        paths = [r.video.path for r in requests if r.video is not None and pipeline.needs_video(r)]
        world = self.world
        if world.distributed:  # each rank hashes its share of the files; every rank gets every identity
            paths = sorted(set(paths))[world.rank :: world.size]
        if not paths and not world.distributed:
            return {}
        before = cache.content.stats.hashed
        contents = cache.content.identify(paths) if paths else {}
        stats.files_hashed += cache.content.stats.hashed - before
        if world.distributed:
            contents = {p: c for part in world.gather("contents", contents) for p, c in part.items()}
        return contents

    def _count_invalidated(self, pending: list[Request], pipeline: Pipeline, cache: Cache, pfp: str,
                           contents: dict[str, str], stats: RunStats) -> dict[str, str]:
        """Count (and say) the pending windows whose file had other content when this pipeline last computed
        windows of it.

        Returns ``{absolute path: identity}`` of the pending windows' files whose identity is new to this
        pipeline, to record once those windows are answered."""
        videos = [r.video for r in pending if r.video is not None and pipeline.needs_video(r)]
        if not videos:
            return {}
        absolute = {w.path: os.path.abspath(w.path) for w in videos}
        before = cache.answered_content(pfp, sorted(set(absolute.values())))
        changed = {p for p in absolute if before.get(absolute[p], contents[p]) != contents[p]}
        windows = {window_key(w) for w in videos if w.path in changed}
        stats.windows_invalidated = len(windows)
        if windows:
            self.console.print(f"{len(windows)} windows invalidated: {len(changed)} video files changed since "
                               "this pipeline answered about them; computing them again")
        return {absolute[p]: contents[p] for p in absolute if before.get(absolute[p]) != contents[p]}

    def _compute(self, pending: list[Request], pipeline: Pipeline, cache: Cache, stats: RunStats, pfp: str,
                 keys: dict[str, str], contents: dict[str, str], tick: Any) -> None:
        """Answer this rank's share of ``pending``: the batches one process would compute, dealt out over the
        ranks (``vfeval.distributed.shard``); each batch is committed to this rank's cache file at once."""
        if not pending:
            return
        world, bs = self.world, self.cfg.run.batch_size
        groups: dict[str, tuple[VideoWindow, list[Request]]] = {}
        plain: list[Request] = []
        for r in pending:
            if pipeline.needs_video(r):
                assert r.video is not None
                key = content_window_key(r.video, contents[r.video.path])
                groups.setdefault(key, (r.video, []))[1].append(r)
            else:
                plain.append(r)
        plain_batches = list(_batched(plain, bs))
        video_batches = list(_batched(list(groups.items()), bs))
        mine = set(shard(len(plain_batches) + len(video_batches), world.rank, world.size))
        for i, chunk in enumerate(plain_batches):
            if i not in mine:
                continue
            answers = pipeline.answer(chunk, [None] * len(chunk))
            cache.put_answers(pfp, {keys[r.key()]: Entry(True, a) for r, a in zip(chunk, answers)})
            stats.computed += len(chunk)
            world.check()
            tick(len(chunk))
        own = [b for j, b in enumerate(video_batches) if len(plain_batches) + j in mine]
        for batch, inputs in self._video_batches(own, pipeline, cache, stats):
            entries: dict[str, Entry] = {}
            ok_reqs, ok_inputs = [], []
            for (_key, (_window, reqs)), inp in zip(batch, inputs):
                if isinstance(inp, str):  # the window failed to decode
                    entries.update({keys[r.key()]: Entry(False, error=inp) for r in reqs})
                else:
                    ok_reqs.extend(reqs)
                    ok_inputs.extend([inp] * len(reqs))
            if ok_reqs:
                answers = pipeline.answer(ok_reqs, ok_inputs)
                entries.update({keys[r.key()]: Entry(True, a, extra={"frame_times": inp.frame_times})
                                for r, a, inp in zip(ok_reqs, answers, ok_inputs)})
            cache.put_answers(pfp, entries)
            stats.computed += len(entries)
            world.check()
            tick(len(entries))

    def _video_batches(
        self, batches: list[list[tuple[str, tuple[VideoWindow, list[Request]]]]], pipeline: Pipeline, cache: Cache,
        stats: RunStats,
    ) -> Iterator[tuple[list[tuple[str, tuple[VideoWindow, list[Request]]]], list[VideoInputs | str]]]:
        """Yield ``batches`` of windows with their VideoInputs (or a failure reason).

        Windows not in the feature store are decoded by a pool (``run.decode``) while the caller encodes the
        batch before. Ahead of the batch being encoded, ``run.prefetch`` batches are submitted, or as many as
        keep every worker busy (two windows each), never more: memory stays bounded however long the dataset.
        Each group is ``(content window key, (window, requests))``: the key names the window's features.
        """
        from vfeval.video.pool import open_pool

        cfg = self.cfg.run
        fkey = features_key(pipeline, cfg.batch_size)
        windows = sum(len(b) for b in batches)
        pending = iter(batches)
        with open_pool(cfg.decode, self._workers(), cfg.video_timeout, pipeline.decoder, windows) as pool:
            queue: deque[tuple[list, list[Any]]] = deque()

            def submit(batch: list[tuple[str, tuple[VideoWindow, list[Request]]]]) -> None:
                jobs: list[Any] = []
                for key, (window, _) in batch:
                    stored = cache.get_features(fkey, key)
                    jobs.append(stored if stored is not None else pool.submit(window, pipeline.sampling))
                queue.append((batch, jobs))

            while True:
                while len(queue) <= cfg.prefetch or sum(len(b) for b, _ in queue) < 2 * pool.size + cfg.batch_size:
                    batch = next(pending, None)
                    if batch is None:
                        break
                    submit(batch)
                if not queue:
                    return
                batch, jobs = queue.popleft()
                yield batch, self._inputs_for(batch, jobs, pipeline, cache, fkey, stats)

    def _workers(self) -> int:
        """``run.workers``; where it is 0 (auto) and several ranks share this machine, its share of the cores,
        so that N ranks do not each start a worker per core."""
        from vfeval.video.pool import MAX_AUTO_WORKERS, machine_cores

        workers, local = self.cfg.run.workers, self.world.local_size
        if workers or local <= 1:
            return workers
        return max(1, min(MAX_AUTO_WORKERS, (machine_cores() - local) // local))

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
            cache.put_features(fkey, [(batch[i][0], inp) for (i, _), inp in zip(to_encode, computed)])
            for (i, _), inp in zip(to_encode, computed):
                out[i] = inp
        return out  # type: ignore[return-value]


def run(cfg: RunConfig, host: Host, console: Console | None = None, progress: bool | None = None,
        world: World | None = None) -> RunOutcome:
    if progress is None:
        progress = sys.stderr.isatty()
    return Runner(cfg, host, console, progress, world).execute()


def extract(cfg: RunConfig, host: Host, console: Console | None = None, progress: bool | None = None,
            world: World | None = None) -> dict[str, Any]:
    if progress is None:
        progress = sys.stderr.isatty()
    return Runner(cfg, host, console, progress, world).extract()


def rescore(run_dir: str | Path, host: Host) -> tuple[dict[str, Any], dict[str, Any]]:
    """Recompute a run's metrics from its saved answers (samples.jsonl), without the model or the videos.

    Returns (old result, new result); results.json is rewritten with the new metrics and a ``rescored`` date.
    Nothing is dropped silently: a task file whose hash the run recorded (``protocol.files``) and that is gone
    now is a UsageError naming it; one that changed is read as it is now, and the new protocol (with its
    fingerprint) is recorded with a note; a metric or breakdown that rescoring no longer produces is kept from
    the run with a note.
    """
    import datetime as _dt

    from vfeval.config import from_dict
    from vfeval.results import RESULTS_FILE, read_run, scores_to_dict

    run_dir = Path(run_dir)
    old, samples = read_run(run_dir)
    cfg = from_dict(old["run"]["config"], host.registry)
    task = host.registry.get("tasks", cfg.task.name).load()(cfg.task)
    recorded = dict((old.get("protocol") or {}).get("files") or {})
    present = task.data_files()
    gone = [label for label in recorded if label not in present or not Path(present[label]).is_file()]
    if gone:
        raise UsageError(
            f"cannot rescore {run_dir}: task file {gone[0]} (hashed into its protocol) is gone from "
            f"{cfg.task.root}; scoring reads it, so restore it, or run the task again"
        )
    for res in samples:
        if not res.failed:
            res.prediction, res.correct = task.predict(res)
    scores = task.score(samples, seed=cfg.run.seed)
    new = {**old, **scores_to_dict(scores),
           "rescored": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    notes = list(new["notes"])
    protocol = task.protocol()
    protocol = {**protocol, "fingerprint": fingerprint(protocol)}
    if protocol["fingerprint"] != (old.get("protocol") or {}).get("fingerprint"):
        notes.append(f"protocol changed since the run ({_protocol_change(old.get('protocol') or {}, protocol)}): "
                     f"fingerprint {(old.get('protocol') or {}).get('fingerprint')} -> {protocol['fingerprint']}")
        new["protocol"] = protocol
    for name, metric in (old.get("metrics") or {}).items():
        if name not in new["metrics"]:
            new["metrics"][name] = metric
            notes.append(f"metric {name} kept from the run: rescoring did not produce it")
    for name, table in (old.get("breakdowns") or {}).items():
        if name not in new["breakdowns"]:
            new["breakdowns"][name] = table
            notes.append(f"breakdown {name} kept from the run: rescoring did not produce it")
    new["notes"] = notes
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    write_run(folder, new, samples)
    assert (folder / RESULTS_FILE).exists()
    return old, new


def _protocol_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Which parts of a protocol differ, e.g. ``files.questions.json, version``."""
    parts = []
    for key in sorted((set(old) | set(new)) - {"fingerprint"}):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            parts.extend(f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        else:
            parts.append(key)
    return ", ".join(parts)
