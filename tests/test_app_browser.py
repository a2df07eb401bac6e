"""The Gradio app in a real headless browser (Playwright driving Debian's /usr/bin/chromium).

Playwright never downloads a browser here: it is pointed at the system Chromium (installed by ``.ci/run``
with ``apt-get install chromium``); the test is skipped with the reason when that binary is absent.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # needed when running as root (CI containers)
    "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # pandas deprecations inside gradio
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"Debian chromium not installed at {CHROMIUM} "
                       "(`apt-get install chromium`, done by .ci/run)"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")

import app  # noqa: E402


class InvertEngine:
    name = "invert"

    def stylize(self, content, style, *, alpha=1.0, preserve_color=False, style_index=0):
        return ImageOps.invert(content)


class BankEngine:
    """Needs no style image: fills the content's size with a grey level given by the bank entry."""

    name = "banked"
    style_bank_names = ["Banked #1", "Banked #2"]

    def stylize(self, content, style, *, alpha=1.0, preserve_color=False, style_index=0):
        assert style is None
        return Image.new("RGB", content.size, (100 + 50 * style_index,) * 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return app.make_examples(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module")
def server(examples):
    # example rows (app.example_rows): 4 for "invert" (content + style), then 2 for "banked" (no style image)
    demo = app.build_demo({"invert": InvertEngine(), "banked": BankEngine()}, examples=examples)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        # launch_persistent_context = a fresh --user-data-dir (Playwright refuses it as a plain argument)
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            pg = ctx.new_page()
            pg.set_default_timeout(60_000)
            pg.goto(server, wait_until="domcontentloaded")
            pg.wait_for_selector("#run")
            yield pg
        finally:
            ctx.close()


# Reads the displayed result back through a canvas: size and RGB of a few pixels.
READ_RESULT_JS = """
async (points) => {
  const img = document.querySelector('#result img');
  if (!img.complete) { await new Promise(r => img.addEventListener('load', r, {once: true})); }
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const px = points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
  return {w: img.naturalWidth, h: img.naturalHeight, px: px};
}
"""


def _run_and_read(page, points):
    """Click Stylise and read the new result (``READ_RESULT_JS``), never a stale one: waits for a new URL."""
    before = page.evaluate("document.querySelector('#result img')?.src || ''")
    page.click("#run")
    page.wait_for_function("(old) => { const i = document.querySelector('#result img');"
                           " return i && i.src && i.src !== old; }", arg=before)
    return page.evaluate(READ_RESULT_JS, points)


def test_missing_content_shows_error_in_page(page):
    page.click("#run")
    toast = page.get_by_text("Upload a content image first.")
    toast.first.wait_for(state="visible")
    assert toast.count() >= 1


def test_upload_two_images_click_and_read_result(page, tmp_path):
    rng = np.random.default_rng(0)
    content = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8), "RGB")
    style = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "RGB")
    content.save(tmp_path / "content.png")
    style.save(tmp_path / "style.png")

    page.locator("#content-image input[type=file]").set_input_files(str(tmp_path / "content.png"))
    page.locator("#style-image input[type=file]").set_input_files(str(tmp_path / "style.png"))
    page.locator("#content-image img").first.wait_for(state="visible")
    page.locator("#style-image img").first.wait_for(state="visible")
    page.click("#run")
    page.locator("#result img").first.wait_for(state="visible")

    points = [[0, 0], [45, 30], [89, 59], [10, 50]]
    got = page.evaluate(READ_RESULT_JS, points)
    assert (got["w"], got["h"]) == content.size
    expected = ImageOps.invert(content)
    for (x, y), rgb in zip(points, got["px"], strict=True):
        assert tuple(rgb) == expected.getpixel((x, y)), (x, y)
    # the download button of the result is there
    assert page.locator("#result button[aria-label*='ownload'], #result a[download]").count() >= 1


def test_model_with_style_bank_needs_no_style_image(page, tmp_path):
    page.reload(wait_until="domcontentloaded")
    page.wait_for_selector("#run")
    assert not page.locator("#style-bank").is_visible()  # "invert" has no style bank
    page.locator("#model input").click()
    page.get_by_role("option", name="banked").click()
    page.locator("#style-bank").wait_for(state="visible")
    Image.new("RGB", (50, 30), (0, 0, 0)).save(tmp_path / "content.png")
    page.locator("#content-image input[type=file]").set_input_files(str(tmp_path / "content.png"))
    page.locator("#content-image img").first.wait_for(state="visible")

    got = _run_and_read(page, [[10, 10]])  # no style image uploaded: the first bank style
    assert (got["w"], got["h"]) == (50, 30)
    assert got["px"][0] == [100, 100, 100]
    page.locator("#style-bank input").click()
    page.get_by_role("option", name="Banked #2").click()
    assert _run_and_read(page, [[10, 10]])["px"][0] == [150, 150, 150]


def test_example_row_of_a_bank_model_uses_the_bank(page, examples):
    page.reload(wait_until="domcontentloaded")
    page.wait_for_selector("#run")
    assert page.locator("#model input").input_value() == "invert"
    page.locator("[data-testid='dataset-cell-4-0']").click()  # first "banked" row: content, no style, model
    page.locator("#style-bank").wait_for(state="visible")  # the model switched to the one with a bank
    assert page.locator("#model input").input_value() == "banked"
    page.locator("#content-image img").first.wait_for(state="visible")
    assert page.locator("#style-image img").count() == 0
    got = _run_and_read(page, [[5, 5]])
    assert (got["w"], got["h"]) == Image.open(examples[0][0]).size
    assert got["px"][0] == [100, 100, 100]  # BankEngine's first bank entry
