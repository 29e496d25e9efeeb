"""The web page's header shows the bundle's test accuracy with its 95% interval, not the validation number
(issue 23); a bundle without a test number shows val and says so. Real server, headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_serve import LiveServer

from test_webpage import CHROMIUM, browser_page


def _header(run: Path) -> tuple[str, dict]:
    """The text of ``#model-info`` once the page has loaded the model, and ``/v1/models``' entry."""
    import httpx

    with LiveServer(str(run), backend="torch") as srv, browser_page() as (page, errors):
        info = httpx.get(srv.url + "/v1/models", timeout=30).json()["models"][0]
        page.goto(srv.url + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        text = page.locator("#model-info").inner_text()
        assert not errors, errors
    return text, info


def _interval(block: dict) -> str:
    from nextclass.metrics.classification import wilson_interval

    lo, hi = wilson_interval(round(block["accuracy"] * block["n"]), block["n"])
    return f"95% CI {100 * lo:.1f}\u2013{100 * hi:.1f}%, n={block['n']}"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (make sysdeps)")
def test_header_shows_test_accuracy_with_interval_else_val(tiny_run, tmp_path):
    metrics = json.loads((tiny_run / "model" / "model.json").read_text())["metrics"]
    assert {"val", "test"} <= set(metrics)
    text, info = _header(tiny_run)
    test = metrics["test"]
    assert f"test accuracy {100 * test['accuracy']:.1f}% ({_interval(test)})" in text, text
    assert "val accuracy" not in text, text
    assert info["headline"]["split"] == "test" and info["headline"]["n"] == test["n"]

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))  # a bundle that keeps no test number
    meta = json.loads((run / "model" / "model.json").read_text())
    del meta["metrics"]["test"]
    (run / "model" / "model.json").write_text(json.dumps(meta))
    text, info = _header(run)
    val = metrics["val"]
    assert f"val accuracy {100 * val['accuracy']:.1f}% ({_interval(val)})" in text, text
    assert "no test number" in text and "test accuracy" not in text, text
    assert info["headline"]["split"] == "val"


def test_headline_accuracy_without_a_number():
    from nextclass.serve.routes import headline_accuracy

    assert headline_accuracy({}) is None
    h = headline_accuracy({"val": {"accuracy": 0.5, "n": 10},
                           "test": {"accuracy": 0.9, "n": 50, "accuracy_ci": [0.8, 0.95]}})
    assert h == {"split": "test", "accuracy": 0.9, "n": 50, "ci": [0.8, 0.95]}
