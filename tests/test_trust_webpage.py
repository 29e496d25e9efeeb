"""The web page shows an abstained prediction, an unfamiliar image and the nearest training images, in real
headless Chromium."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_trust import _bundle_copy, _files, _median_distance
from test_webpage import CHROMIUM, browser_page

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make sysdeps)")


def test_page_marks_abstained_and_shows_neighbors(trust_run: Path, tmp_path: Path):
    import nextclass
    from playwright.sync_api import expect

    from test_serve import LiveServer

    files = _files(trust_run, 4)
    probs = [p.probability for p in nextclass.load(trust_run).predict(files)]
    th = float(np.median(probs))
    far, flagged = _median_distance(trust_run, files)
    bundle = _bundle_copy(trust_run, tmp_path / "bundle", unfamiliar=far, threshold=th)
    want = {Path(f).name: p < th for f, p in zip(files, probs)}
    strange = {Path(f).name: u for f, u in zip(files, flagged)}
    with LiveServer(str(bundle), backend="torch") as srv, browser_page() as (page, errors):
        page.goto(srv.url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        expect(page.locator("#model-info")).to_contain_text("trust")
        assert "/" not in page.locator("#model-info").inner_text().split(" · ")[0]  # a name, not a path
        expect(page.locator("#neighbors-option")).to_be_visible()
        page.set_input_files("#picker", files)
        done = page.locator(".result.done")
        expect(done).to_have_count(len(files), timeout=30_000)
        for i in range(len(files)):
            card = done.nth(i)
            name = card.locator(".file").inner_text()
            assert ("abstained" in (card.get_attribute("class") or "")) is want[name]
            assert card.locator(".abstain").is_visible() is want[name]
            if want[name]:
                expect(card.locator(".abstain")).to_contain_text("not sure")
            assert card.locator(".unfamiliar").is_visible() is strange[name]
            if strange[name]:
                expect(card.locator(".unfamiliar")).to_contain_text("unfamiliar")
            expect(card.locator(".neighbors figure")).to_have_count(3)
            assert card.locator(".neighbors img").first.evaluate("img => img.naturalWidth") == 32
        assert any(want.values()) and any(strange.values()) and not all(strange.values()) and not errors, errors
