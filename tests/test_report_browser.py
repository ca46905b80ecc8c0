"""The report in a real browser: headless Chromium (Debian's package, which .ci/run
installs) driven through Playwright. Every image loads, and the latent explorer shows
another decoded image when the pointer moves."""

import os
import shutil

import pytest

from conftest import run_cli

CHROMIUM = os.environ.get("VAEKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing "
                                   "(pip install -e '.[test]')")
    run = tmp_path_factory.mktemp("browser") / "run"
    res = run_cli("train", "--data", "digits", "--epochs", "3", "--latent-dim", "2", "--set",
                  "model.hidden=[32]", "--quiet", "--importance-samples", "8", "--out", str(run))
    assert res.returncode == 0, res.stderr
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        pg.goto((run / "report.html").as_uri())
        pg.wait_for_load_state("load")
        yield pg, run
        browser.close()


def test_every_image_loads_and_the_page_renders(page):
    pg, run = page
    images = pg.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) >= 9
    broken = [alt for alt, complete, width in images if not complete or width == 0]
    assert not broken, broken
    shot = run / "screenshot.png"
    pg.screenshot(path=str(shot), full_page=True)
    import numpy as np
    from PIL import Image
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape[0] > 2000 and len(np.unique(img)) > 50  # a long page with real content


def test_explorer_follows_the_pointer(page):
    pg, _ = page
    plane = pg.locator("#plane")
    plane.scroll_into_view_if_needed()
    box = plane.bounding_box()
    canvas = "document.getElementById('decoded').toDataURL()"
    reads, pictures, cells = [], [], []
    for fx, fy in ((0.1, 0.1), (0.9, 0.85)):
        pg.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        reads.append(pg.inner_text("#zread"))
        pictures.append(pg.evaluate(canvas))
        cells.append(int(pg.evaluate("document.getElementById('plane').dataset.cell")))
    assert reads[0] != reads[1] and reads[0].startswith("z = (")
    z1, z2 = (float(v) for v in reads[0][5:-1].split(","))
    assert z1 < 0 < z2  # the top-left of the plane is low z1, high z2
    assert pictures[0] != pictures[1]  # another decoded image
    g = 32  # report.explorer_grid's default
    assert cells[0] == round(0.1 * (g - 1)) * g + round(0.1 * (g - 1))
