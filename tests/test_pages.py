"""report.html and outputs/index.html in a real browser (headless Chromium, network blocked).

Debian's ``chromium`` driven by playwright (no browser download). Without a browser or
playwright the module is skipped with one line saying which is missing.
"""
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _browser() -> str | None:
    for exe in (os.environ.get("BPEXP_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                shutil.which("chromium-browser")):
        if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    return None


CHROMIUM = _browser()
try:
    import playwright.sync_api as pw
except ImportError:
    pw = None
if CHROMIUM is None or pw is None:
    pytest.skip("no headless browser for the page tests: " + (
        "chromium not found (apt-get install chromium)" if CHROMIUM is None else
        "the playwright package is missing (pip install -e '.[test]')"),
        allow_module_level=True)

LR_SWEEP = ["sweep.lr={start: 0.05, stop: 1.0, num: 6, log: true}", "sweep.seeds=2",
            "train.steps=40", "train.record_every=4", "experiment.refine_rounds=1"]
DEPTH_SWEEP = ["experiment.depths=[1,3]", "data.m=100", "train.steps=4", "sweep.seeds=2"]


def _start(root: Path, name: str, *overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    return subprocess.Popen([sys.executable, "-m", "bpexp", f"+experiment={name}",
                             f"outputs.root={root}", "sweep.progress=false", *overrides],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny lr_sweep and depth_sweep runs through the CLI (side by side) into one root."""
    root = tmp_path_factory.mktemp("pages")
    procs = {name: _start(root, name, *ov)
             for name, ov in (("lr_sweep", LR_SWEEP), ("depth_sweep", DEPTH_SWEEP))}
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        assert "warning: pages not built" not in stderr, stderr[-2000:]
        lines = stdout.strip().splitlines()
        assert lines[-1].startswith("run dir: ") and lines[-2].startswith("report: "), lines[-3:]
        run_dir = Path(lines[-1].removeprefix("run dir: "))
        page = Path(lines[-2].removeprefix("report: "))
        assert page == run_dir / "report.html" and page.stat().st_size > 10_000
        out[name] = run_dir
    # both runs ended at once: the index may have been written before the other's line
    subprocess.run([sys.executable, "-m", "bpexp.pages", "--index", str(root)], check=True,
                   capture_output=True, timeout=120)
    return root, out


@pytest.fixture(scope="module")
def browser():
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Page:
    """A page opened from file:// with every other request refused; records console errors
    and refused requests."""

    def __init__(self, browser, path: Path):
        self.ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        self.blocked, self.errors = [], []
        self.ctx.route("**/*", self._route)
        self.page = self.ctx.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.as_uri())

    def _route(self, route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def wait_plots(self):
        self.page.wait_for_function(
            "() => { const p = document.querySelectorAll('#figures .plot');"
            " return p.length > 0 && Array.from(p).every(d => d.dataset.ready); }",
            timeout=30_000)

    def shot(self, selector: str, save: Path | None = None) -> np.ndarray:
        from PIL import Image

        png = self.page.locator(selector).screenshot()
        if save is not None:
            save.write_bytes(png)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def close(self):
        assert not self.errors, self.errors
        assert not self.blocked, f"the page asked the network for {self.blocked}"
        self.ctx.close()


def _not_blank(img: np.ndarray):
    colors = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colors) > 20, f"a blank plot: {len(colors)} colours"
    assert (img.std(axis=(0, 1)) > 5).any(), "a blank plot"


def _visible(page, fid: str) -> list[str]:
    return page.evaluate(f"() => document.querySelector('#{fid} .plot').data"
                         ".filter(t => t.visible === true).map(t => t.name)")


def test_lr_sweep_page(runs, browser, tmp_path):
    root, dirs = runs
    run_dir = dirs["lr_sweep"]
    summary = json.loads((run_dir / "summary.json").read_text())
    pg = Page(browser, run_dir / "report.html")
    pg.wait_plots()
    page = pg.page
    assert "Learning-rate sweep" in page.inner_text("h1")
    for fid in ("lr-curves", "lr-final", "lr-diverged", "lr-heat"):
        _not_blank(pg.shot(f"#{fid} .plot", tmp_path / f"{fid}.png"))
    # the lr slider: Home (smallest lr, converges) vs End (largest, diverges)
    slider = page.locator("#lr-curves input[type=range]")
    slider.focus()
    page.keyboard.press("Home")
    low = (_visible(page, "lr-curves"), page.inner_text("#lr-curves .state-note"),
           pg.shot("#lr-curves .plot", tmp_path / "lr_low.png"))
    page.keyboard.press("End")
    high = (_visible(page, "lr-curves"), page.inner_text("#lr-curves .state-note"),
            pg.shot("#lr-curves .plot", tmp_path / "lr_high.png"))
    lrs = summary["lrs"]
    assert low[0] == [f"lr {lrs[0]:.4g}"] * 2 and high[0] == [f"lr {lrs[-1]:.4g}"] * 2, (
        low[0], high[0])                                  # one curve per seed
    assert "expected to converge" in low[1] and "expected to diverge" in high[1]
    assert low[2].shape != high[2].shape or np.abs(low[2].astype(int) - high[2]).mean() > 0.5
    # hover on the final-loss plot: the first point of the first trace
    page.locator("#lr-final .plot").scroll_into_view_if_needed()
    box = page.locator("#lr-final .plot").bounding_box()
    xy = page.evaluate("""() => { const gd = document.querySelector('#lr-final .plot');
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, c = gd.calcdata[0][0];
        return [xa.c2p(c.x) + xa._offset, ya.c2p(c.y) + ya._offset, c.x]; }""")
    page.mouse.move(box["x"] + xy[0], box["y"] + xy[1])
    page.wait_for_selector("#lr-final .hoverlayer .hovertext", timeout=5000)
    text = page.text_content("#lr-final .hoverlayer")
    for word in ("lr", "seed", "final loss", "first non-finite step"):
        assert word in text, text
    assert f"{lrs[0]:.4g}" in text, (text, lrs[0])
    pg.close()


def test_depth_sweep_page(runs, browser, tmp_path):
    _, dirs = runs
    pg = Page(browser, dirs["depth_sweep"] / "report.html")
    pg.wait_plots()
    page = pg.page
    _not_blank(pg.shot("#depth-grads .plot", tmp_path / "depth.png"))
    note_deep = page.inner_text("#depth-grads .state-note")
    assert "depth 3" in note_deep and "init standard" in note_deep
    n_deep = len(_visible(page, "depth-grads"))
    page.locator("#depth-grads input[type=range]").focus()
    page.keyboard.press("Home")
    assert "depth 1" in page.inner_text("#depth-grads .state-note")
    page.select_option("#depth-grads select[data-control=init]", label="xavier")
    assert "init xavier" in page.inner_text("#depth-grads .state-note")
    assert len(_visible(page, "depth-grads")) == n_deep     # same seeds, another net
    state = page.get_attribute("#depth-grads .plot", "data-state")
    assert state == "0,1,0", state
    pg.close()


def test_index_page(runs, browser):
    root, _ = runs
    pg = Page(browser, root / "index.html")
    page = pg.page
    rows = page.locator("#runs tbody tr")
    assert rows.count() == 2
    assert page.inner_text("#count") == "2 of 2 runs shown"
    page.select_option("#f-experiment", "depth_sweep")
    shown = [r for r in rows.all() if r.is_visible()]
    assert len(shown) == 1 and "depth_sweep" in shown[0].inner_text()
    assert page.inner_text("#count") == "1 of 2 runs shown"
    page.select_option("#f-experiment", "")
    page.select_option("#f-status", "finished")
    assert page.inner_text("#count") == "2 of 2 runs shown"
    page.evaluate("() => document.querySelector('#runs tbody tr').dataset.status = 'failed'")
    page.select_option("#f-status", "")
    page.select_option("#f-status", "finished")    # the row marked failed is filtered out
    assert page.inner_text("#count") == "1 of 2 runs shown"
    page.select_option("#f-status", "")
    # sortable: by experiment, both ways
    page.click("#runs th:text('experiment')")
    first = page.inner_text("#runs tbody tr:first-child td:first-child")
    page.click("#runs th:text('experiment')")
    assert {first, page.inner_text("#runs tbody tr:first-child td:first-child")} == {
        "depth_sweep", "lr_sweep"}
    # the link opens the run's page
    href = page.get_attribute("#runs tbody tr[data-experiment=lr_sweep] a", "href")
    assert href.endswith("report.html") and (root / href).exists()
    pg.close()


def test_rebuild_from_folder_alone(runs, tmp_path):
    """python -m bpexp.pages on a copy of a run folder (no index there): the page again,
    and --standalone carries plotly.js inside."""
    _, dirs = runs
    copy = tmp_path / "out" / "lr_sweep" / "copy"
    shutil.copytree(dirs["lr_sweep"], copy, ignore=shutil.ignore_patterns("report.html"))
    p = subprocess.run([sys.executable, "-m", "bpexp.pages", str(copy)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"report: {copy / 'report.html'}"
    assert list((tmp_path / "out" / ".assets").glob("plotly-*.min.js"))
    small = (copy / "report.html").stat().st_size
    p = subprocess.run([sys.executable, "-m", "bpexp.pages", "--standalone", str(copy)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (copy / "report.html").stat().st_size > small + 3_000_000


def test_without_plotly_the_page_shows_the_pngs(runs, browser, tmp_path):
    """Opened where plotly.js cannot load (a run folder copied away from its outputs root),
    the page says so and shows the static PNG figures, loaded, in place of empty boxes; the
    takeaways come before the figures."""
    _, dirs = runs
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(dirs["lr_sweep"], copy)
    pg = Page(browser, copy / "report.html")
    pg.page.wait_for_selector("#png-fallback img", state="visible", timeout=30_000)
    loaded = pg.page.evaluate("() => Array.from(document.querySelectorAll('#png-fallback img'))"
                              ".map(i => i.complete && i.naturalWidth > 0)")
    assert loaded and all(loaded), loaded
    assert pg.page.is_visible("#no-plotly") and not pg.page.is_visible("#figures")
    order = pg.page.evaluate("() => [document.body.innerHTML.indexOf('What this run shows'),"
                             " document.body.innerHTML.indexOf('id=\"figures\"')]")
    assert 0 <= order[0] < order[1], order
    pg.errors = [e for e in pg.errors if "ERR_FILE_NOT_FOUND" not in e]   # the missing script
    pg.close()
