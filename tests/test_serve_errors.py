"""The server's user errors (issue 23): files judged one by one, ``--int8`` without an int8 export, a folder
hiding a stored model, a busy port. In-process: FastAPI's TestClient and Typer's CliRunner."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_folder
from conftest import invoke as cli, assert_one_line_error


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    import nextclass

    base = tmp_path_factory.mktemp("serve-err")
    data = make_folder(base / "data", n=10, size=16)
    return Path(nextclass.train(data=str(data), model="simple_cnn", epochs=1, output=str(base / "runs"), name="r",
                                batch_size=8, report=False, progress=False))


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_one_bad_file_does_not_fail_the_request(run):
    from fastapi.testclient import TestClient

    from nextclass.serve.app import create_app

    with TestClient(create_app(str(run), backend="torch")) as client:
        files = [("files", ("ok.png", png_bytes(), "image/png")),
                 ("files", ("bad.jpg", b"\xff\xd8\xff\xe0garbage", "image/jpeg")),
                 ("files", ("ok2.png", png_bytes(), "image/png"))]
        r = client.post("/v1/predict", files=files)
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert [x["file"] for x in res] == ["ok.png", "bad.jpg", "ok2.png"]  # upload order, one result each
        assert res[0]["label"] is not None and res[0]["error"] is None and res[2]["label"] is not None
        assert res[1]["label"] is None and res[1]["error"] and res[1]["topk"] == []
        r = client.post("/v1/predict", files=[("files", ("bad.jpg", b"nope", "image/jpeg"))])
        assert r.status_code == 422 and "bad.jpg" in r.json()["detail"]  # nothing usable: the request fails


def test_int8_without_an_int8_export_is_an_error(run):
    r = cli("serve", run, "--int8")
    assert_one_line_error(r, "model.int8.onnx", "nextclass export")
    assert "web page" not in r.output
    r = cli("serve", run, "--int8", "--backend", "torch")
    assert_one_line_error(r, "--int8", "--backend onnx")


def test_a_folder_hiding_a_stored_model_gets_a_hint(run, tmp_path, monkeypatch):
    from nextclass.deploy.store import add

    store = tmp_path / "store"
    add(run, "shapes", store=store)
    (tmp_path / "work" / "shapes").mkdir(parents=True)  # e.g. the data folder of the same name
    monkeypatch.chdir(tmp_path / "work")
    r = cli("serve", "shapes", "--store", store)
    assert_one_line_error(r, "shapes@v1", "hides")
    from nextclass.serve.app import ServeConfig, load_for_serving

    pred, ident = load_for_serving("shapes@v1", ServeConfig(backend="torch", store=str(store)))
    assert ident["ref"] == "shapes@v1"


def test_a_busy_port_is_one_clear_error(run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = cli("serve", run, "--backend", "torch", "--port", port)
    assert_one_line_error(r, f"port {port}", "in use", "--port")
    assert "web page" not in r.output
