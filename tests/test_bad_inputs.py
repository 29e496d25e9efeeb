"""Every command, fed bad inputs, answers with one line of error and a non-zero exit, never a traceback
(issue 23, "Done when"). In-process through Typer's CliRunner: an exception escaping a command would be a
traceback for the user."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import invoke as cli

MISSING = "/no/such/place-nextclass"


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("bad-inputs")
    (base / "empty").mkdir()
    (base / "texts" / "a").mkdir(parents=True)
    (base / "texts" / "b").mkdir(parents=True)
    for c in "ab":
        for i in range(3):
            (base / "texts" / c / f"{i}.jpg").write_text("not a picture")
    (base / "file.txt").write_text("a file, not a folder")
    (base / "half" / "model").mkdir(parents=True)  # a run that never finished
    (base / "half" / "config.yaml").write_text("data: digits\n")
    return {"base": base, "empty": base / "empty", "texts": base / "texts", "file": base / "file.txt",
            "half": base / "half", "out": base / "out"}


CASES = [
    ("audit missing", lambda p: ["audit", MISSING]),
    ("audit texts", lambda p: ["audit", p["texts"], "-q", "--cache-dir", p["base"] / "cache"]),
    ("audit split", lambda p: ["audit", p["texts"], "--split", "80/30/10"]),
    ("benchmark missing", lambda p: ["benchmark", MISSING]),
    ("benchmark device", lambda p: ["benchmark", "digits", "--device", "foo"]),
    ("evaluate missing", lambda p: ["evaluate", MISSING]),
    ("evaluate not a run", lambda p: ["evaluate", p["empty"]]),
    ("evaluate unfinished", lambda p: ["evaluate", p["half"]]),
    ("explain missing", lambda p: ["explain", MISSING, p["file"]]),
    ("export missing", lambda p: ["export", MISSING]),
    ("export unfinished", lambda p: ["export", p["half"]]),
    ("models add missing", lambda p: ["models", "add", MISSING, "--name", "x", "--store", p["base"] / "store"]),
    ("models add bad name", lambda p: ["models", "add", p["half"], "--name", "bad name!", "--store", p["base"] / "s"]),
    ("models show unknown", lambda p: ["models", "show", "nobody", "--store", p["base"] / "store"]),
    ("predict missing model", lambda p: ["predict", MISSING, p["file"]]),
    ("predict unfinished", lambda p: ["predict", p["half"], p["file"]]),
    ("predict no files", lambda p: ["predict", p["half"], MISSING]),
    ("report missing", lambda p: ["report", MISSING]),
    ("serve missing", lambda p: ["serve", MISSING]),
    ("serve unfinished", lambda p: ["serve", p["half"]]),
    ("suggest missing", lambda p: ["suggest", MISSING, p["empty"]]),
    ("train missing", lambda p: ["train", MISSING, "-o", p["out"]]),
    ("train texts", lambda p: ["train", p["texts"], "-o", p["out"]]),
    ("train split", lambda p: ["train", "digits", "--split", "80/30/10", "-o", p["out"]]),
    ("train device", lambda p: ["train", "digits", "--device", "foo", "-o", p["out"]]),
    ("train model", lambda p: ["train", "digits", "--model", "no_such_net", "-o", p["out"], "-q"]),
    ("train output is a file", lambda p: ["train", "digits", "-o", p["file"], "-q"]),
    ("train resume missing", lambda p: ["train", "--resume", MISSING]),
    ("tune missing", lambda p: ["tune", MISSING, "--trials", "1"]),
    ("demo output is a file", lambda p: ["demo", "-o", p["file"], "-q"]),
]


@pytest.mark.parametrize("name,args", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(places, name, args):
    r = cli(*args(places))
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{name}: {r.exception!r}"
    assert "Traceback" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.lstrip().lower().startswith("error")]
    assert len(errors) == 1, r.output
    assert MISSING not in r.output or MISSING in errors[0]
    assert not (places["out"].exists() and any(places["out"].iterdir())), "a failed run left a directory"
