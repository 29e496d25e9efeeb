"""The review page in real headless Chromium (system browser, Playwright): relabel one planted wrong label from the
keyboard, drop another with a click, reload and see both kept and the page resume at the first undecided item;
then ``train --corrections`` trains on the decisions and ``compare`` answers whether that run is better."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from conftest import cli
from test_review import LiveReview
from test_webpage import CHROMIUM, browser_page

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make sysdeps)")


def _review_in_browser(url: str, rs) -> None:
    from playwright.sync_api import expect

    first, second, third = rs.items[:3]
    key = str(rs.classes.index(first.suggested) + 1)  # 1-9: relabel to class n
    with browser_page() as (page, errors):
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        expect(page.locator("#file")).to_contain_text(rs.images[first.image].rel)
        expect(page.locator("#evidence")).to_contain_text("Probable label issue")
        expect(page.locator("#evidence .classrow img")).to_have_count(6)  # 3 nearest of each of the two classes
        assert page.locator("#picture").evaluate("img => img.complete && img.naturalWidth") > 0
        page.keyboard.press(key)
        expect(page.locator("#status")).to_contain_text(f"relabel \u2192 {first.suggested}")
        expect(page.locator("#file")).to_contain_text(rs.images[second.image].rel)  # moved on
        page.click("#drop")
        expect(page.locator("#status")).to_contain_text("drop")
        page.reload()
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        expect(page.locator("#progress")).to_contain_text(f"2 of {len(rs.items)} decided")
        expect(page.locator("#file")).to_contain_text(rs.images[third.image].rel)  # resumes at the first undecided
        for it in (first, second):
            expect(page.locator(f"#list button[data-item='{it.id}']")).to_have_class("decided")
        page.click(f"#list button[data-item='{first.id}']")
        expect(page.locator("#decision")).to_contain_text(f"decided: relabel \u2192 {first.suggested}")
        page.keyboard.press("l")
        expect(page.locator("#decision")).to_contain_text("decided: drop")
        assert not errors, errors


def test_review_in_chromium_then_train_with_the_corrections(six_class_run, tmp_path):
    from nextclass.data.corrections import read_corrections
    from nextclass.review.collect import collect
    from nextclass.rundir import RunDir

    run = Path(shutil.copytree(six_class_run, tmp_path / "six"))
    rs = collect(run, progress=False)
    first, second = rs.items[:2]
    assert first.reason == second.reason == "label issue"
    file = RunDir(run).corrections
    with LiveReview(rs, file) as srv:
        _review_in_browser(srv.url, rs)
    assert [(c.path, c.decision) for c in read_corrections(file)] == [
        (rs.images[first.image].rel, "relabel"), (rs.images[second.image].rel, "drop")]
    data = six_class_run.parent.parent / "data"
    cli("train", str(data), "--model", "simple_cnn", "--epochs", "1", "--split", "0.5,0.25,0.25", "--corrections",
        str(file), "-o", str(tmp_path / "runs"), "--name", "fixed", "-q", "--set", "report=false")
    fixed = RunDir(tmp_path / "runs" / "fixed")
    applied = fixed.read_corrections_applied()
    assert applied["relabeled"] == 1 and applied["dropped"] == 1 and applied["missing"] == 0
    with open(fixed.split, newline="") as fh:
        classes = {Path(r["path"]).relative_to(data).as_posix(): r["class"] for r in csv.DictReader(fh)}
    assert classes[rs.images[first.image].rel] == first.suggested
    assert rs.images[second.image].rel not in classes
    # and compare answers whether the corrected run is better, on the same test images
    r = cli("compare", str(run), str(tmp_path / "runs" / "fixed"), "--no-html", "--n-boot", "100")
    verdict = r.stdout.strip().splitlines()[-1]
    assert verdict.startswith(("B is better than A", "B is worse than A", "No significant difference")), r.stdout
    assert "McNemar p =" in verdict
