"""Open pages of the ClearML web UI in a real browser and report what they show (a test helper).

Run with the harness's Python (it has playwright; Debian's chromium is the browser)::

    python tests/ui_pages.py WEB_URL OUT_DIR PAGE.json

``PAGE.json`` is a list of ``{"name": ..., "url": ..., "click": [text, ...], "wait_for": text}``:
each page is opened (logged in as the harness does), the texts in ``click`` are clicked in order
(tabs such as ``CONFIGURATION``), the page waits until ``wait_for`` is visible, then its visible
text and a screenshot (``OUT_DIR/<name>.png``) are taken. Prints one JSON object
``{name: visible text, name + ":content": all text of the page, that of its plots included}`` on the last
line. Every non-loopback request is aborted.
"""

import json
import os
import sys
from pathlib import Path

HARNESS = Path(os.environ.get("CLEARML_TEST_SERVER", Path(__file__).resolve().parents[2] / "shared" / "clearml-server"))
sys.path.insert(0, str(HARNESS / "harness"))

from playwright.sync_api import sync_playwright  # noqa: E402
from screenshot import CHROMIUM_ARGS, LOCAL, QUIET_UI, login, settle  # noqa: E402


def main(web: str, out: Path, pages: list[dict]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    texts = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 950})
        context.route(lambda url: not url.startswith(LOCAL), lambda route: route.abort())
        context.add_init_script(QUIET_UI)
        page = context.new_page()
        login(page, web.rstrip("/"), "test-user")
        for spec in pages:
            page.goto(spec["url"], wait_until="networkidle")
            settle(page, 2)
            for text in spec.get("click", []):
                page.get_by_text(text, exact=True).first.click()
                settle(page, 1.5)
            if spec.get("wait_for"):
                page.get_by_text(spec["wait_for"]).first.wait_for(state="attached", timeout=60000)
                settle(page, 1)
            page.screenshot(path=str(out / f"{spec['name']}.png"))
            texts[spec["name"]] = page.locator("body").inner_text()  # what is visible
            drawn = " ".join(" ".join(frame.locator("svg text").all_text_contents()) for frame in page.frames)
            texts[spec["name"] + ":content"] = f'{page.locator("body").text_content()} {drawn}'  # also what is
            # scrolled away, and the text of plots and tables (SVG, which the body's text leaves out)
        browser.close()
    return texts


if __name__ == "__main__":
    result = main(sys.argv[1], Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text()))
    print(json.dumps(result))
