"""The HTTP server, started for real with uvicorn on 127.0.0.1 (no test client, no mocks)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from test_export import exported_copy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``uvicorn.Server`` in a thread; ``url`` once the lifespan has loaded the model."""

    def __init__(self, model, **options):
        import uvicorn

        from nextclass.serve import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(create_app(model, **options), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def data_files(run: Path, n: int = 6) -> list[Path]:
    files = sorted((run.parent.parent / "data").rglob("*.png"))
    return files[:: max(1, len(files) // n)][:n]


def post(url: str, files: list[tuple[str, bytes]], **params) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files=[("files", (n, b, "image/png")) for n, b in files], params=params, timeout=60)


@pytest.fixture(scope="module")
def live(tiny_run):
    with LiveServer(str(tiny_run), backend="torch", max_upload_mb=0.25, max_images=4) as srv:
        yield srv


def test_http_predictions_equal_python(live, tiny_run):
    import nextclass

    files = data_files(tiny_run, 6)
    want = nextclass.load(tiny_run).predict([str(f) for f in files], topk=3)
    got = []
    for chunk in (files[:1], files[1:4], files[4:]):  # one and several images per request
        r = post(live.url, [(f.name, f.read_bytes()) for f in chunk], topk=3)
        assert r.status_code == 200, r.text
        assert r.json()["backend"] == "torch"
        got += r.json()["results"]
    assert [g["file"] for g in got] == [f.name for f in files]
    for w, g in zip(want, got):
        assert g["label"] == w.label and g["index"] == w.index
        assert g["probability"] == pytest.approx(w.probability, abs=1e-5)
        assert [t["label"] for t in g["topk"]] == [l for l, _ in w.topk]
        assert [t["probability"] for t in g["topk"]] == pytest.approx([p for _, p in w.topk], abs=1e-5)


def test_bad_uploads_get_4xx_with_a_reason(live, tiny_run):
    png = data_files(tiny_run, 1)[0].read_bytes()
    cases = [
        ([("big.png", os.urandom(400_000))], 413, "upload limit"),
        ([(f"{i}.png", png) for i in range(5)], 413, "too many images"),
        ([("empty.png", b"")], 422, "empty file"),
        ([("cut.png", png[: len(png) // 2])], 422, "truncated"),
        ([("notes.txt", b"hello, I am not a picture")], 422, "not an image"),
    ]
    for files, status, reason in cases:
        r = post(live.url, files)
        assert r.status_code == status, (files[0][0], r.text)
        assert reason in r.json()["detail"], r.text
    r = post(live.url, [("ok.png", png), ("bad.jpg", b"\xff\xd8\xff\xe0garbage")])  # judged one by one
    assert r.status_code == 200 and [x["error"] is None for x in r.json()["results"]] == [True, False], r.text
    r = httpx.post(f"{live.url}/v1/predict", data={"x": "1"}, timeout=30)
    assert r.status_code == 422 and "multipart form field 'files'" in r.json()["detail"]
    assert post(live.url, [("ok.png", png)], topk=0).status_code == 422
    assert httpx.get(f"{live.url}/v1/predict").status_code == 405
    assert httpx.get(f"{live.url}/healthz").json()["status"] == "ok"  # still alive
    text = httpx.get(f"{live.url}/metrics").text
    assert 'nextclass_requests_total{route="/v1/predict",method="POST",status="413"} 2' in text
    assert 'status="500"' not in text
    assert re.search(r'nextclass_images_total\{outcome="rejected"\} \d+', text)


def test_200_concurrent_requests_all_succeed_and_share_batches(live, tiny_run):
    files = [(f.name, f.read_bytes()) for f in data_files(tiny_run, 6)]
    before = _batch_counts(httpx.get(f"{live.url}/metrics").text)

    async def main():
        sem = asyncio.Semaphore(40)  # bounded client loop: at most 40 in flight
        async with httpx.AsyncClient(base_url=live.url, timeout=120,
                                     limits=httpx.Limits(max_connections=40)) as client:
            async def one(i):
                name, data = files[i % len(files)]
                async with sem:
                    r = await client.post("/v1/predict", files=[("files", (name, data, "image/png"))])
                return name, r
            return await asyncio.gather(*(one(i) for i in range(200)))

    out = asyncio.run(main())
    assert [r.status_code for _, r in out] == [200] * 200
    labels = {}
    for name, r in out:  # the same file always gets the same answer, whatever batch it rode in
        labels.setdefault(name, set()).add(r.json()["results"][0]["label"])
    assert all(len(v) == 1 for v in labels.values())
    after = _batch_counts(httpx.get(f"{live.url}/metrics").text)
    images, calls = after[0] - before[0], after[1] - before[1]
    assert images == 200 and calls < images  # micro-batching grouped concurrent requests


def _batch_counts(text: str) -> tuple[float, float]:
    s = float(re.search(r"^nextclass_batch_size_sum (\S+)$", text, re.M).group(1))
    c = float(re.search(r"^nextclass_batch_size_count (\S+)$", text, re.M).group(1))
    return s, c


def test_models_health_docs_and_explain(live, tiny_run):
    m = httpx.get(f"{live.url}/v1/models").json()["models"][0]
    assert m["classes"] == ["circle", "hbar", "vbar"] and m["name"] == "tiny" and m["backend"] == "torch"
    assert m["preprocess"]["size"] == 32 and "val" in m["metrics"] and m["limits"]["max_images"] == 4
    spec = httpx.get(f"{live.url}/openapi.json").json()
    assert {"/v1/predict", "/v1/models", "/healthz", "/metrics"} <= set(spec["paths"])
    assert httpx.get(f"{live.url}/docs").status_code == 200
    assert "<title>nextclass</title>" in httpx.get(f"{live.url}/").text
    png = data_files(tiny_run, 1)[0].read_bytes()
    r = httpx.post(f"{live.url}/v1/explain", files={"file": ("a.png", png, "image/png")}, timeout=120)
    try:
        import nextclass.report.cam  # noqa: F401
        has_cam = True
    except ImportError:
        has_cam = False
    assert m["explain"] is has_cam
    if has_cam:
        from PIL import Image

        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size[0] > 0
        bad = httpx.post(f"{live.url}/v1/explain", files={"file": ("x.txt", b"nope", "text/plain")})
        assert bad.status_code == 422 and "not an image" in bad.json()["detail"]
    else:
        assert r.status_code == 404


def test_onnx_backend_and_store_name(tmp_path_factory, tiny_run, tmp_path):
    import nextclass
    from nextclass.deploy import store as st

    run = exported_copy(tmp_path_factory, tiny_run)
    st.add(run, "shapes", store=tmp_path / "store")
    files = data_files(tiny_run, 4)
    want = nextclass.load(run, backend="onnx").predict([str(f) for f in files])
    with LiveServer("shapes@v1", backend="onnx", store=str(tmp_path / "store")) as srv:
        r = post(srv.url, [(f.name, f.read_bytes()) for f in files])
        info = httpx.get(f"{srv.url}/v1/models").json()["models"][0]
    assert r.status_code == 200 and r.json()["backend"] == "onnx" and r.json()["model"] == "shapes@v1"
    assert (info["name"], info["version"]) == ("shapes", "v1")
    for w, g in zip(want, r.json()["results"]):
        assert g["label"] == w.label and g["probability"] == pytest.approx(w.probability, abs=1e-5)


@pytest.mark.slow
def test_serve_cli_starts_and_stops(tiny_run):
    from conftest import cli

    bad = cli("serve", "no-such-model", check=False)
    assert bad.returncode == 2 and "no such file" in " ".join(bad.stderr.split())
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nextclass", "serve", str(tiny_run), "--port", str(port),
                             "--backend", "torch"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, ok = time.time() + 120, False
        while time.time() < deadline and proc.poll() is None and not ok:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ok, proc.stdout.read() if proc.poll() is not None else "no answer"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Application shutdown complete" in out
