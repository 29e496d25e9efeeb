"""The web page at ``/``, driven in real headless Chromium (system browser, Playwright)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from test_serve import LiveServer, data_files

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]



@contextmanager
def browser_page():
    """``(page, errors)``: a page in real headless Chromium and the list its JavaScript errors land in; the browser
    closes on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            browser.close()


# Module-wide, so that without a browser not even the server fixture starts (as in test_report.py).
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make sysdeps)")


@pytest.fixture(scope="module")
def page_url(tiny_run):
    with LiveServer(str(tiny_run), backend="torch") as srv:
        yield srv.url


def test_upload_shows_the_predicted_label_and_bars(page_url, tiny_run, tmp_path):
    import nextclass
    from playwright.sync_api import expect

    files = data_files(tiny_run, 3)
    want = [p.label for p in nextclass.load(tiny_run).predict([str(f) for f in files])]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with browser_page() as (page, errors):
        page.goto(page_url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        expect(page.locator("#model-info")).to_contain_text("3 classes")
        page.set_input_files("#picker", [str(f) for f in files])
        done = page.locator(".result.done")
        expect(done).to_have_count(3, timeout=30_000)
        shown = {done.nth(i).locator(".file").inner_text(): done.nth(i).locator(".label").inner_text()
                 for i in range(3)}
        assert shown == {f.name: w for f, w in zip(files, want)}
        assert done.first.locator(".bars li").count() == 3  # top-k bars (3 classes)
        page.set_input_files("#picker", str(bad))
        failed = page.locator(".result.failed")
        expect(failed).to_have_count(1, timeout=30_000)
        expect(failed.locator(".error")).to_contain_text("422")
        # Grad-CAM option: visible exactly when the server says explain is available
        import httpx

        has_cam = httpx.get(page_url + "/v1/models").json()["models"][0]["explain"]
        assert page.locator("#explain-option").is_visible() is has_cam
        if has_cam:
            page.check("#explain")
            page.set_input_files("#picker", str(files[0]))
            expect(page.locator(".result .cam").first).to_be_visible(timeout=60_000)
        assert not errors, errors
