"""``nextclass review``: the items of a run and of a data folder, the server's safety (images by opaque id only, no
path leaked, bad decisions refused with a reason and nothing written, two writers at once), resuming, the CLI.

The server runs for real with uvicorn on 127.0.0.1; the run is a private copy of the shared ``six_class_run``
(its corrections file is written beside the copy; the data folder is shared and only read).
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import assert_one_line_error, cli, invoke, make_folder
from test_serve import free_port


class LiveReview:
    """The review app under uvicorn in a thread; ``url`` once it listens."""

    def __init__(self, rs, corrections):
        import uvicorn

        from nextclass.review import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(rs, corrections), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveReview":
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline, "review server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def run_copy(six_class_run: Path, dest: Path) -> Path:
    """A private copy of the shared run (the data stays shared: review only reads it)."""
    return Path(shutil.copytree(six_class_run, dest))


@pytest.fixture(scope="module")
def reviewed(six_class_run, tmp_path_factory):
    """(review set, run copy, corrections file) for the module; each test that writes uses its own file."""
    from nextclass.review.collect import collect

    run = run_copy(six_class_run, tmp_path_factory.mktemp("review") / "six")
    return collect(run, progress=False), run


def test_a_runs_items_put_the_planted_flips_first_with_evidence(reviewed, six_class_run):
    rs, run = reviewed
    d = rs.to_dict()
    issues = [it for it in d["items"] if it["reason"] == "label issue"]
    assert issues and d["items"][: len(issues)] == issues  # label issues come first
    assert all(it["image"]["file"].split("/")[1].startswith("flip_") for it in issues)
    first = issues[0]
    given, suggested = first["image"]["label"], first["suggested"]
    assert set(first["evidence"]["neighbors"]) == {given, suggested}  # nearest training images of each class
    assert all(nb["thumbnail"].startswith("data:image/png") for nb in first["evidence"]["neighbors"][suggested])
    reasons = {r for it in d["items"] for r in it["reasons"]}
    assert {"label issue", "leak", "near duplicate", "confident mistake"} <= reasons
    leak = next(it for it in d["items"] if it["reason"] == "leak")
    assert leak["duplicate_of"] in leak["evidence"]["leak"]["group"] and leak["duplicate_of"] != leak["image"]["id"]
    text = json.dumps(d)
    assert str(six_class_run.parent.parent) not in text and '"/' not in text  # no filesystem path reaches a client
    import nextclass

    assert nextclass.review_items(run)["items"][0]["id"] == first["id"]  # the Python API gives the same items


def test_decisions_are_saved_checked_and_resumed(reviewed, tmp_path):
    from nextclass.data.corrections import read_corrections

    rs, run = reviewed
    file = tmp_path / "corrections.jsonl"
    first, second = rs.items[0], rs.items[1]
    with LiveReview(rs, file) as srv:
        st = httpx.get(f"{srv.url}/v1/review").json()
        assert st["start"] == 0 and st["decisions"] == {} and st["corrections"] == "corrections.jsonl"
        r = httpx.post(f"{srv.url}/v1/decisions", json={"item": first.id, "decision": "relabel", "label": first.suggested})
        assert r.status_code == 200, r.text
        r = httpx.post(f"{srv.url}/v1/decisions", json={"item": second.id, "decision": "drop"})
        assert r.status_code == 200, r.text
        st = httpx.get(f"{srv.url}/v1/review").json()
    rows = read_corrections(file)
    assert [(c.decision, c.label, c.reason) for c in rows] == [("relabel", first.suggested, "label issue"),
                                                                ("drop", None, "label issue")]
    assert rows[0].path == rs.images[first.image].rel and not rows[0].path.startswith("/")
    assert len(rows[0].sha) == 64 and rows[0].time.endswith("Z")
    assert st["decided"] == 2 and st["start"] == 2  # reopened: starts at the first undecided item
    assert st["decisions"][first.id]["label"] == first.suggested and st["decisions"][second.id]["decision"] == "drop"


def test_bad_decisions_get_4xx_with_a_reason_and_write_nothing(reviewed, tmp_path):
    rs, run = reviewed
    file = tmp_path / "corrections.jsonl"
    it = rs.items[0]
    dup = next(x for x in rs.items if x.duplicate_of)
    cases = [
        ({"item": it.id, "decision": "relabel", "label": "no-such-class"}, 422, "not a class of this review"),
        ({"item": it.id, "decision": "relabel"}, 422, "not a class"),
        ({"item": it.id, "decision": "burn"}, 422, "not one of keep, relabel, drop, duplicate"),
        ({"item": it.id}, 422, "decision"),
        ({"item": it.id, "decision": "keep", "path": "/etc/passwd"}, 422, "unknown field 'path'"),
        ({"item": "it-99999", "decision": "keep"}, 404, "not an item"),
        ({"item": it.id, "decision": "keep", "label": 3}, 422, "expected a string"),
        ({"item": dup.id, "decision": "duplicate", "duplicate_of": dup.image}, 422, "itself"),
        ({"item": dup.id, "decision": "duplicate", "duplicate_of": "../../etc/passwd"}, 422, "not an image"),
        ({"item": dup.id, "decision": "duplicate"}, 422, "not an image"),
        (["keep"], 422, "JSON object"),
    ]
    with LiveReview(rs, file) as srv:
        for body, status, reason in cases:
            r = httpx.post(f"{srv.url}/v1/decisions", json=body)
            assert r.status_code == status and reason in r.json()["detail"], (body, r.text)
        r = httpx.post(f"{srv.url}/v1/decisions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not JSON" in r.json()["detail"]
        r = httpx.post(f"{srv.url}/v1/decisions", content=b"x" * 100_000)
        assert r.status_code == 413
        assert not file.exists()  # nothing was written by any of them
        ok = httpx.post(f"{srv.url}/v1/decisions", json={"item": dup.id, "decision": "duplicate",
                                                         "duplicate_of": dup.duplicate_of})
        assert ok.status_code == 200 and ok.json()["saved"]["duplicate_of"] == dup.duplicate_of
    row = json.loads(file.read_text())
    assert row["duplicate_of"] == rs.images[dup.duplicate_of].rel  # saved as a path relative to the data root


def test_two_tabs_posting_at_once_keep_every_row_intact(reviewed, tmp_path):
    from nextclass.data.corrections import latest_decisions, read_corrections

    rs, run = reviewed
    file = tmp_path / "corrections.jsonl"
    items = rs.items[:20]
    with LiveReview(rs, file) as srv:
        def tab(decision: str) -> list[int]:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                return [c.post("/v1/decisions", json={"item": it.id, "decision": decision}).status_code
                        for it in items for _ in range(2)]

        with ThreadPoolExecutor(2) as ex:
            codes = list(ex.map(tab, ["keep", "drop"]))
        st = httpx.get(f"{srv.url}/v1/review").json()
    assert codes == [[200] * 40, [200] * 40]
    rows = read_corrections(file)  # raises on a torn or interleaved line
    assert len(rows) == 80 and len(file.read_text().splitlines()) == 80
    assert len(latest_decisions(rows)) == len({rs.images.sha(it.image) for it in items})
    assert st["decided"] == len(items)


def test_images_only_by_opaque_id(reviewed, tmp_path, six_class_run):
    rs, run = reviewed
    data = six_class_run.parent.parent / "data"
    some = next(iter(sorted(data.rglob("*.png"))))
    with LiveReview(rs, tmp_path / "c.jsonl") as srv:
        r = httpx.get(f"{srv.url}/v1/images/{rs.items[0].image}?size=64")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
        from PIL import Image
        import io

        assert max(Image.open(io.BytesIO(r.content)).size) <= 64
        rel = some.relative_to(data).as_posix()
        bad = ["/v1/images/img-999999", f"/v1/images/{rel}", f"/v1/images/{rel.replace('/', '%2F')}",
               "/v1/images/..%2F..%2F..%2Fetc%2Fpasswd", "/v1/images/%2Fetc%2Fpasswd", f"/v1/images/{some}",
               "/v1/images/../../../etc/passwd", "/v1/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
               "/static/..%2F..%2F..%2Fetc%2Fpasswd", "/static/../app.py", f"/v1/images/img-0%00"]
        for path in bad:  # sent as written (no client-side normalisation of '..')
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status == 404, (path, resp.status, body[:200])
            assert b"root:" not in body and b"PNG" not in body[:8]
        assert httpx.get(f"{srv.url}/v1/images/img-0?size=99999").status_code == 422


def test_a_data_folder_review_runs_the_audit_and_never_serves_a_symlink_out(tmp_path, monkeypatch):
    from nextclass.review.collect import collect, corrections_file

    data = make_folder(tmp_path / "data", n=8, size=24)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    shutil.copy(data / "circle" / "circle_000.png", secret)  # an exact copy: the audit groups it with the original
    (data / "circle" / "zz_link.png").symlink_to(secret)
    shutil.copy(data / "hbar" / "hbar_001.png", data / "vbar" / "copy_of_hbar.png")  # a label conflict in the data
    rs = collect(data, progress=False)
    d = rs.to_dict()
    assert d["items"] and any("label issue: not checked" in n for n in d["notes"])
    files = {img["file"]: img for img in d["images"].values()}
    assert files["vbar/copy_of_hbar.png"]["served"]
    linked = [img for img in d["images"].values() if img["file"].endswith("secret.png")]
    assert linked and not any(img["served"] for img in linked)  # listed (the audit found it), never served
    with LiveReview(rs, tmp_path / "c.jsonl") as srv:
        for img in linked:
            assert httpx.get(f"{srv.url}/v1/images/{img['id']}").status_code == 404
    import nextclass

    nextclass.audit(data, output=tmp_path / "audit", progress=False)  # read instead of auditing again
    again = collect(data, audit=tmp_path / "audit", progress=False)
    assert [rs.images[it.image].rel for it in rs.items] == [again.images[it.image].rel for it in again.items]
    with pytest.raises(ValueError, match="this audit is of"):
        collect(make_folder(tmp_path / "other", n=6), audit=tmp_path / "audit", progress=False)
    monkeypatch.chdir(tmp_path)
    assert corrections_file(data, None, rs.images.root) == tmp_path / "corrections.jsonl"
    with pytest.raises(ValueError, match="cannot go inside the data folder"):
        corrections_file(data, data / "circle" / "fixes.jsonl", rs.images.root)


def test_cli_review_help_list_and_errors(reviewed, tmp_path, six_class_run):
    rs, run = reviewed
    h = " ".join(cli("review", "--help").stdout.replace("│", " ").split())  # as read, not as Rich wraps it
    for words in ("RUN|DATA", "--corrections", "keep", "relabel", "duplicate", "--pool", "never changed"):
        assert words in h, words
    listed = json.loads(cli("review", str(run), "--list").stdout)
    assert [it["id"] for it in listed["items"]] == [it.id for it in rs.items]
    data = six_class_run.parent.parent / "data"
    assert_one_line_error(invoke("review", data, "--corrections", data / "fixes.jsonl", "--list"), "inside the data")
    assert_one_line_error(invoke("review", tmp_path / "nothing-here"), "no such folder")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"path": "a.png", "sha": "zz", "decision": "keep"}\n{"oops"\n{"path": 1}\n')
    assert_one_line_error(invoke("review", run, "--corrections", broken), "broken.jsonl:1")


def test_suggest_picks_of_a_pool_are_items_served_from_the_pool_only(reviewed, tmp_path):
    from PIL import Image

    from nextclass.review.collect import collect

    rs, run = reviewed
    pool = tmp_path / "pool"
    pool.mkdir()
    import numpy as np

    from conftest import shape_image

    rng = np.random.default_rng(5)
    for i in range(8):
        Image.fromarray(shape_image(i % 6, rng, size=24)).save(pool / f"new_{i}.png")
    with_pool = collect(run, pool=pool, suggest_n=3, progress=False)
    picks = [it for it in with_pool.items if it.reason == "suggest"]
    assert len(picks) == 3 and all(with_pool.images[it.image].rel.startswith("new_") for it in picks)
    assert all(it.suggested in with_pool.classes and "neighbors" not in it.evidence for it in picks)
    with LiveReview(with_pool, tmp_path / "c.jsonl") as srv:
        assert httpx.get(f"{srv.url}/v1/images/{picks[0].image}").status_code == 200
        r = httpx.post(f"{srv.url}/v1/decisions", json={"item": picks[0].id, "decision": "relabel", "label": "c2"})
        assert r.status_code == 200, r.text
    row = json.loads((tmp_path / "c.jsonl").read_text())
    assert row["reason"] == "suggest" and row["path"] == with_pool.images[picks[0].image].rel
