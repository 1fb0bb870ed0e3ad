"""The leaderboard site in a real browser (Playwright driving the system's Chromium, from file:// URLs):
tables sort and filter, plots render, and record strings are shown as text and never run."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from vfeval.leaderboard.build import build_site
from vfeval.leaderboard.records import add_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

if not CHROMIUM.is_file():
    pytest.skip("no /usr/bin/chromium (CI installs it: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from test_leaderboard import HOSTILE, hostile_run, make_runs  # noqa: E402  (after the skips, on purpose)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    runs = make_runs(root)
    results = root / "results"
    for run in runs.values():
        add_run(run, results)
    add_run(hostile_run(runs["blind"], root / "evil"), results)
    return build_site(results, root / "site").parent


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page that records every dialog (alert, confirm, prompt) and script error it sees."""
    context = browser.new_context()
    pg = context.new_page()
    pg.dialogs, pg.errors = [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    context.close()


def _protocol_url(site: Path) -> str:
    return next((site / "protocols").glob("*.html")).as_uri()


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        "#results tbody tr:not([hidden])", f"rows => rows.map(r => r.cells[{index}].innerText.trim())"
    )


def test_the_table_sorts_when_a_header_is_clicked(page, site):
    page.goto(_protocol_url(site))
    assert page.url.startswith("file://")
    headers = page.eval_on_selector_all("#results th", "ths => ths.map(t => t.innerText.trim())")
    run_col, metric_col = headers.index("run"), headers.index("metric [95% CI]")

    def metric_values() -> list[float]:
        return [float(v.split()[0]) for v in _column(page, metric_col)]

    page.click("#results th[data-key=value] button")
    assert metric_values() == sorted(metric_values())
    assert page.get_attribute("#results th[data-key=value]", "aria-sort") == "ascending"
    page.click("#results th[data-key=value] button")
    assert metric_values() == sorted(metric_values(), reverse=True)
    page.click("#results th[data-key=run] button")
    names = _column(page, run_col)
    assert [n.splitlines()[0] for n in names] == sorted((n.splitlines()[0] for n in names), key=str.lower)
    assert not page.errors


def test_the_filter_box_hides_rows_that_do_not_match(page, site):
    page.goto(_protocol_url(site))
    total = len(_column(page, 0))
    page.fill("input[data-filter=results]", "pixel")
    runs = [r.splitlines()[0] for r in _column(page, 1)]
    assert sorted(runs) == ["pixel-4f", "pixel-8f"]
    assert page.inner_text("[data-count=results]") == f"2 of {total} results"
    page.fill("input[data-filter=results]", "")
    assert len(_column(page, 0)) == total


def test_plots_render_as_svg_with_paths(page, site):
    page.goto((site / "index.html").as_uri())
    svgs = page.locator("figure.plot svg")
    assert svgs.count() >= 1
    box = svgs.first.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 50
    assert page.locator("figure.plot svg path").count() > 5
    assert "synthetic data" in page.inner_text("body")


def test_record_strings_are_shown_as_text_and_never_run(page, site):
    evil = next(p for p in (site / "results").glob("*.html") if "evil" in p.name)
    page.goto((site / "index.html").as_uri())
    page.evaluate("() => alert('probe')")  # the listener sees dialogs
    assert page.dialogs == ["probe"]
    page.dialogs.clear()
    for url in ((site / "index.html").as_uri(), _protocol_url(site), evil.as_uri()):
        page.goto(url)
        page.wait_for_load_state("load")
        page.wait_for_timeout(100)
    page.goto(_protocol_url(site))
    assert f"evil {HOSTILE}" in page.inner_text("#results")
    page.click("#results th[data-key=encoder] button")  # sorting re-reads the JSON data
    page.fill("input[data-filter=results]", "evil")
    assert len(_column(page, 0)) == 1
    page.goto(evil.as_uri())
    assert f"evil {HOSTILE}" in page.inner_text("h1")
    assert "onerror=alert(2)" in page.inner_text("pre.record")
    assert page.locator("img").count() == 0
    assert page.dialogs == [] and page.errors == []


def test_the_site_works_from_file_urls_when_moved(page, site, tmp_path):
    moved = tmp_path / "copy of site"
    shutil.copytree(site, moved)
    page.goto((moved / "index.html").as_uri())
    page.click("table.overview a >> nth=0")
    assert "/protocols/" in page.url
    # The stylesheet and the script came from relative paths: the header is styled and sorting works.
    assert page.eval_on_selector("th", "th => getComputedStyle(th).backgroundColor") != "rgba(0, 0, 0, 0)"
    page.click("#results th[data-key=rank] button")
    assert page.get_attribute("#results th[data-key=rank]", "aria-sort") == "ascending"
    page.click("#results tbody a >> nth=0")
    assert "/results/" in page.url
    link = page.locator("a[href$='.samples.jsonl']")
    assert link.count() == 1
    target = Path(unquote(urlparse(page.url).path)).parent / link.get_attribute("href")
    assert target.is_file()
    assert page.errors == []
