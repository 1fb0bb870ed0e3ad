"""Every usage error is one line on stderr with exit code 2, whatever the command and the order of options.

Each case is a bad input a user can type: a misspelt option, a value out of range, a stray quote, a file
where a folder belongs, a garbage record. The command is run in this process through the same entry point as
the ``vfeval`` script (``vfeval.cli.main``), so an uncaught exception fails the test with its traceback; a
few cases also run as a real subprocess at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vfeval.cli import main

REPO = Path(__file__).resolve().parents[1]
EGO = str(REPO / "configs" / "egoschema.yaml")
TRAIN = str(REPO / "configs" / "train" / "synthetic.yaml")
RECORD = next(p for p in sorted((REPO / "leaderboard" / "results").glob("*.json")))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Paths the cases refer to as {name}: a plain file, garbage YAML and JSON, bad records."""
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    for name, text in {
        "garbage": "{ this is not json",
        "list": "[1, 2, 3]",
        "noconfig": json.dumps({"schema": "vfeval.result/1", "run": {"name": "x"}}),
        "deep": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    record = json.loads(RECORD.read_text())
    record["metrics"][record["headline"]]["value"] = float("nan")
    (tmp_path / "nan").mkdir()
    (tmp_path / "nan" / "results.json").write_text(json.dumps(record))  # json writes NaN
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    return {"tmp": str(tmp_path), "file": str(tmp_path / "a-file")}


# (id, argv, extra environment, text the one line must contain). {name} is replaced from `files`.
CASES = [
    # the command line itself
    ("bare", [], {}, "a command is needed"),
    ("unknown-command", ["evaluate"], {}, "'evaluate'"),
    ("unknown-kind", ["ls", "widgets"], {}, "'widgets'"),
    # run
    ("run-missing-config", ["run"], {}, "config"),
    ("run-limit-not-int", ["run", EGO, "--limit", "abc"], {}, "--limit"),
    ("run-limit-not-int-first", ["run", "--limit", "abc", EGO], {}, "--limit"),
    ("run-misspelt-option", ["run", EGO, "--limt", "3"], {}, "--limt"),
    ("run-misspelt-option-first", ["run", "--limt", "3", EGO], {}, "--limt"),
    ("run-limit-negative", ["run", EGO, "task.root={tmp}", "--limit", "-1"], {}, "--limit"),
    ("run-limit-negative-first", ["run", "--limit", "-1", EGO, "task.root={tmp}"], {}, "--limit"),
    ("run-limit-zero", ["run", EGO, "--limit", "0"], {}, "--limit"),
    ("run-run-limit-key", ["run", EGO, "run.limit=-3"], {}, "run.limit"),
    ("run-batch-size-zero", ["run", EGO, "run.batch_size=0"], {}, "run.batch_size"),
    ("run-batch-size-text", ["run", EGO, "run.batch_size=many"], {}, "run.batch_size"),
    ("run-frames-huge", ["run", EGO, "pipeline.sampling.num_frames=1000000"], {}, "pipeline.sampling.num_frames"),
    ("run-frames-zero", ["run", EGO, "pipeline.sampling.num_frames=0"], {}, "pipeline.sampling.num_frames"),
    ("run-fps-max-frames-huge", ["run", EGO, "pipeline.sampling.mode=fps", "pipeline.sampling.max_frames=100000"],
     {}, "pipeline.sampling.max_frames"),
    ("run-fps-negative", ["run", EGO, "pipeline.sampling.mode=fps", "pipeline.sampling.fps=-2"], {},
     "pipeline.sampling.fps"),
    ("run-size-huge", ["run", EGO, "pipeline.sampling.size=100000"], {}, "pipeline.sampling.size"),
    ("run-frame-limit-zero", ["run", EGO, "run.frame_limit=0"], {}, "run.frame_limit"),
    ("run-decoder-unknown", ["run", EGO, "pipeline.sampling.decoder=ffmpeg9"], {}, "pipeline.sampling.decoder"),
    ("run-decode-mode", ["run", EGO, "run.decode=fast"], {}, "run.decode"),
    ("run-timeout-zero", ["run", EGO, "run.video_timeout=0"], {}, "run.video_timeout"),
    ("run-unknown-key", ["run", EGO, "run.batchsize=4"], {}, "run.batchsize"),
    ("run-unknown-task", ["run", EGO, "task.name=egoshcema"], {}, "egoshcema"),
    ("run-stray-quote", ["run", EGO, "task.root='/data/ego"], {}, "task.root"),
    ("run-stray-bracket", ["run", EGO, "task.root=[/data"], {}, "task.root"),
    ("run-name-stray-quote", ["run", EGO, "--name", "it's"], {}, "--name"),
    ("run-name-interpolation", ["run", EGO, "--name", "${oc.env:HOME}"], {}, "--name"),
    ("run-name-separator", ["run", "--name", "../escape", EGO], {}, "--name"),
    ("run-output-name-key", ["run", EGO, "output.name=a/b"], {}, "output.name"),
    ("run-output-dir-is-file", ["run", EGO, "task.root={tmp}", "output.dir={file}"], {}, "output.dir"),
    ("run-output-dir-under-file", ["run", EGO, "task.root={tmp}", "output.dir={file}/runs"], {}, "output.dir"),
    ("run-cache-dir-is-file", ["run", EGO, "task.root={tmp}", "output.cache_dir={file}"], {}, "output.cache_dir"),
    ("run-cache-env-is-file", ["run", EGO, "task.root={tmp}"], {"VFEVAL_CACHE": "{file}"}, "VFEVAL_CACHE"),
    ("run-backend-unknown", ["run", EGO, "pipeline.encoder.backend=cuda"], {}, "pipeline.encoder.backend"),
    ("run-config-missing", ["run", "{tmp}/nope.yaml"], {}, "nope.yaml"),
    ("run-config-garbage", ["run", "{tmp}/bad.yaml"], {}, "bad.yaml"),
    ("run-config-not-mapping", ["run", "{tmp}/list.yaml"], {}, "list.yaml"),
    # train
    ("train-missing-config", ["train"], {}, "config"),
    ("train-config-missing", ["train", "{tmp}/nope.yaml"], {}, "nope.yaml"),
    ("train-unknown-trainer", ["train", TRAIN, "trainer=videofirst-contrastiv"], {}, "videofirst-contrastiv"),
    ("train-unknown-key", ["train", TRAIN, "optim.lr_peak=1"], {}, "optim.lr_peak"),
    ("train-stray-quote", ["train", TRAIN, 'output="runs/x'], {}, "output"),
    ("train-unknown-option", ["train", "--epochs", "3", TRAIN], {}, "--epochs"),
    # rescore
    ("rescore-missing-arg", ["rescore"], {}, "run_dir"),
    ("rescore-no-folder", ["rescore", "{tmp}/never-ran"], {}, "never-ran"),
    ("rescore-garbage", ["rescore", "{tmp}/garbage"], {}, "garbage"),
    ("rescore-not-a-mapping", ["rescore", "{tmp}/list"], {}, "list"),
    ("rescore-no-config", ["rescore", "{tmp}/noconfig"], {}, "noconfig"),
    ("rescore-too-deep", ["rescore", "{tmp}/deep"], {}, "deep"),
    ("rescore-binary", ["rescore", "{tmp}/binary.json"], {}, "binary.json"),
    # leaderboard
    ("board-bare", ["leaderboard"], {}, "leaderboard"),
    ("board-unknown", ["leaderboard", "publish"], {}, "'publish'"),
    ("board-add-missing-arg", ["leaderboard", "add"], {}, "runs"),
    ("board-add-no-run", ["leaderboard", "add", "{tmp}/never-ran", "--dir", "{tmp}/records"], {}, "never-ran"),
    ("board-add-garbage", ["leaderboard", "add", "{tmp}/garbage", "--dir", "{tmp}/records"], {}, "garbage"),
    ("board-add-too-deep", ["leaderboard", "add", "--dir", "{tmp}/records", "{tmp}/deep"], {}, "deep"),
    ("board-add-nan", ["leaderboard", "add", "{tmp}/nan", "--dir", "{tmp}/records"], {}, "value"),
    ("board-table-format", ["leaderboard", "table", "--format", "xml"], {}, "--format"),
    ("board-build-bad-option", ["leaderboard", "build", "--output", "{tmp}/site"], {}, "--output"),
    # data
    ("data-bare", ["data"], {}, "data"),
    ("data-synthetic-no-out", ["data", "synthetic"], {}, "--out"),
    ("data-synthetic-out-is-file", ["data", "synthetic", "--out", "{file}"], {}, "{file}"),
    ("data-synthetic-bad-format", ["data", "synthetic", "--out", "{tmp}/d", "--formats", "kinetics"], {}, "kinetics"),
    ("data-synthetic-bad-videos", ["data", "synthetic", "--out", "{tmp}/d", "--videos", "some"], {}, "--videos"),
    # cache
    ("cache-bare", ["cache"], {}, "cache"),
    ("cache-unknown", ["cache", "purge"], {}, "'purge'"),
    ("cache-info-dir-is-file", ["cache", "info", "--cache-dir", "{file}"], {}, "--cache-dir"),
    ("cache-clear-env-is-file", ["cache", "clear"], {"VFEVAL_CACHE": "{file}"}, "VFEVAL_CACHE"),
    # profile
    ("profile-batch-not-int", ["profile", "--batch", "two"], {}, "--batch"),
    ("profile-unknown-option", ["profile", "--frame", "8"], {}, "--frame"),
]


def fill(text: str, files: dict[str, str]) -> str:
    for name, value in files.items():
        text = text.replace("{" + name + "}", value)
    return text


def invoke(argv: list[str], env: dict[str, str], monkeypatch, capsys) -> tuple[int, str, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


@pytest.mark.parametrize("argv, env, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(argv, env, expect, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing a case writes lands in the repository
    monkeypatch.delenv("VFEVAL_CACHE", raising=False)
    argv = [fill(a, files) for a in argv]
    env = {k: fill(v, files) for k, v in env.items()}
    expect = fill(expect, files)
    code, _, err = invoke(argv, env, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: "), err
    assert expect in lines[0], err


def test_there_are_forty_cases_over_every_command():
    assert len(CASES) >= 40
    commands = {c[1][0] for c in CASES if c[1]}
    assert {"run", "train", "rescore", "leaderboard", "data", "cache", "profile"} <= commands


def test_nothing_is_computed_before_output_dir_is_checked(files, tmp_path, monkeypatch, capsys, ego_answers_root):
    """A misplaced output folder is found before any answer is computed (and so before the cache is made)."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", EGO, f"task.root={ego_answers_root}", "pipeline.encoder.name=hashed-text",
            "pipeline.aggregator.name=constant", f"output.dir={files['file']}", f"output.cache_dir={tmp_path}/cache"]
    code, _, err = invoke(argv, {}, monkeypatch, capsys)
    assert code == 2 and "output.dir" in err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("argv", [["run", EGO, "--limt", "3"], ["cache"], ["leaderboard", "table", "--format", "xml"]])
def test_the_installed_script_behaves_the_same(argv, tmp_path):
    env = {**os.environ, "COLUMNS": "250"}
    res = subprocess.run([sys.executable, "-m", "vfeval", *argv], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_an_unwritable_cache_folder_is_one_line(files, tmp_path, monkeypatch, capsys):
    """Root may write anywhere, so the permission is taken away where vfeval asks for it (os.access)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    monkeypatch.chdir(tmp_path)
    for argv, env, key in [
        (["run", EGO, f"task.root={tmp_path}", f"output.cache_dir={locked}/cache"], {}, "output.cache_dir"),
        (["run", EGO, f"task.root={tmp_path}"], {"VFEVAL_CACHE": str(locked)}, "VFEVAL_CACHE"),
        (["cache", "info", "--cache-dir", str(locked / "cache")], {}, "--cache-dir"),
        (["run", EGO, f"task.root={tmp_path}", f"output.dir={locked}"], {}, "output.dir"),
    ]:
        monkeypatch.delenv("VFEVAL_CACHE", raising=False)
        code, _, err = invoke(argv, env, monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert key in err and "not writable" in err and str(locked) in err
