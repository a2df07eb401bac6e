"""Redraw ``assets/app_screenshot.png``: the app's first screen after clicking its first example row.

Launches ``app.py``'s demo in-process with the shipped checkpoints (the same engines and default model as
``python app.py``), opens it in headless Chromium (Playwright + Debian's ``/usr/bin/chromium``, as in
``tests/test_app_browser.py``), clicks the first example row, presses **Stylise**, waits for the result and
writes a 1280 x 900 screenshot::

    python assets/make_screenshot.py                 # -> assets/app_screenshot.png
    python assets/make_screenshot.py --out /tmp/a.png --chromium /path/to/chromium
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "assets" / "app_screenshot.png"), help="PNG to write")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    p.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"), help="folder of checkpoints")
    a = p.parse_args(argv)
    if not Path(a.chromium).is_file():
        p.error(f"no Chromium at {a.chromium} (apt-get install chromium, or pass --chromium)")
    from playwright.sync_api import sync_playwright

    import app

    engines, notes = app.load_engines(a.checkpoint_dir, device="cpu")
    demo = app.build_demo(app.order_engines(engines, app.DEFAULT_MODEL), notes=notes)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
            ctx = pw.chromium.launch_persistent_context(
                profile, executable_path=a.chromium, headless=True, viewport={"width": 1280, "height": 900},
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = ctx.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.wait_for_selector("#run")
            page.locator("[data-testid='dataset-cell-0-0']").click()  # first example row of the default model
            page.locator("#content-image img").first.wait_for(state="visible")
            page.click("#run")
            page.locator("#result img").first.wait_for(state="visible")
            page.wait_for_function("() => { const i = document.querySelector('#result img');"
                                   " return i && i.complete && i.naturalWidth > 0; }")
            page.add_style_tag(content=".toast-wrap { display: none !important; }")  # the 'style bank' notice
            page.evaluate("window.scrollTo(0, 0)")  # the example click scrolled down
            page.wait_for_timeout(500)  # let the progress overlay fade out
            page.screenshot(path=a.out)
            ctx.close()
    finally:
        demo.close()
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
