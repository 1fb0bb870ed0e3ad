"""The leaderboard as users meet it: records refused by field, protocols that rank apart, the static site,
and suites (`vfeval run` on a YAML with a `suite` key) that fill it."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vfeval import hookimpl
from vfeval.config import load_run_config
from vfeval.errors import UsageError
from vfeval.hashing import fingerprint
from vfeval.leaderboard.build import build_site, script_json
from vfeval.leaderboard.records import Record, add_run, load_records, rank
from vfeval.plugins import get_plugin_manager
from vfeval.results import ResultError, validate
from vfeval.runner import run
from vfeval.specs import EncoderSpec
from vfeval.testing import ConstantEncoder, registered_plugin

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert(1)</script>"


def vfeval(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfeval", *args], capture_output=True, text=True, cwd=cwd)


def make_runs(root: Path) -> dict[str, Path]:
    """Real runs of non-learned pipelines on tiny synthetic EgoSchema data: {label: run folder}."""
    from vfeval_benchmarks.synthetic import write_synthetic

    data = root / "data"
    write_synthetic(data, formats=["egoschema"], n_videos=6, n_train_videos=0, duration=8, fps=4, size=32, workers=1)
    host = get_plugin_manager()
    common = [f"task.root={data / 'egoschema'}", "task.name=egoschema", "task.split=subset",
              "pipeline.sampling.size=32", "pipeline.sampling.crop=32", f"output.dir={root / 'runs'}",
              f"output.cache_dir={root / 'cache'}"]
    pipelines = {
        "pixel-4f": ["pipeline.encoder.name=pixel", "pipeline.sampling.num_frames=4"],
        "pixel-8f": ["pipeline.encoder.name=pixel", "pipeline.sampling.num_frames=8"],
        "random": ["pipeline.encoder.name=hashed-text", "pipeline.aggregator.name=random"],
        "blind": ["pipeline.encoder.name=hashed-text", "pipeline.aggregator.name=blind"],
        "limited": ["pipeline.encoder.name=hashed-text", "pipeline.aggregator.name=blind", "run.limit=3"],
    }
    out = {}
    for label, extra in pipelines.items():
        cfg = load_run_config(None, [*common, *extra, f"output.name={label}"], host.registry)
        out[label] = run(cfg, host, progress=False).run_dir
    return out


def hostile_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a real run whose run and encoder names are HTML/JS payloads."""
    data = json.loads((run_dir / "results.json").read_text())
    data["run"]["name"] = f"evil {HOSTILE}"
    data["pipeline"]["encoder"]["name"] = f"enc{HOSTILE}<img src=x onerror=alert(2)>"
    data["pipeline"]["aggregator"]["config"]["template"] = "</script><script>alert(3)</script>"
    dest.mkdir(parents=True)
    (dest / "results.json").write_text(json.dumps(data))
    (dest / "samples.jsonl").write_text((run_dir / "samples.jsonl").read_text())
    return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return make_runs(tmp_path_factory.mktemp("lb"))


@pytest.fixture
def record(runs) -> dict:
    return json.loads((runs["pixel-4f"] / "results.json").read_text())


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def _set(data: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data[key]
    if value is KeyError:
        del data[leaf]
    else:
        data[leaf] = value


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("task.n", KeyError, "field 'task.n' is missing"),
        ("task.n", "80", "field 'task.n' must be a non-negative integer"),
        ("run.name", "", "field 'run.name' must be a non-empty string"),
        ("pipeline.encoder", "pixel", "field 'pipeline.encoder' must be an object"),
        ("metrics.accuracy.value", "high", "field 'metrics.accuracy.value' must be a finite number or null"),
        ("metrics.accuracy.value", float("nan"), "field 'metrics.accuracy.value' is nan"),
        ("metrics.accuracy.ci95", [float("-inf"), 1.0], "field 'metrics.accuracy.ci95.0' is -inf"),
        ("cost.wall_s", float("inf"), "field 'cost.wall_s' is inf"),
        ("breakdowns.accuracy_by_type", {"x": {"value": "?"}}, "field 'breakdowns.accuracy_by_type.x.value'"),
        ("run.config.deep", _nested(40), "field 'run.config.deep.x' is nested more than 32 levels deep"),
        ("complete", "yes", "field 'complete' must be true or false"),
        ("schema", "vfeval.result/0", "field 'schema' is \"vfeval.result/0\""),
        ("protocol.options.data", "real", "field 'protocol.fingerprint' does not match"),
        ("protocol.split", "full", "field 'protocol.split' (\"full\") disagrees with 'task.split'"),
        ("task.limit", 3, "field 'complete' is true"),
        ("headline", "recall", "field 'headline' names \"recall\""),
    ],
)
def test_a_bad_record_is_refused_with_one_line_naming_the_field(record, field, value, message):
    validate(record)
    bad = copy.deepcopy(record)
    _set(bad, field, value)
    with pytest.raises(ResultError) as info:
        validate(bad)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_add_copies_the_record_and_its_samples_and_the_cli_refuses_a_bad_one(tmp_path, runs):
    res = vfeval("leaderboard", "add", str(runs["pixel-4f"]), str(runs["limited"]), "--dir", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    fp = json.loads((runs["pixel-4f"] / "results.json").read_text())["pipeline"]["fingerprint"]
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert f"egoschema-subset-pixel-4f-{fp}.json" in names
    assert f"egoschema-subset-pixel-4f-{fp}.samples.jsonl" in names and len(names) == 4

    bad = tmp_path / "bad"
    bad.mkdir()
    data = json.loads((runs["blind"] / "results.json").read_text())
    data["task"]["n_failed"] = "none"
    (bad / "results.json").write_text(json.dumps(data))
    res = vfeval("leaderboard", "add", str(bad), "--dir", str(tmp_path / "r"))
    assert res.returncode == 2
    assert "field 'task.n_failed' must be a non-negative integer" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert len(list((tmp_path / "r").iterdir())) == 4


def test_protocols_rank_apart_and_incomplete_runs_are_shown_but_not_ranked(tmp_path, runs):
    for label in ("pixel-4f", "pixel-8f", "random", "blind", "limited"):
        add_run(runs[label], tmp_path)
    real = json.loads((runs["blind"] / "results.json").read_text())
    real["protocol"]["options"]["data"] = "real-looking"
    real["protocol"]["fingerprint"] = fingerprint({k: v for k, v in real["protocol"].items() if k != "fingerprint"})
    (tmp_path / "other.json").write_text(json.dumps(real))

    groups = rank(load_records(tmp_path))
    assert len(groups) == 2
    main = next(g for g in groups if g.synthetic)
    assert len(main.records) == 5 and len(main.ranked) == 4
    limited = next(r for r in main.records if r.run == "limited")
    assert limited.rank is None and limited.unranked_reason == "limited to 3 samples"
    values = [r.value for r in main.ranked]
    assert values == sorted(values, reverse=True) and main.ranked[0].rank == 1
    other = next(g for g in groups if not g.synthetic)
    assert [r.rank for r in other.records] == [1]  # ranked only against its own protocol


def test_table_prints_markdown_and_csv(tmp_path, runs):
    for label in ("pixel-4f", "blind", "limited"):
        add_run(runs[label], tmp_path)
    md = vfeval("leaderboard", "table", "--results", str(tmp_path))
    assert md.returncode == 0, md.stderr
    lines = md.stdout.strip().splitlines()
    assert lines[0].startswith("| task | split | protocol |") and len(lines) == 2 + 3
    assert "limited to 3 samples" in md.stdout
    csv = vfeval("leaderboard", "table", "--results", str(tmp_path), "--format", "csv")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("task,split,protocol")
    bad = vfeval("leaderboard", "table", "--results", str(tmp_path), "--format", "xml")
    assert bad.returncode == 2 and "--format" in bad.stderr


def _write_extras(results: Path) -> None:
    (results / "profiles").mkdir()
    rows = [{"kind": "train", "frames": f, "mask_ratio": r, "trainable_layers": -1, "batch": 2,
             "peak_mib": f * (1 - r) + 10, "step_s": 0.1} for f in (8, 16, 32) for r in (0.0, 0.75)]
    (results / "profiles" / "tiny.json").write_text(json.dumps(
        {"schema": "vfeval.profile/1", "encoder": {"name": "videofirst", "options": {"variant": "tiny"}},
         "device": "cpu", "rows": rows}))
    (results / "training").mkdir()
    lines = [json.dumps({"step": s, "loss": 3.0 - s / 100, "lr": 1e-4}) for s in range(10, 110, 10)]
    (results / "training" / "mask0.jsonl").write_text("\n".join(lines) + "\n")


def test_the_site_is_static_escaped_and_labelled(tmp_path, runs):
    results = tmp_path / "results"
    for label in ("pixel-4f", "pixel-8f", "random", "blind", "limited"):
        add_run(runs[label], results)
    add_run(hostile_run(runs["blind"], tmp_path / "evil"), results)
    _write_extras(results)
    res = vfeval("leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "site"))
    assert res.returncode == 0, res.stderr
    site = tmp_path / "site"
    index = (site / "index.html").read_text()
    pages = [site / "index.html", *site.glob("protocols/*.html"), *site.glob("results/*.html")]
    assert len(list(site.glob("protocols/*.html"))) == 1 and len(list(site.glob("results/*.html"))) == 6
    assert len(list(site.glob("results/*.samples.jsonl"))) == 6
    assert "synthetic data" in index and index.count("<svg") == 3  # frames, memory, training loss
    for page in pages:
        html = page.read_text()
        assert not re.search(r'(src|href)="(https?:)?//', html), page  # nothing from the network
        for raw in ("<script>alert", "<img src=x", "</script><script>"):
            assert raw not in html, (page, raw)
        scripts = re.findall(r"<script\b[^>]*>", html)
        assert all('src="../assets/site.js"' in s or 'src="assets/site.js"' in s or "application/json" in s
                   for s in scripts), scripts
    page = next(p for p in site.glob("results/*pixel-4f*.html")).read_text()
    record = json.loads(next(results.glob("*pixel-4f*.json")).read_text())
    low, high = record["metrics"]["accuracy"]["ci95"]
    assert f"{low:.2f} – {high:.2f}" in page  # intervals rounded as the values are
    # Every breakdown is on the page: accuracy by question type, with its interval.
    by_type = record["breakdowns"]["accuracy_by_type"]
    assert ">accuracy_by_type<" in page and all(f"<td>{t}</td>" in page for t in by_type)
    evil = next(p for p in site.glob("results/*.html") if "evil" in p.name).read_text()
    assert "evil &lt;script&gt;alert(1)&lt;/script&gt;" in evil
    assert "onerror=alert(2)&gt;" in evil
    proto = next(site.glob("protocols/*.html")).read_text()
    island = re.search(r'<script type="application/json" id="rows-data">(.*?)</script>', proto, re.S).group(1)
    assert "<" not in island and json.loads(island)[0]["rank"] == 1
    assert any(row["run"] == f"evil {HOSTILE}" for row in json.loads(island))


def test_script_json_cannot_close_its_element():
    text = script_json({"a": "</script><!-- & -->"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & -->"}


def test_build_refuses_a_bad_record_naming_it_and_the_field(tmp_path, runs):
    results = tmp_path / "results"
    add_run(runs["pixel-4f"], results)
    data = json.loads((runs["blind"] / "results.json").read_text())
    data["metrics"]["accuracy"]["ci95"] = "wide"
    (results / "broken.json").write_text(json.dumps(data))
    res = vfeval("leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "site"))
    assert res.returncode == 2
    assert "broken.json" in res.stderr and "field 'metrics.accuracy.ci95'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "site").exists()
    # A folder the builder did not make is never emptied.
    (results / "broken.json").unlink()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    res = vfeval("leaderboard", "build", "--results", str(results), "--out", str(mine))
    assert res.returncode == 2 and "not empty" in res.stderr and (mine / "notes.txt").exists()


def test_build_refuses_a_bad_profile_naming_the_field(tmp_path, runs):
    results = tmp_path / "results"
    add_run(runs["pixel-4f"], results)
    (results / "profiles").mkdir()
    (results / "profiles" / "p.json").write_text(json.dumps(
        {"schema": "vfeval.profile/1", "rows": [{"kind": "train", "frames": 8, "peak_mib": "lots"}]}))
    with pytest.raises(UsageError) as info:
        build_site(results, tmp_path / "site")
    assert "rows[0].peak_mib" in str(info.value)


def test_records_from_real_runs_fill_the_columns(runs):
    rec = Record(json.loads((runs["pixel-8f"] / "results.json").read_text()))
    assert rec.frames == 8 and rec.family == "baseline" and rec.synthetic
    samples = (runs["pixel-8f"] / "samples.jsonl").read_text().splitlines()
    assert rec.value is not None and rec.ci is not None and rec.n == len(samples) > 0


def _make_video_first(config):
    return ConstantEncoder()


class FamilyPlugin:
    """A third-party encoder that declares its family."""

    def __init__(self, family: str) -> None:
        self.family = family

    @hookimpl
    def register_encoders(self, register):
        register(EncoderSpec(name="const-vf", factory=_make_video_first, family=self.family,
                             capabilities=("embed_video", "embed_text")))


def test_the_runner_records_the_family_the_specs_declare_and_the_leaderboard_reads_only_that(runs, tmp_path):
    host = get_plugin_manager()
    data = json.loads((runs["pixel-4f"] / "results.json").read_text())["run"]["config"]["task"]["root"]
    results = {}
    for family, aggregator in (("video-first", "identity"), ("video-first", "random"), ("other", "identity")):
        with registered_plugin(host, FamilyPlugin(family), "family-plugin"):
            cfg = load_run_config(None, [
                "task.name=egoschema", f"task.root={data}", "task.split=subset", "pipeline.encoder.name=const-vf",
                f"pipeline.aggregator.name={aggregator}", "pipeline.sampling.num_frames=2",
                "pipeline.sampling.size=32", "pipeline.sampling.crop=32", f"output.dir={tmp_path / 'runs'}",
                f"output.cache_dir={tmp_path / 'cache'}", f"output.name={family}-{aggregator}"], host.registry)
            results[family, aggregator] = run(cfg, host, progress=False).result["pipeline"]
    assert results["video-first", "identity"]["family"] == "video-first"
    assert results["video-first", "random"]["family"] == "baseline"  # the aggregator's family wins
    assert results["other", "identity"]["family"] == "other"
    # The family names a column, not a computation: it is outside the pipeline fingerprint.
    assert results["other", "identity"]["fingerprint"] == results["video-first", "identity"]["fingerprint"]
    # A record written before families were recorded: nothing is derived from its plugin names.
    old = json.loads((runs["pixel-4f"] / "results.json").read_text())
    old["pipeline"]["encoder"]["name"] = "videofirst"
    assert old["pipeline"]["encoder"]["backend"] == "numpy"
    del old["pipeline"]["family"], old["pipeline"]["encoder"]["backend"]
    validate(old)
    assert Record(old).family == "other" and Record(old).family_label == "other"
    # The backend is the record's pipeline.encoder.backend, and nothing else.
    assert Record(old).backend == ""
    old["pipeline"]["encoder"]["config"]["backend"] = "jax"
    assert Record(old).backend == ""
    old["pipeline"]["encoder"]["backend"] = "jax"
    assert Record(old).backend == "jax"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_site_is_a_pure_function_of_the_results_folder(tmp_path, runs):
    """Built with the first-party plugins and with no plugin at all (not even the core's), the committed
    records and fresh ones give the same bytes."""
    for name, results in (("committed", REPO / "leaderboard" / "results"), ("fresh", tmp_path / "fresh")):
        if name == "fresh":
            for label in ("pixel-4f", "random", "limited"):
                add_run(runs[label], results)
            record = json.loads(next(results.glob("*pixel-4f*.json")).read_text())
            assert record["pipeline"]["family"] == "baseline"
        sites = {}
        for plugins in ("core,benchmarks,baselines,videofirst", ""):
            out = tmp_path / f"site-{name}-{plugins.count(',')}"
            env = {**os.environ, "VFEVAL_PLUGINS": plugins}
            res = subprocess.run([sys.executable, "-m", "vfeval", "leaderboard", "build", "--results", str(results),
                                  "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
            assert res.returncode == 0, res.stderr
            sites[plugins] = _tree(out)
        with_plugins, without = sites.values()
        assert with_plugins.keys() == without.keys() and len(with_plugins) > 5
        assert [k for k in with_plugins if with_plugins[k] != without[k]] == []


def test_leaderboard_add_refuses_nan_and_deep_nesting_in_one_line_naming_file_and_field(tmp_path, runs):
    text = (runs["blind"] / "results.json").read_text()
    cases = {
        "nan": (text.replace('"value": ', '"value": NaN, "was": ', 1), "field 'metrics.accuracy.value' is nan"),
        "inf": (text.replace('"wall_s": ', '"wall_s": Infinity, "was": ', 1), "field 'cost.wall_s' is inf"),
        "deep": (text.replace('"config": {', '"config": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ", ", 1),
                 "nested more than 32 levels deep"),
        "deep-ok-json": (text.replace('"config": {', '"config": {"deep": ' + "[" * 200 + "]" * 200 + ", ", 1),
                         "field 'run.config.deep.0' is nested more than 32 levels deep"),
    }
    for name, (body, message) in cases.items():
        bad = tmp_path / name
        bad.mkdir()
        (bad / "results.json").write_text(body)
        for command in (["leaderboard", "add", str(bad), "--dir", str(tmp_path / "r")],
                        ["leaderboard", "build", "--results", str(bad), "--out", str(tmp_path / "site")]):
            res = vfeval(*command)
            assert res.returncode == 2, (name, command, res.stderr[-300:])
            assert message in res.stderr and str(bad / "results.json") in res.stderr, (name, res.stderr[-300:])
            assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


SUITE = """\
suite:
  name: tiny
  vars: {{data: data}}
  prepare:
    data:
      command: data synthetic --out ${{suite.vars.data}} --videos 6 --train-videos 0 --duration 8 --size 32 --workers 1
      creates: ["${{suite.vars.data}}/README.md"]
  train:
    model:
      config: {repo}/configs/train/synthetic.yaml
      overrides: [trainer=no-such-trainer]
      checkpoint: runs/train-tiny/final.safetensors
  tasks:
    egoschema: {{config: {repo}/configs/egoschema.yaml, overrides: ["task.root=${{suite.vars.data}}/egoschema"]}}
  pipelines:
    pixel: {{pipeline: {{encoder: {{name: pixel}}, sampling: {{num_frames: 4, size: 32, crop: 32}}}}}}
    random: {{pipeline: {{encoder: {{name: hashed-text}}, aggregator: {{name: random}}}}}}
    trained:
      needs: [runs/train-tiny/final.safetensors]
      pipeline: {{encoder: {{name: videofirst, checkpoint: runs/train-tiny/final.safetensors}}}}
  leaderboard: {{results: board/results, site: board/site}}
"""


def test_a_suite_runs_everything_once_skips_what_cannot_run_and_builds_the_site(tmp_path):
    (tmp_path / "suite.yaml").write_text(SUITE.format(repo=REPO))
    env = {**os.environ, "VFEVAL_CACHE": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-m", "vfeval", "run", "suite.yaml"], capture_output=True, text=True,
                           cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "trainer 'no-such-trainer' is not registered" in out
    assert "egoschema / trained: needs runs/train-tiny/final.safetensors" in out
    index = tmp_path / "board" / "site" / "index.html"
    assert f"leaderboard site: {index}" in out.replace("\n", "")
    assert len(list((tmp_path / "board" / "results").glob("*.json"))) == 2
    assert (tmp_path / "runs" / "tiny" / "egoschema" / "pixel" / "results.json").is_file()

    again = subprocess.run([sys.executable, "-m", "vfeval", "run", "suite.yaml"], capture_output=True, text=True,
                           cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "prepare data: up to date" in again.stdout
    assert len(re.findall(r"(\d+) of \1 answers from the cache", again.stdout)) == 2
    assert len(list((tmp_path / "board" / "results").glob("*.json"))) == 2


def test_suite_config_mistakes_are_usage_errors(tmp_path):
    (tmp_path / "s.yaml").write_text("suite:\n  name: x\n  pipelines:\n    p: {tasks: [nope]}\n")
    res = vfeval("run", str(tmp_path / "s.yaml"), cwd=tmp_path)
    assert res.returncode == 2 and "'suite.pipelines.p.tasks' names 'nope'" in res.stderr
    (tmp_path / "s.yaml").write_text("suite:\n  name: x\n  tasks:\n    t: {confg: a.yaml}\n")
    res = vfeval("run", str(tmp_path / "s.yaml"), cwd=tmp_path)
    assert res.returncode == 2 and "confg" in res.stderr
    (tmp_path / "s.yaml").write_text("suite:\n  name: x\n")
    res = vfeval("run", str(tmp_path / "s.yaml"), "--name", "y", cwd=tmp_path)
    assert res.returncode == 2 and "--name" in res.stderr


def test_the_quickstart_and_suites_load():
    from vfeval.suite import load_suite

    quick = load_suite(REPO / "configs" / "quickstart.yaml")
    assert set(quick.tasks) >= {"egoschema", "msrvtt", "youcook2"}
    assert {"stage1", "stage2"} <= set(quick.train)
    assert any(p.pipeline.get("encoder", {}).get("name") == "videofirst" for p in quick.pipelines.values())
    for path in (REPO / "configs" / "suites").glob("*.yaml"):
        assert load_suite(path).tasks


def test_help_does_not_import_the_leaderboard_libraries():
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "vfeval", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in res.stderr.splitlines() if "|" in line}
    assert not imported & {"matplotlib", "pandas", "jinja2"}
