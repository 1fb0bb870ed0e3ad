"""Third-party plugins as users meet them: installed from a distribution, found through the entry point.

The example plugin (plugins/example) is built and pip-installed, non-editable, into a virtual environment
that sees the active environment's packages (however that environment was made); its encoder, task and
command are then used through ``python -m vfeval`` in that environment. Broken plugins are fake installed distributions (a ``.dist-info`` folder on
PYTHONPATH), which is all ``importlib.metadata`` needs to find their entry points.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vfeval.testing import write_video

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "plugins" / "example"
EGO = REPO / "configs" / "egoschema.yaml"
FIRST_PARTY = "core,baselines,benchmarks"

# The pixel baseline's prototypes, so the colour each video shows is unambiguous.
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (30, 60, 220), "yellow": (235, 225, 30)}


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VFEVAL_PLUGINS", "VFEVAL_STRICT_PLUGINS")}
    env["COLUMNS"] = "250"  # rich tables would otherwise wrap names and errors at 80 columns
    env.update(extra)
    return env


def vfeval(python: str | Path, *args: str, env: dict[str, str], cwd: Path | None = None):
    return subprocess.run(
        [str(python), "-m", "vfeval", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


# -- the example plugin, installed ---------------------------------------------------------------------


def active_site_dirs() -> list[str]:
    """The site-packages folders of the interpreter running the tests, in its own order: a virtualenv's, or
    the system's when the tests run outside one."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """The python of a fresh virtual environment with vfeval-example pip-installed (non-editable)."""
    tmp = tmp_path_factory.mktemp("example-venv")
    # Build from a copy, so the build leaves nothing (build/, *.egg-info) in the source tree.
    src = shutil.copytree(
        EXAMPLE, tmp / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True, timeout=120)
    python = tmp / "venv" / "bin" / "python"
    # The new environment sees the ACTIVE environment's packages (vfeval, its dependencies, pip, setuptools)
    # after its own, whether that is a virtualenv or the system interpreter: a .pth line that adds each of its
    # site folders, .pth files included (editable installs are .pth files). `--system-site-packages` would
    # expose the base interpreter's instead, which inside a virtualenv is the wrong one.
    own_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})" for d in active_site_dirs()]
    (Path(own_site) / "zz_active_environment.pth").write_text("\n".join(lines) + "\n")
    res = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",  # the build backend is the active environment's (no download)
            "--no-input",
            "--disable-pip-version-check",
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return python


def example_env(**extra: str) -> dict[str, str]:
    return env_with(VFEVAL_PLUGINS=f"{FIRST_PARTY},example", **extra)


def test_installed_distribution_is_a_real_install(venv):
    res = subprocess.run(
        [
            str(venv),
            "-c",
            textwrap.dedent("""
            import sys
            from importlib import metadata
            import vfeval_example.plugin, vfeval_example.csv_mc, vfeval_example.motion
            dist = metadata.distribution("vfeval-example")
            eps = [(e.name, e.value) for e in dist.entry_points if e.group == "vfeval"]
            print(vfeval_example.__file__)
            print(eps)
            # registering must stay light: nothing that decodes video or runs a network
            print(sorted(m for m in ("av", "torch", "jax") if m in sys.modules))
        """),
        ],
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    location, eps, heavy = res.stdout.strip().splitlines()
    assert "site-packages" in location and str(EXAMPLE) not in location
    assert eps == "[('example', 'vfeval_example.plugin')]"
    assert heavy == "[]"


def test_ls_and_plugins_show_what_the_example_registers(venv):
    res = vfeval(venv, "ls", env=example_env())
    assert res.returncode == 0, res.stderr
    rows = {line.split("│")[1].strip(): line for line in res.stdout.splitlines() if line.count("│") > 2}
    assert "example" in rows["csv-mc"] and "v1" in rows["csv-mc"]
    assert (
        "example" in rows["motion"] and "embed_video" in rows["motion"] and "embed_text" not in rows["motion"]
    )
    assert "baselines" in rows["pixel"]  # first-party plugins load alongside

    res = vfeval(venv, "plugins", env=example_env())
    assert res.returncode == 0, res.stderr
    line = next(line for line in res.stdout.splitlines() if "vfeval_example.plugin" in line)
    assert "example" in line and "vfeval-example 0.1.0" in line and "ok" in line


def test_the_plugin_stays_out_unless_allowed(venv):
    res = vfeval(venv, "ls", "tasks", env=env_with(VFEVAL_PLUGINS=FIRST_PARTY))
    assert res.returncode == 0, res.stderr
    assert "egoschema" in res.stdout and "csv-mc" not in res.stdout


def colour_dataset(root: Path) -> Path:
    """Four one-colour videos and a questions.csv asking which colour fills each (plus one open question)."""
    (root / "videos").mkdir(parents=True)
    for name, rgb in COLOURS.items():
        frames = np.broadcast_to(np.array(rgb, dtype=np.uint8), (8, 32, 32, 3))
        write_video(root / "videos" / f"{name}.mp4", frames, fps=8)
    names = list(COLOURS)
    with open(root / "questions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "question", "option_0", "option_1", "option_2", "option_3", "answer"])
        for i, name in enumerate(names):
            options = [n for n in names if n != name]
            options.insert(i, name)  # the answer moves through every position
            writer.writerow(
                [f"videos/{name}.mp4", "Which colour fills the video?", *options, options.index(name)]
            )
        writer.writerow(["videos/red.mp4", "Is it day or night?", "day", "night", "", "", ""])
    return root


def run_config(tmp: Path, encoder: str = "pixel", aggregator: str = "identity") -> Path:
    path = tmp / "csv-mc.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        # vfeval run csv-mc.yaml task.root=DATA
        task:
          name: csv-mc
          split: test
        pipeline:
          encoder: {{name: {encoder}}}
          aggregator: {{name: {aggregator}}}
          sampling: {{mode: uniform, num_frames: 4, size: 32, crop: 32}}
        run: {{batch_size: 4, workers: 1}}
        output: {{dir: {tmp / "runs"}, cache_dir: {tmp / "cache"}}}
    """)
    )
    return path


def test_vfeval_run_uses_the_plugin_task(venv, tmp_path):
    data = colour_dataset(tmp_path / "data")
    config = run_config(tmp_path)
    res = vfeval(
        venv, "run", str(config), f"task.root={data}", "--name", "colours", env=example_env(), cwd=tmp_path
    )
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads((tmp_path / "runs" / "colours" / "results.json").read_text())
    assert result["task"]["name"] == "csv-mc" and result["task"]["n"] == 5 and result["task"]["n_failed"] == 0
    accuracy = result["metrics"]["accuracy"]
    assert accuracy["value"] == 100.0 and accuracy["n"] == 4 and accuracy["ci95"] == [100.0, 100.0]
    assert result["metrics"]["chance"]["value"] == 25.0
    assert any("no answer" in note for note in result["notes"])
    assert result["provenance"]["plugins"]["example"] == "vfeval-example 0.1.0"
    assert len(result["protocol"]["options"]["questions_sha256"]) == 64

    samples = [
        json.loads(line)
        for line in (tmp_path / "runs" / "colours" / "samples.jsonl").read_text().splitlines()
    ]
    open_question = samples[-1]
    assert open_question["target"] is None and open_question["correct"] is None
    assert open_question["prediction"] in (0, 1)
    assert [s["correct"] for s in samples[:4]] == [True] * 4


def test_missing_csv_is_a_usage_error_naming_file_and_columns(venv, tmp_path):
    res = vfeval(
        venv, "run", str(run_config(tmp_path)), f"task.root={tmp_path / 'nowhere'}", env=example_env()
    )
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(tmp_path / "nowhere" / "questions.csv") in lines[0]
    assert "video,question,option_0..option_N,answer" in lines[0]


def test_motion_cannot_answer_multiple_choice(venv, tmp_path):
    data = colour_dataset(tmp_path / "data")
    res = vfeval(
        venv, "run", str(run_config(tmp_path, encoder="motion")), f"task.root={data}", env=example_env()
    )
    assert res.returncode == 2
    assert "cannot embed text" in res.stderr and "'motion'" in res.stderr


MOTION_SCRIPT = """
import json, sys
import numpy as np
from vfeval.config import SamplingConfig
from vfeval.plugins import get_plugin_manager
from vfeval.requests import VideoWindow
from vfeval.video import read_window

spec = get_plugin_manager().registry.get("encoders", "motion")
config = spec.config(grid=4, bins=4)
encoder = spec.load()(config)
sampling = SamplingConfig(mode="uniform", num_frames=8, size=32, crop=32)
out = {}
for name in sys.argv[1:]:
    clips = read_window(VideoWindow(name, name), sampling)
    emb = encoder.embed_video([c.frames for c in clips])
    out[name] = {"dtype": str(emb.dtype), "shape": list(emb.shape), "values": emb[0].tolist()}
print(json.dumps(out))
"""


def test_motion_encoder_on_real_clips(venv, tmp_path):
    static = np.broadcast_to(np.array([40, 120, 200], dtype=np.uint8), (12, 32, 32, 3)).copy()
    moving = np.full((12, 32, 32, 3), 16, dtype=np.uint8)
    for t in range(12):  # a white 8x8 square crossing the top quarter of the frame, left to right
        x = 2 * t
        moving[t, 0:8, x : x + 8] = 235
    write_video(tmp_path / "static.mp4", static, fps=8)
    write_video(tmp_path / "moving.mp4", moving, fps=8)

    res = subprocess.run(
        [str(venv), "-c", MOTION_SCRIPT, str(tmp_path / "static.mp4"), str(tmp_path / "moving.mp4")],
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    still, move = (np.asarray(out[str(tmp_path / n)]["values"]) for n in ("static.mp4", "moving.mp4"))
    assert out[str(tmp_path / "moving.mp4")]["dtype"] == "float32"
    assert out[str(tmp_path / "moving.mp4")]["shape"] == [1, 4 * 4 * 3 + 4]

    assert np.abs(still).max() < 1e-3  # nothing moves
    where = move[:48].reshape(4, 4, 3).mean(axis=-1)  # [grid rows, grid cols]
    when = move[48:]
    assert where[0].min() > 0.05  # the square crosses every cell of the top row...
    assert where[2:].max() < 0.01  # ...and never the bottom half
    assert when.min() > 0.005  # and it moves all along the clip


def test_template_command(venv, tmp_path):
    out = tmp_path / "sub" / "questions.csv"
    res = vfeval(venv, "csv-mc-template", "--out", str(out), env=example_env())
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["video", "question", "option_0", "option_1", "option_2", "option_3", "answer"]
    assert len(rows) == 3 and rows[1][-1] == "0" and rows[2][-1] == ""

    res = vfeval(venv, "csv-mc-template", "--out", str(out), env=example_env())
    assert res.returncode == 2 and "--force" in res.stderr

    # The template is a valid question file: the task loads it (the videos it names are up to the user).
    res = subprocess.run(
        [
            str(venv),
            "-c",
            "import sys; from vfeval_example.csv_mc import CsvMcConfig, make_task; "
            "s = make_task(CsvMcConfig(root=sys.argv[1])).load(); print(len(s), s[0].target, s[1].target)",
            str(out.parent),
        ],
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["2", "0", "None"]


# -- broken plugins --------------------------------------------------------------------------------------


def fake_distribution(site: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """An installed distribution as importlib.metadata sees one: a .dist-info folder plus its modules."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{ep} = {target}" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[vfeval]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return site


def site_env(site: Path, plugins: str, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return env_with(PYTHONPATH=path, VFEVAL_PLUGINS=f"{FIRST_PARTY},{plugins}", **extra)


@pytest.fixture
def broken_site(tmp_path) -> Path:
    return fake_distribution(
        tmp_path / "site",
        "broken-plugin",
        {"broken": "broken_plugin_mod"},
        {
            "broken_plugin_mod": 'raise ImportError("broken_plugin_mod needs libfoo 9, which is not installed")\n'
        },
    )


def test_a_plugin_that_fails_to_import_breaks_nothing_else(broken_site):
    env = site_env(broken_site, "broken")
    res = vfeval(sys.executable, "plugins", env=env)
    assert res.returncode == 0, res.stderr
    line = next(line for line in res.stdout.splitlines() if "broken_plugin_mod" in line)
    assert "broken" in line and "failed" in line and "ImportError" in line and "libfoo 9" in line
    assert any("baselines" in line and "ok" in line for line in res.stdout.splitlines())

    res = vfeval(sys.executable, "ls", "tasks", env=env)
    assert res.returncode == 0, res.stderr
    assert "egoschema" in res.stdout


def test_strict_plugins_make_the_failure_fatal(broken_site):
    res = vfeval(sys.executable, "ls", env=site_env(broken_site, "broken", VFEVAL_STRICT_PLUGINS="1"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "'broken'" in lines[0] and "ImportError" in lines[0]
    assert "Traceback" not in res.stderr


MISSPELT = """
from vfeval import hookimpl
from vfeval.specs import TaskSpec


@hookimpl
def register_task(register):  # the hook is register_tasks
    register(TaskSpec(name="never-seen", factory="misspelt_mod:make"))
"""


def test_a_misspelt_hook_name_is_caught(tmp_path):
    site = fake_distribution(
        tmp_path / "site", "misspelt-plugin", {"misspelt": "misspelt_mod"}, {"misspelt_mod": MISSPELT}
    )
    res = vfeval(sys.executable, "plugins", env=site_env(site, "misspelt"))
    assert res.returncode == 0, res.stderr
    line = next(line for line in res.stdout.splitlines() if "misspelt_mod" in line)
    assert "failed" in line and "register_task" in line
    res = vfeval(sys.executable, "ls", "tasks", env=site_env(site, "misspelt"))
    assert res.returncode == 0 and "egoschema" in res.stdout and "never-seen" not in res.stdout

    res = vfeval(sys.executable, "ls", env=site_env(site, "misspelt", VFEVAL_STRICT_PLUGINS="1"))
    assert res.returncode == 2
    assert (
        len(res.stderr.strip().splitlines()) == 1
        and "'misspelt'" in res.stderr
        and "register_task" in res.stderr
    )


def encoder_plugin(name: str) -> str:
    return f"""
from vfeval import hookimpl
from vfeval.specs import EncoderSpec


@hookimpl
def register_encoders(register):
    register(EncoderSpec(name={name!r}, factory="vfeval_baselines.encoders.pixel:make_encoder"))
"""


def test_two_plugins_registering_one_name_make_only_that_name_unusable(tmp_path, ego_answers_root):
    site = fake_distribution(
        tmp_path / "site",
        "twins",
        {"twin_a": "twin_a_mod", "twin_b": "twin_b_mod"},
        {"twin_a_mod": encoder_plugin("twin-encoder"), "twin_b_mod": encoder_plugin("twin-encoder")},
    )
    env = site_env(site, "twin_a,twin_b")
    res = vfeval(sys.executable, "ls", env=env)  # everything else still lists...
    assert res.returncode == 0, res.stderr
    assert "egoschema" in res.stdout and "pixel" in res.stdout
    row = next(line for line in res.stdout.splitlines() if "twin-encoder" in line)
    assert "twin_a" in row and "twin_b" in row and "unusable" in row
    res = vfeval(sys.executable, "plugins", env=env)
    assert res.returncode == 0, res.stderr
    assert "'twin-encoder' unusable: also registered by twin_b" in res.stdout

    # ...and runs that use neither work, while the contested name is one line naming both plugins.
    outputs = [f"output.dir={tmp_path / 'runs'}", f"output.cache_dir={tmp_path / 'cache'}"]
    res = vfeval(sys.executable, "run", str(EGO), f"task.root={ego_answers_root}", "pipeline.encoder.name=hashed-text",
                 "pipeline.aggregator.name=constant", *outputs, env=env)
    assert res.returncode == 0, res.stderr
    res = vfeval(sys.executable, "run", str(EGO), f"task.root={ego_answers_root}",
                 "pipeline.encoder.name=twin-encoder", *outputs, env=env)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "'twin-encoder'" in lines[0] and "'twin_a'" in lines[0] and "'twin_b'" in lines[0]

    # Each on its own is fine.
    res = vfeval(sys.executable, "ls", "encoders", env=site_env(site, "twin_b"))
    assert res.returncode == 0 and "twin-encoder" in res.stdout and "twin_b" in res.stdout


def test_strict_plugins_make_a_contested_name_fatal(tmp_path):
    site = fake_distribution(
        tmp_path / "site", "imposter", {"imposter": "imposter_mod"}, {"imposter_mod": encoder_plugin("pixel")}
    )
    res = vfeval(sys.executable, "ls", env=site_env(site, "imposter", VFEVAL_STRICT_PLUGINS="1"))
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "'pixel'" in res.stderr and "'baselines'" in res.stderr and "'imposter'" in res.stderr


def test_a_plugin_cannot_take_a_first_party_name(tmp_path):
    site = fake_distribution(
        tmp_path / "site", "imposter", {"imposter": "imposter_mod"}, {"imposter_mod": encoder_plugin("pixel")}
    )
    env = site_env(site, "imposter")
    res = vfeval(sys.executable, "run", str(EGO), f"task.root={tmp_path}", env=env)  # egoschema.yaml uses pixel
    assert res.returncode == 2
    assert "'pixel'" in res.stderr and "'baselines'" in res.stderr and "'imposter'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_asking_for_what_a_broken_plugin_registers_says_it_failed_and_why(broken_site, tmp_path):
    config = run_config(tmp_path)  # csv-mc, a task of the example plugin, which is not installed here
    res = vfeval(sys.executable, "run", str(config), f"task.root={tmp_path}", env=site_env(broken_site, "broken"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "unknown task 'csv-mc'" in lines[0]
    assert "plugin 'broken' failed" in lines[0] and "ImportError" in lines[0] and "libfoo 9" in lines[0]
