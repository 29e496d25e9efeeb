"""The versioned model store: immutable NAME/vN copies, manifests, references, CLI."""

from __future__ import annotations

import json
import shutil
import stat
import threading
from pathlib import Path

import pytest

from conftest import cli


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("NEXTCLASS_HOME", str(home))
    return home / "models"


def test_add_creates_immutable_numbered_versions(tiny_run: Path, store: Path, tmp_path: Path):
    from nextclass.deploy import store as st

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    v1 = st.add(run, "shapes")
    assert st.add(run, "shapes") == v1  # the same files again: no identical v2
    (run / "model" / "README.md").write_text("an edited card\n")
    v2 = st.add(run / "model", "shapes", note="second")
    assert v1 == store / "shapes" / "v1" and v2 == store / "shapes" / "v2"
    meta = json.loads((run / "model" / "model.json").read_text())
    m = json.loads((v1 / "manifest.json").read_text())
    assert m["ref"] == "shapes@v1" and m["version"] == 1 and m["created"]
    assert m["data_hash"] == meta["data_hash"] and m["data_hash"].startswith("sha256:")
    assert m["metrics"]["val"]["accuracy"] == meta["metrics"]["val"]["accuracy"]
    assert m["classes"] == meta["classes"] and m["arch"] == "simple_cnn"
    assert set(m["files"]) == {"model.safetensors", "model.json", "README.md", "neighbors.safetensors"}  # card + index travel
    assert json.loads((v2 / "manifest.json").read_text())["note"] == "second"
    for f in v1.iterdir():
        assert not f.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), f
    # the stored copy does not follow later changes to the run
    before = st.show("shapes@v1")["files"]["model.safetensors"]["sha256"]
    (run / "model" / "model.safetensors").write_bytes(b"retrained")
    from nextclass.utils import file_sha256

    assert file_sha256(v1 / "model.safetensors") == before


def _edited_copy(tiny_run: Path, dest: Path, text: str) -> Path:
    """The run's bundle with another model card: a bundle the store keeps as a new version."""
    shutil.copytree(tiny_run / "model", dest)
    (dest / "README.md").write_text(text)
    return dest


def test_resolve_references_and_errors(tiny_run: Path, store: Path, tmp_path: Path):
    from nextclass.deploy import store as st

    st.add(tiny_run, "shapes")
    st.add(_edited_copy(tiny_run, tmp_path / "b2", "second\n"), "shapes")
    assert st.resolve("shapes") == store / "shapes" / "v2"
    assert st.resolve("shapes@v1") == st.resolve("shapes@1") == store / "shapes" / "v1"
    with pytest.raises(st.StoreError, match="versions v1, v2"):
        st.resolve("shapes@v7")
    with pytest.raises(st.StoreError, match="models: shapes"):
        st.resolve("nothing")
    with pytest.raises(ValueError, match="model name"):
        st.add(tiny_run, "bad/name")
    rows = st.list_models()
    assert [(r["name"], r["latest"], r["versions"]) for r in rows] == [("shapes", "v2", 2)]
    assert st.list_models(store=store.parent / "empty") == []


def test_concurrent_adds_get_distinct_versions(tiny_run: Path, store: Path, tmp_path: Path):
    from nextclass.deploy import store as st

    out: list[Path] = []
    bundles = [_edited_copy(tiny_run, tmp_path / f"b{i}", f"copy {i}\n") for i in range(4)]
    threads = [threading.Thread(target=lambda b=b: out.append(st.add(b, "race"))) for b in bundles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in out) == ["v1", "v2", "v3", "v4"]
    assert not [p for p in (store / "race").iterdir() if p.name.startswith(".")]  # no leftovers


def test_load_by_name_predicts_like_the_run(tiny_run: Path, store: Path):
    import nextclass
    from nextclass.deploy import store as st

    st.add(tiny_run, "shapes")
    files = sorted(str(p) for p in (tiny_run.parent.parent / "data").rglob("*.png"))[::15]
    a = nextclass.load(tiny_run).predict(files)
    b = nextclass.load("shapes@v1").predict(files)
    assert [x.label for x in a] == [x.label for x in b]
    assert [x.probability for x in a] == pytest.approx([x.probability for x in b], abs=1e-6)


def test_models_cli(tiny_run: Path, tmp_path: Path):
    s = str(tmp_path / "cli-store")
    p = cli("models", "add", str(tiny_run), "--name", "shapes", "--store", s)
    assert "added shapes@v1" in p.stdout
    rows = json.loads(cli("models", "list", "--json", "--store", s).stdout)
    assert rows[0]["ref"] == "shapes@v1"
    bad = cli("models", "show", "shapes@v3", "--store", s, check=False)
    assert bad.returncode == 2 and "versions v1" in " ".join(bad.stderr.split())
