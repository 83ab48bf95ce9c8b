"""Screenshots of the running demo for the README and docs/demo.md, taken in headless Chromium (Debian's).

    python app.py &                      # with $EAGER_DATA_ROOT / $EAGER_CHECKPOINTS set
    python scripts/demo_screenshots.py http://127.0.0.1:7860/ docs/

Writes demo_recommend.png (a real shopper, one click, at 1280 px), demo_compare.png (the four
variants on that basket) and demo_phone.png (the same first click at 390 px).
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright


def open_tab(page, name: str) -> None:
    """Click a tab, through Gradio's \"More tabs\" menu where a narrow screen folds it away."""
    tab = page.get_by_role("tab", name=name)
    if tab.count() and tab.first.is_visible():
        tab.first.click()
        return
    page.get_by_role("button", name="More tabs").click()
    page.locator(".overflow-dropdown button", has_text=name).click()


def _shopper(page, url: str, shopper: int) -> None:
    page.goto(url)
    expect(page.locator("#status-line")).to_contain_text("ready", timeout=600_000)
    page.locator(f"#shopper-{shopper}").click()
    expect(page.locator("#results .eg-card").first).to_be_visible(timeout=300_000)
    page.wait_for_timeout(1500)  # let the figure draw


def main(url: str, out: Path, shopper: int = 2) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        _shopper(page, url, shopper)
        page.screenshot(path=str(out / "demo_recommend.png"), full_page=True)
        open_tab(page, "Compare variants")
        page.locator("#compare").click()
        expect(page.locator("#compare-grid .eg-col").first).to_be_visible(timeout=600_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "demo_compare.png"), full_page=True)
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        _shopper(phone, url, shopper)
        phone.screenshot(path=str(out / "demo_phone.png"), full_page=False)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
