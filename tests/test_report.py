"""report.html from a real run: every section, every image loads in headless Chromium, nothing from the network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import cli

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


def render(html: Path, screenshot: Path) -> dict:
    """Open ``html`` from disk in headless Chromium; return what the page holds and every request it made."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html.as_uri(), wait_until="load")
            info = page.evaluate("""() => ({
                sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
                headings: Array.from(document.querySelectorAll('section > h2')).map(h => h.textContent),
                images: Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                              w: i.naturalWidth})),
                text: document.body.innerText,
            })""")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    info["requests"] = requests
    return info


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make sysdeps)")
def test_report_renders_in_chromium(tiny_run: Path, tmp_path):
    from nextclass.report.html import SECTIONS

    html = tiny_run / "report.html"
    assert html.exists(), "finish_run did not write report.html"
    shot = tmp_path / "report.png"
    info = render(html, shot)
    assert info["sections"] == list(SECTIONS)
    assert len(info["headings"]) == len(SECTIONS)
    plots = [i for i in info["images"] if i["alt"] in ("learning curves", "confusion matrix", "per-class F1",
                                                       "reliability diagram", "robustness", "Correct", "Grad-CAM")]
    assert len(plots) == 7, [i["alt"] for i in info["images"]]
    broken = [i["alt"] for i in info["images"] if not i["ok"]]
    assert not broken, f"images failed to load: {broken}"
    assert all(u.startswith(("file:", "data:")) for u in info["requests"]), info["requests"]  # self-contained
    for needle in ("top-1 accuracy, test", "ECE", "Temperature scaling", "img/s", "Skipped files", "circle"):
        assert needle in info["text"], needle
    audit = tiny_run / "audit.json"  # written at the start of every run by the data audit
    if audit.exists():
        findings = json.loads(audit.read_text()).get("findings") or ["No findings."]
        assert findings[0] in info["text"] and "every field of audit.json" in info["text"]
    else:
        assert "No audit.json in this run" in info["text"]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.width >= 1280 and im.height > 3000  # the whole page, with its plots


def test_report_artifacts_and_calibration_in_bundle(tiny_run: Path):
    import nextclass

    m = json.loads((tiny_run / "metrics.json").read_text())
    test = m["test"]
    cal = test["calibration"]
    assert cal["n"] == test["n"] and cal["top1_unchanged"] and cal["bins"] == 15
    for k in ("log_loss", "brier", "ece"):
        assert k in cal["before"] and k in cal["after"]
    assert {"balanced_accuracy", "confusion_matrix_normalized", "most_confused"} <= set(test)
    rob = test["robustness"]
    assert rob["split"] == "test" and rob["n"] == test["n"] and set(rob["corruptions"]) >= {"blur", "noise", "jpeg"}
    meta = json.loads((tiny_run / "model" / "model.json").read_text())
    assert meta["temperature"] == cal["temperature"] == m["val"]["temperature"]
    assert meta["tta"]["views"][0] == "identity"
    for name in ("curves", "confusion", "f1", "reliability", "robustness", "correct", "per_class", "gradcam"):
        assert (tiny_run / "plots" / f"{name}.png").stat().st_size > 1000, name
    # the predictor returns the calibrated probabilities: softmax(logits / T)
    pred = nextclass.load(tiny_run)
    x = pred.to_tensor(np.full((32, 32, 3), 128, np.uint8))[None]
    lg = pred.logits(x)
    z = np.exp((lg - lg.max()) / pred.temperature)
    assert np.allclose(pred.predict_proba(x), z / z.sum(), atol=1e-5)


def test_standalone_report_from_array_backed_builtin_and_tta(tmp_path):
    """``digits`` has pseudo paths (array-backed): the standalone report must read its images via the source."""
    import nextclass

    run = nextclass.train(data="digits", model="simple_cnn", epochs=1, output=str(tmp_path), name="dg", batch_size=64,
                          report=False, progress=False)
    assert not (run / "report.html").exists()
    m = nextclass.evaluate(run, tta=True, progress=False)  # TTA + robustness + a standalone report rebuild
    tta = m["tta"]
    assert tta["views"][0] == "identity" and len(tta["views"]) >= 2
    assert tta["gain"] == pytest.approx(m["accuracy"] - tta["accuracy_without_tta"])
    assert m["robustness"]["n"] > 0 and "calibration" in m
    html = (run / "report.html").read_text()
    assert "with TTA" in html and "Grad-CAM" in html
    assert (run / "plots" / "correct.png").exists() and (run / "plots" / "gradcam.png").exists()
    assert "images unavailable" not in html


def test_report_rebuilds_from_run_dir_alone(tiny_run: Path, tmp_path):
    from nextclass.report.html import build_report

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("report.html", "plots"))
    out = build_report(run)  # no model, no ctx: bundle and images are read back from disk
    assert out == run / "report.html" and out.stat().st_size > 50_000
    assert (run / "plots" / "gradcam.png").exists() and "images unavailable" not in out.read_text()
    bad = cli("report", str(tmp_path / "nope"), check=False)
    assert bad.returncode == 2 and "not a run directory" in " ".join(bad.stderr.split())


def test_report_shows_label_issues_as_thumbnails(six_class_run: Path, tmp_path):
    from nextclass.report.html import build_report

    run = Path(shutil.copytree(six_class_run, tmp_path / "run", ignore=shutil.ignore_patterns("report.html", "plots")))
    block = json.loads((run / "audit.json").read_text())["label_issues"]
    assert block["n"] > 0 and block["gate"]["ok"] and all("flip_" in it["path"] for it in block["items"])
    page = build_report(run).read_text()
    assert f"Label check by the trained model: {block['n']} of {block['checked']}" in page
    assert "confidently disagrees with" in page and 'alt="label issues"' in page
    from PIL import Image

    with Image.open(run / "plots" / "label_issues.png") as im:  # one grid row of thumbnails at least
        assert im.width > 100 and im.height > 100
