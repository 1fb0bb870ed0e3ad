"""The command line as users meet it: exit codes, one-line errors, fast light commands."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vfeval import hookimpl
from vfeval.config import EncoderConfig, load_run_config
from vfeval.errors import UsageError
from vfeval.pipeline import Pipeline
from vfeval.specs import EncoderSpec, TaskSpec
from vfeval.testing import ConstantEncoder, registered_plugin

REPO = Path(__file__).resolve().parents[1]
EGO = REPO / "configs" / "egoschema.yaml"


def vfeval(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfeval", *args], capture_output=True, text=True, cwd=cwd)


def test_help_and_ls_do_not_import_heavy_libraries():
    for args in (["--help"], ["ls"], ["plugins"]):
        res = subprocess.run([sys.executable, "-X", "importtime", "-m", "vfeval", *args],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in res.stderr.splitlines() if "|" in line}
        assert not imported & {"torch", "jax", "flax", "transformers"}, args


def test_ls_lists_first_party_components():
    res = vfeval("ls")
    assert res.returncode == 0
    for name in ("egoschema", "pixel", "hashed-text", "identity", "mean", "random", "blind", "constant"):
        assert name in res.stdout


def test_tables_written_to_a_file_or_pipe_are_whole():
    # Piped output is not a terminal: rich would assume 80 columns and end the names of a wide table in "…".
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run([sys.executable, "-m", "vfeval", "ls", "encoders"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "…" not in res.stdout
    rows = [line for line in res.stdout.splitlines() if line.startswith("│ hf-image-captioner ")]
    assert len(rows) == 1 and "Captions the middle frame (or K frames) of each segment" in rows[0]
    narrow = subprocess.run([sys.executable, "-m", "vfeval", "ls", "encoders"], capture_output=True, text=True,
                            env={**env, "COLUMNS": "80"})  # a width the user sets is kept
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80


@pytest.mark.parametrize(
    "override, expected",
    [
        ("task.rot=/x", "unknown key 'task.rot' (did you mean: root?)"),
        ("pipeline.sampling.fsp=0.5", "unknown key 'pipeline.sampling.fsp' (did you mean: fps?)"),
        ("pipeline.encoder.name=pixl", "unknown encoder 'pixl' (did you mean: pixel?)"),
        ("run.batch_size=abc", "bad value for 'run.batch_size'"),
        ("task.split=val", "task 'egoschema' has splits subset, full"),
        ("pipeline.sampling.mode=dense", "use uniform or fps"),
        ("notakeyvalue", "must look like key=value"),
    ],
)
def test_config_mistakes_are_one_line_with_exit_code_2(tmp_path, override, expected):
    res = vfeval("run", str(EGO), f"task.root={tmp_path}", override, cwd=tmp_path)
    assert res.returncode == 2
    assert expected in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_missing_data_root_lists_expected_files(tmp_path):
    res = vfeval("run", str(EGO), f"task.root={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert res.returncode == 2
    assert "questions.json" in res.stderr and "subset_answers.json" in res.stderr
    assert "vfeval data synthetic" in res.stderr


def test_missing_config_file(tmp_path):
    res = vfeval("run", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_interpolation_from_environment(tmp_path, ego_answers_root):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "task: {name: egoschema, root: '${oc.env:MY_EGO_ROOT}', split: subset}\n"
        "pipeline: {encoder: {name: hashed-text}, aggregator: {name: constant, choice: 1}}\n"
        f"output: {{dir: {tmp_path / 'runs'}, cache_dir: {tmp_path / 'cache'}}}\n"
    )
    import os

    env = {**os.environ, "MY_EGO_ROOT": str(ego_answers_root)}
    res = subprocess.run([sys.executable, "-m", "vfeval", "run", str(cfg)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "runs" / "egoschema-subset-hashed-text-constant" / "results.json").read_text())
    assert result["run"]["config"]["task"]["root"] == str(ego_answers_root)


def test_pipeline_that_cannot_answer_is_refused_before_decoding(tmp_path, ego_answers_root):
    res = vfeval("run", str(EGO), f"task.root={ego_answers_root}", "pipeline.encoder.name=hashed-text",
                 f"output.cache_dir={tmp_path}/c", cwd=tmp_path)
    assert res.returncode == 2
    assert "needs an encoder that can embed_video" in res.stderr


# -- the backend an encoder runs on (pipeline.encoder.backend) ------------------------------------------


@dataclass
class TwoBackendConfig(EncoderConfig):
    name: str = "two-backend"
    dim: int = 8


def make_two_backend(cfg: TwoBackendConfig) -> ConstantEncoder:
    assert cfg.backend in ("numpy", "torch", "jax")  # resolved before the factory sees the config
    return ConstantEncoder(cfg.dim)


class TwoBackendPlugin:
    @hookimpl
    def register_encoders(self, register):
        register(EncoderSpec(name="two-backend", factory=make_two_backend, config=TwoBackendConfig,
                             backends=("numpy", "torch", "jax"), capabilities=("embed_video", "embed_text")))


def two_backend_config(host, *overrides: str):
    base = ["task.root=/nowhere", "pipeline.encoder.name=two-backend", "pipeline.aggregator.name=identity"]
    return load_run_config(EGO, [*base, *overrides], host.registry)


def test_backend_defaults_to_the_first_and_is_set_on_the_config(host):
    with registered_plugin(host, TwoBackendPlugin(), "two-backend-plugin"):
        assert two_backend_config(host).pipeline.encoder.backend == "numpy"
        assert two_backend_config(host, "pipeline.encoder.backend=torch").pipeline.encoder.backend == "torch"
    # an encoder that declares one backend gets it without asking
    assert load_run_config(EGO, ["pipeline.encoder.name=pixel"], host.registry).pipeline.encoder.backend == "numpy"


def test_backend_is_in_the_result_and_the_fingerprint(host):
    with registered_plugin(host, TwoBackendPlugin(), "two-backend-plugin"):
        pipes = {b: Pipeline.from_config(two_backend_config(host, f"pipeline.encoder.backend={b}").pipeline,
                                         host.registry) for b in ("numpy", "torch")}
        assert pipes["numpy"].encoder_identity()["backend"] == "numpy"
        assert pipes["torch"].describe()["encoder"]["backend"] == "torch"
        assert pipes["numpy"].fingerprint() != pipes["torch"].fingerprint()
        same = Pipeline.from_config(two_backend_config(host).pipeline, host.registry)
        assert same.fingerprint() == pipes["numpy"].fingerprint()  # absent means the first, not something else


def test_unknown_backend_names_those_available(host):
    with registered_plugin(host, TwoBackendPlugin(), "two-backend-plugin"):
        with pytest.raises(UsageError, match=r"'pipeline.encoder.backend': 'tpu'; encoder 'two-backend' runs on "
                                             r"numpy, torch, jax"):
            two_backend_config(host, "pipeline.encoder.backend=tpu")


def test_backend_whose_framework_is_missing_gives_the_install_command(host, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    with registered_plugin(host, TwoBackendPlugin(), "two-backend-plugin"):
        with pytest.raises(UsageError) as info:
            two_backend_config(host, "pipeline.encoder.backend=jax")
    message = str(info.value)
    assert "jax is not installed" in message and 'pip install "vfeval[jax]"' in message
    assert "also runs on numpy, torch" in message and "\n" not in message


def test_backend_errors_on_the_command_line(tmp_path):
    res = vfeval("run", str(EGO), f"task.root={tmp_path}", "pipeline.encoder.backend=jax", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "'pipeline.encoder.backend'" in res.stderr and "encoder 'pixel' runs on numpy" in res.stderr


# -- plugins fail alone ----------------------------------------------------------------------------------


class TwinPlugin:
    def __init__(self, task: str = "twin-task") -> None:
        self.task = task

    @hookimpl
    def register_encoders(self, register):
        register(EncoderSpec(name="twin-encoder", factory=make_two_backend, config=TwoBackendConfig))

    @hookimpl
    def register_tasks(self, register):
        register(TaskSpec(name=self.task, factory="nowhere:make"))


def test_a_contested_name_is_unusable_and_everything_else_works(host):
    with registered_plugin(host, TwinPlugin("task-a"), "twin-a"), registered_plugin(host, TwinPlugin("task-b"), "twin-b"):
        registry = host.registry
        with pytest.raises(UsageError, match=r"encoder 'twin-encoder' is registered by both plugin 'twin-a' and "
                                             r"plugin 'twin-b'"):
            registry.get("encoders", "twin-encoder")
        assert registry.get("tasks", "task-a").plugin == "twin-a"  # their other names work
        assert registry.get("tasks", "task-b").plugin == "twin-b"
        assert registry.get("encoders", "pixel").plugin == "baselines"
        cfg = load_run_config(EGO, ["pipeline.encoder.name=hashed-text"], registry)  # runs that use neither
        assert cfg.pipeline.encoder.name == "hashed-text"


class BrokenHookPlugin:
    @hookimpl
    def register_tasks(self, register):
        raise RuntimeError("needs the csv-mc data package")


def test_asking_for_a_name_of_a_failed_plugin_says_it_failed_and_why(host):
    with registered_plugin(host, BrokenHookPlugin(), "broken-tasks"):
        with pytest.raises(UsageError) as info:
            host.registry.get("tasks", "csv-mc")
        assert host.registry.get("tasks", "egoschema").plugin == "benchmarks"
    message = str(info.value)
    assert "unknown task 'csv-mc'" in message
    assert "plugin 'broken-tasks' failed" in message and "needs the csv-mc data package" in message


@pytest.mark.parametrize("first", ["vfeval.config", "vfeval.video.sampling", "vfeval.video.backends", "vfeval.video"])
def test_config_and_sampling_import_in_any_order_without_a_cycle(first):
    """vfeval.config owns the sampling config and imports nothing of vfeval.video; sampling imports config."""
    code = (f"import sys, {first}\n"
            "import vfeval.config\n"
            "print(sorted(m for m in sys.modules if m.startswith('vfeval.video')) if "
            f"{first!r} == 'vfeval.config' else 'ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in ("[]", "ok")


class TwiceTaskPlugin:
    @hookimpl
    def register_tasks(self, register):
        register(TaskSpec(name="twice-task", factory="nowhere:make"))
        register(TaskSpec(name="twice-task", factory="nowhere:other"))


def test_a_plugin_registering_a_name_twice_fails_alone(host):
    with registered_plugin(host, TwiceTaskPlugin(), "twice"):
        registry = host.registry
        assert "twice" in registry.failed and "registers task 'twice-task' twice" in registry.failed["twice"]
        assert registry.get("tasks", "egoschema").plugin == "benchmarks"
