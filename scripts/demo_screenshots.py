"""Screenshots of the running demo for the README, taken in headless Chromium (Debian's).

    python app.py &                      # with $EAGER_DATA_ROOT / $EAGER_CHECKPOINTS set
    python scripts/demo_screenshots.py http://127.0.0.1:7860/ docs/
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import expect, sync_playwright


def main(url: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(url)
        page.locator("#load-user").click()
        expect(page.locator("#user-line")).to_contain_text("Real test user", timeout=120_000)
        page.locator("#recommend").click()
        expect(page.locator("#summary")).to_contain_text("answered in", timeout=300_000)
        page.wait_for_timeout(1500)  # let the plot draw
        page.screenshot(path=str(out / "demo_recommend.png"), full_page=True)
        page.get_by_role("tab", name="Compare variants").click()
        page.locator("#compare").click()
        expect(page.locator("#compare-summary")).to_contain_text("wo_aat", timeout=600_000)
        page.wait_for_timeout(3000)  # tables fade in
        page.screenshot(path=str(out / "demo_compare.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
