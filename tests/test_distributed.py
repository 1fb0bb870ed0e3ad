"""One evaluation over several processes: torchrun (gloo on CPU) and jax.distributed give one process's
numbers; a rank that raises stops every rank; kill -9 and a rerun at another world size recompute nothing
committed; `vfeval extract` fills the feature store for a later run.

The launches are real (``python -m torch.distributed.run``, or processes given JAX's variables); data is a few
tiny synthetic videos; the encoder is the pixel baseline, or a test plugin built on it that can be slowed down
or made to raise on one rank (through environment variables, so the same plugin serves every process).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vfeval.cache import Cache, Entry, cache_files, open_cache, remove_shards, shard_path
from vfeval.config import load_run_config
from vfeval.distributed import RankFailed, World, _TorchStore, shard
from vfeval.errors import UsageError
from vfeval.runner import run
from vfeval.testing import registered_plugin

PLUGIN = '''
import os
import time
from dataclasses import dataclass

from vfeval import hookimpl
from vfeval.specs import EncoderSpec
from vfeval_baselines.encoders.pixel import PixelColourEncoder, PixelConfig


@dataclass
class TestPixelConfig(PixelConfig):
    name: str = "test-pixel"


class TestPixel(PixelColourEncoder):
    """The pixel baseline; TEST_SLOW_S sleeps per call, TEST_FAIL_RANK=<rank> raises on that rank."""

    def embed_video(self, clips):
        if os.environ.get("TEST_FAIL_RANK") == os.environ.get("RANK", os.environ.get("JAX_PROCESS_ID", "0")):
            with open(os.environ["TEST_FAIL_MARK"], "w") as f:
                f.write(str(time.time()))
            raise RuntimeError("boom in the test encoder")
        time.sleep(float(os.environ.get("TEST_SLOW_S", "0")))
        return super().embed_video(clips)


def make(config):
    return TestPixel()


@hookimpl
def register_encoders(register):
    register(EncoderSpec(name="test-pixel", factory="distplug:make", config=TestPixelConfig,
                         capabilities=("embed_video", "embed_text")))
'''

TASKS = {
    "egoschema": "{name: egoschema, root: %s/egoschema, split: subset}",
    "msrvtt": "{name: msrvtt_retrieval, root: %s/msrvtt, split: full}",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic EgoSchema and MSR-VTT data, the test plugin installed for subprocesses, their environment."""
    from vfeval_benchmarks.synthetic import write_synthetic

    base = tmp_path_factory.mktemp("dist")
    write_synthetic(base / "data", seed=3, formats=["egoschema", "msrvtt"], n_videos=8, n_train_videos=0,
                    duration=4.0, size=32, fps=4, workers=1)
    # One corrupt video: a failed sample in every run, recorded alike whichever rank decodes it.
    uid = sorted(json.loads((base / "data" / "egoschema" / "subset_answers.json").read_text()))[0]
    (base / "data" / "egoschema" / "videos" / f"{uid}.mp4").write_bytes(b"not a video")
    site = base / "site"
    info = site / "distplug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vfeval]\ndistplug = distplug\n")
    (site / "distplug.py").write_text(PLUGIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "TEST_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(site), VFEVAL_PLUGINS="core,benchmarks,baselines,distplug", OMP_NUM_THREADS="1",
               JAX_PLATFORMS="cpu")
    return {"base": base, "data": base / "data", "site": site, "env": env}


def config(world: dict, name: str, task: str = "egoschema", encoder: str = "pixel", batch_size: int = 2) -> Path:
    path = world["base"] / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        task: {TASKS[task] % world['data']}
        pipeline:
          encoder: {{name: {encoder}}}
          aggregator: {{name: identity}}
          sampling: {{mode: uniform, num_frames: 4, size: 32, crop: 32}}
        run: {{batch_size: {batch_size}, decode: inline}}
        output: {{dir: {world['base'] / 'runs'}, cache_dir: {world['base'] / 'cache' / name}, name: {name}}}
        """))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(world: dict, n: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", f"--master_port={free_port()}",
           "-m", "vfeval", *args]
    return subprocess.Popen(cmd, env={**world["env"], **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def reference(world: dict, host, task: str, encoder: str = "pixel", batch_size: int = 2) -> Path:
    """The same run in this one process (the plugin registered here for it)."""
    name = f"one-{task}-{encoder}-{batch_size}"
    if not (world["base"] / "runs" / name / "results.json").exists():
        spec = importlib.util.spec_from_file_location("distplug", world["site"] / "distplug.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["distplug"] = module
        spec.loader.exec_module(module)
        with registered_plugin(host, module, "distplug"):
            cfg = load_run_config(config(world, name, task, encoder, batch_size), [], host.registry)
            run(cfg, host, progress=False)
    return world["base"] / "runs" / name


def same_numbers(a: Path, b: Path) -> dict:
    """``b``'s result, after checking that its metrics and per-sample answers equal ``a``'s byte for byte."""
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert json.dumps(ra["metrics"], sort_keys=True) == json.dumps(rb["metrics"], sort_keys=True)
    assert json.dumps(ra["breakdowns"], sort_keys=True) == json.dumps(rb["breakdowns"], sort_keys=True)
    assert (a / "samples.jsonl").read_bytes() == (b / "samples.jsonl").read_bytes()
    assert ra["pipeline"]["fingerprint"] == rb["pipeline"]["fingerprint"]
    assert ra["protocol"]["fingerprint"] == rb["protocol"]["fingerprint"]
    return rb


def answered(cache_dir: Path) -> int:
    total = 0
    for path in cache_files(cache_dir):
        with sqlite3.connect(path, timeout=5) as con:
            try:
                total += con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            except sqlite3.OperationalError:  # created a moment ago, no tables yet
                pass
    return total


# -- the rule and the pieces, in this process ---------------------------------------------------------------


def test_shard_deals_every_batch_to_exactly_one_rank_evenly():
    for size in (1, 2, 3, 5):
        for n in (0, 1, 7, 12):
            parts = [shard(n, r, size) for r in range(size)]
            assert sorted(i for p in parts for i in p) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(7, 1, 3) == [1, 4]
    with pytest.raises(ValueError):
        shard(4, 3, 3)


def test_ranks_agree_and_a_failure_reaches_every_rank_through_the_store():
    import torch.distributed as dist

    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, 3, True, wait_for_workers=False)
    ranks = [World(rank=k, size=3, backend="torch",
                   store=_TorchStore(dist.TCPStore("127.0.0.1", port, 3, False))) for k in range(3)]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda w: w.gather("x", {"rank": w.rank}), ranks))
        assert got == [[{"rank": 0}, {"rank": 1}, {"rank": 2}]] * 3
        assert list(pool.map(lambda w: w.broadcast("dir", f"from {w.rank}"), ranks)) == ["from 0"] * 3
        assert [w.advance("n", 2) for w in ranks] == [2, 4, 6] and ranks[0].count("n") == 6
        for w in ranks:  # a second run in the same job: nothing of the first one is read back
            w.next_round()
        assert ranks[0].count("n") == 0
        assert list(pool.map(lambda w: w.gather("x", w.rank * 10), ranks)) == [[0, 10, 20]] * 3
        # Rank 2 raises while the others wait for it: they stop, naming it and its error.
        waiting = [pool.submit(ranks[k].gather, "done", k) for k in (0, 1)]
        time.sleep(0.2)
        ranks[2].fail("RuntimeError: out of memory")
        for future in waiting:
            with pytest.raises(RankFailed, match=r"rank 2 of 3 failed: RuntimeError: out of memory"):
                future.result(timeout=10)
    ranks[2].check()  # a rank does not stop itself on its own failure: it is raising already
    del server


def test_a_cache_reads_every_shard_and_the_latest_answer_wins(tmp_path):
    old = Cache(shard_path(tmp_path, 0, 2))
    old.put_answers("p", {"a": Entry(True, [1.0]), "b": Entry(False, error="decode-error: x")})
    old.close()
    time.sleep(0.01)
    retried = Cache(shard_path(tmp_path, 2, 3))
    retried.put_answers("p", {"b": Entry(True, [2.0])})
    retried.close()
    single = open_cache(tmp_path)  # one process: writes vfeval.sqlite, reads every shard
    assert [p.name for p in single.others] == ["rank-0-of-2.sqlite", "rank-2-of-3.sqlite"]
    got = single.get_answers("p", ["a", "b", "c"])
    assert got["a"].value == [1.0] and got["b"].ok and got["b"].value == [2.0] and "c" not in got
    single.close()
    (tmp_path / "shards" / "junk.sqlite").write_text("not a database")
    broken = open_cache(tmp_path)
    with pytest.raises(UsageError, match="junk.sqlite cannot be read"):
        broken.get_answers("p", ["a"])
    broken.close()
    assert remove_shards(tmp_path) == 3  # `vfeval cache clear`: a cleared cache answers nothing
    cleared = open_cache(tmp_path)
    assert cleared.others == [] and cleared.get_answers("p", ["a", "b"]) == {}
    cleared.close()


def test_ranks_that_run_other_configs_stop_the_job_naming_the_rank(world, host):
    """Two ranks (threads of this process, sharing a real store) with other sampling: the job stops at once."""
    import torch.distributed as dist

    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, 2, True, wait_for_workers=False)
    cfgs = [load_run_config(config(world, "disagree", "egoschema"), [f"pipeline.sampling.num_frames={n}"],
                            host.registry) for n in (4, 2)]
    ranks = [World(rank=k, size=2, backend="torch", store=_TorchStore(dist.TCPStore("127.0.0.1", port, 2, False)))
             for k in range(2)]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run, cfgs[k], host, None, False, ranks[k]) for k in range(2)]
        with pytest.raises(RankFailed, match=r"rank 1 of 2 failed: UsageError: rank 1 has other pipeline"):
            futures[0].result(timeout=60)
        with pytest.raises(UsageError, match="rank 1 has other pipeline"):
            futures[1].result(timeout=60)
    assert not (world["base"] / "runs" / "disagree").exists()
    del server


def test_rank_0_shows_the_job_s_global_count(world, host):
    """Two ranks as threads of this process on a real store: rank 0's bar counts both ranks' answers."""
    import io

    import torch.distributed as dist
    from rich.console import Console

    from vfeval.runner import Runner

    one = reference(world, host, "msrvtt")
    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, 2, True, wait_for_workers=False)
    ranks = [World(rank=k, size=2, backend="torch", store=_TorchStore(dist.TCPStore("127.0.0.1", port, 2, False)))
             for k in range(2)]
    cfg = load_run_config(config(world, "threads", "msrvtt"), [], host.registry)
    shown = io.StringIO()
    consoles = [Console(file=shown, force_terminal=True, width=120), Console(file=io.StringIO())]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda k: Runner(cfg, host, consoles[k], True, ranks[k]).execute(), range(2)))
    total = outcomes[0].result["cost"]["requests"]["requests"]
    assert f"{total}/{total}" in shown.getvalue() and outcomes[1].result == {}
    ranks_done = outcomes[0].result["cost"]["world"]["ranks"]
    assert all(0 < r["computed"] < total for r in ranks_done)
    same_numbers(one, outcomes[0].run_dir)
    del server


# -- torchrun ---------------------------------------------------------------------------------------------


def test_torchrun_over_2_and_3_processes_gives_one_process_numbers(world, host):
    """EgoSchema over 2 processes, MSR-VTT over 2 and 3 (EgoSchema over 3 is the kill test's rerun)."""
    ones = {task: reference(world, host, task) for task in ("egoschema", "msrvtt")}
    jobs = [("egoschema", 2), ("msrvtt", 2), ("msrvtt", 3)]
    procs = {(task, n): torchrun(world, n, "run", str(config(world, f"{task}-{n}", task))) for task, n in jobs}
    for (task, n), proc in procs.items():
        out = finish(proc)
        assert out.count("results: ") == 1, "rank 0 alone reports"
        res = same_numbers(ones[task], world["base"] / "runs" / f"{task}-{n}")
        assert res["provenance"]["world_size"] == n and res["cost"]["world"]["world_size"] == n
        assert res["task"]["n_failed"] == (1 if task == "egoschema" else 0)
        ranks = res["cost"]["world"]["ranks"]
        assert [r["rank"] for r in ranks] == list(range(n)) and all(r["computed"] > 0 for r in ranks)
        assert sum(r["computed"] for r in ranks) == res["cost"]["requests"]["computed"] \
            == res["cost"]["requests"]["requests"]
        shards = sorted(p.name for p in (world["base"] / "cache" / f"{task}-{n}" / "shards").glob("*.sqlite"))
        assert shards == [f"rank-{k}-of-{n}.sqlite" for k in range(n)]


def _worker(launcher: int, rank: int) -> int:
    """The pid of the torchrun worker of ``rank`` started by ``launcher``."""
    pending = [launcher]
    while pending:
        pid = pending.pop()
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pending.append(int(child))
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(child)
    raise AssertionError(f"no worker of rank {rank} under {launcher}")


def test_kill_9_of_a_rank_then_a_rerun_at_another_world_size_recomputes_nothing_committed(world, host):
    one = reference(world, host, "egoschema", "test-pixel", batch_size=1)
    cfg = config(world, "killed", "egoschema", "test-pixel", batch_size=1)
    cache_dir = world["base"] / "cache" / "killed"
    proc = torchrun(world, 2, "run", str(cfg), env={"TEST_SLOW_S": "0.4"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and answered(cache_dir) < 2:
        time.sleep(0.05)
    os.kill(_worker(proc.pid, 1), signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-2000:]
    committed = answered(cache_dir)
    total = json.loads((one / "results.json").read_text())["cost"]["requests"]["requests"]
    assert 0 < committed < total, "the run should have been killed part-way"

    finish(torchrun(world, 3, "run", str(cfg)))
    res = same_numbers(one, world["base"] / "runs" / "killed")
    requests = res["cost"]["requests"]
    assert requests["cached"] == committed and requests["computed"] == total - committed
    assert res["cost"]["world"]["world_size"] == 3


def test_a_rank_raising_in_its_encoder_stops_every_rank_naming_it(world):
    mark = world["base"] / "failed-at"
    cfg = config(world, "raising", "egoschema", "test-pixel", batch_size=1)
    proc = torchrun(world, 2, "run", str(cfg),
                    env={"TEST_FAIL_RANK": "1", "TEST_FAIL_MARK": str(mark), "TEST_SLOW_S": "0.3"})
    out, _ = proc.communicate(timeout=240)
    ended = time.time()
    assert proc.returncode != 0
    assert ended - float(mark.read_text()) < 30
    assert "rank 1 of 2 failed: RuntimeError: boom in the test encoder" in out
    assert not (world["base"] / "runs" / "raising" / "results.json").exists()


def test_extract_under_2_processes_then_a_one_process_run_decodes_no_video(world, host):
    one = reference(world, host, "msrvtt")
    cfg = config(world, "extracted", "msrvtt")
    out = finish(torchrun(world, 2, "extract", str(cfg)))
    assert "windows: 8 (already stored 0, decoded and encoded now 8, failed to decode 0)" in out
    assert "rank 1 of 2: 4 windows" in out
    outcome = run(load_run_config(cfg, [], host.registry), host, progress=False)
    res = same_numbers(one, outcome.run_dir)
    assert res["cost"]["requests"]["windows_decoded"] == 0
    assert res["cost"]["requests"]["windows_from_store"] == 8


# -- jax.distributed ---------------------------------------------------------------------------------------


def test_jax_distributed_processes_give_one_process_numbers(world, host):
    one = reference(world, host, "egoschema")
    cfg = config(world, "jax-2", "egoschema")
    address = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-m", "vfeval", "run", str(cfg)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**world["env"], "JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2",
                                   "JAX_PROCESS_ID": str(k)})
             for k in range(2)]
    outs = [finish(p) for p in procs]
    assert "results: " in outs[0] and "results: " not in outs[1]
    res = same_numbers(one, world["base"] / "runs" / "jax-2")
    assert res["cost"]["world"] == {**res["cost"]["world"], "world_size": 2, "backend": "jax"}
