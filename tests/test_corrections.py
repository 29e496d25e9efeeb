"""Corrections are data (issue 25): the append-only log, its reader, and corrections applied by content hash."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import pytest

from conftest import make_folder
from nextclass.data.corrections import (
    Correction,
    CorrectionsError,
    append_correction,
    apply_corrections,
    correct_source,
    latest_decisions,
    read_corrections,
    sample_ids,
    sample_shas,
)
from nextclass.data.sources import load_source
from nextclass.utils import file_sha256

SHA = "ab" * 32


def test_round_trip_and_latest_wins(tmp_path):
    f = tmp_path / "c.jsonl"
    rows = [Correction("cat/1.png", SHA, "relabel", label="dog", reason="label issue"),
            Correction("cat/2.png", "cd" * 32, "duplicate", duplicate_of="cat/3.png", reason="near duplicate"),
            Correction("cat/1.png", "sha256:" + SHA.upper(), "keep", time="2025-01-01T00:00:00Z")]
    for c in rows:
        append_correction(f, c)
    back = read_corrections(f)
    assert back == rows and back[2].sha == SHA  # prefix and case normalised
    assert Correction.from_dict(rows[0].to_dict()) == rows[0]
    latest = latest_decisions(back)
    assert latest[SHA].decision == "keep" and len(latest) == 2
    assert all(json.loads(line)["path"] for line in f.read_text().splitlines())


@pytest.mark.parametrize("row, field", [
    ({"path": "a", "sha": SHA, "decision": "burn"}, "decision"),
    ({"path": "a", "sha": SHA, "decision": "relabel"}, "label"),
    ({"path": "a", "sha": "xyz", "decision": "drop"}, "sha"),
    ({"path": "a", "decision": "drop"}, "sha"),
    ({"path": "a", "sha": SHA, "decision": "drop", "colour": 1}, "colour"),
    ({"path": 3, "sha": SHA, "decision": "drop"}, "path"),
])
def test_bad_rows_name_line_and_field(tmp_path, row, field):
    f = tmp_path / "c.jsonl"
    append_correction(f, Correction("ok.png", SHA, "drop"))
    with open(f, "a") as h:
        h.write(json.dumps(row) + "\n")
    with pytest.raises(CorrectionsError, match=rf"c.jsonl:2: {field}"):
        read_corrections(f)


def test_torn_last_line_is_skipped_and_the_next_append_stays_whole(tmp_path, capsys):
    f = tmp_path / "c.jsonl"
    append_correction(f, Correction("a.png", SHA, "drop"))
    line = json.dumps(Correction("b.png", "cd" * 32, "drop").to_dict())
    with open(f, "a") as h:
        h.write(line[: len(line) // 2])  # a crash mid-write
    assert [c.path for c in read_corrections(f)] == ["a.png"]
    assert "skipped 1 torn line(s) (line 2" in capsys.readouterr().err
    append_correction(f, Correction("c.png", "ef" * 32, "drop"))
    assert [c.path for c in read_corrections(f)] == ["a.png", "c.png"]  # the torn row stays sealed off


def _writer(args):
    f, who, n = args
    for i in range(n):
        append_correction(f, Correction(f"{who}/{i:04d}.png", SHA, "relabel", label="x" * 3000, reason=who))


def test_two_processes_appending_at_once_keep_every_row(tmp_path):
    f = str(tmp_path / "c.jsonl")
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_writer, [(f, "a", 150), (f, "b", 150)])
    rows = read_corrections(f)
    assert len(rows) == 300
    assert sorted(c.path for c in rows) == sorted([f"a/{i:04d}.png" for i in range(150)]
                                                  + [f"b/{i:04d}.png" for i in range(150)])


def _data(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data", n=4, size=16)


def test_moved_file_still_matched_by_hash_and_data_untouched(tmp_path):
    data = _data(tmp_path)
    src = load_source(data)
    ids, shas = sample_ids(src), sample_shas(src, cache_dir=tmp_path / "cache")
    f = tmp_path / "c.jsonl"
    i_relabel, i_drop = ids.index("circle/circle_001.png"), ids.index("hbar/hbar_002.png")
    append_correction(f, Correction(ids[i_relabel], shas[i_relabel], "relabel", label="vbar", reason="label issue"))
    append_correction(f, Correction(ids[i_drop], shas[i_drop], "drop", reason="unreadable"))
    append_correction(f, Correction("vbar/vbar_000.png", "", "keep"))  # no hash: matched by path
    # the user renames and moves the relabelled file after the review
    shutil.move(str(data / "circle/circle_001.png"), data / "hbar" / "renamed.png")
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
    src = load_source(data)
    applied = correct_source(src, f, cache_dir=tmp_path / "cache")
    moved = [s for s in src.samples if s.path.endswith("renamed.png")]
    assert src.classes[moved[0].label] == "vbar"
    assert applied.relabeled == 1 and applied.dropped == 1 and applied.kept == 1 and applied.missing == 0
    assert len(src.samples) == 11 and applied.file == "c.jsonl"
    assert applied.sha256 == file_sha256(f).removeprefix("sha256:")
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == before  # the data folder is read-only


def test_missing_image_reported_not_fatal(tmp_path):
    data = _data(tmp_path)
    src = load_source(data)
    f = tmp_path / "c.jsonl"
    append_correction(f, Correction("hbar/hbar_000.png", sample_shas(src)[4], "drop"))
    append_correction(f, Correction("gone.png", "12" * 32, "relabel", label="hbar"))
    _, applied = apply_corrections(src.samples, read_corrections(f), src.classes, source=src, file=f)
    assert applied.missing == 1 and applied.missing_ids == ["gone.png"] and applied.dropped == 1


def test_unknown_class_and_no_match_are_errors(tmp_path):
    src = load_source(_data(tmp_path))
    with pytest.raises(CorrectionsError, match="unknown class 'zebra'"):
        apply_corrections(src.samples, [Correction("a.png", SHA, "relabel", label="zebra")], src.classes, source=src)
    rows = [Correction(f"x{i}.png", f"{i:064x}", "drop") for i in range(3)]
    with pytest.raises(CorrectionsError, match="0 of 3"):
        apply_corrections(src.samples, rows, src.classes, source=src)


def test_array_samples_hash_their_pixels():
    src = load_source("digits")
    shas = sample_shas(src)
    rows = [Correction(src.samples[0].path, shas[0], "relabel", label=src.classes[(src.samples[0].label + 1) % 10])]
    new, applied = apply_corrections(src.samples, rows, src.classes, source=src)
    assert applied.relabeled == 1 and new[0].label != src.samples[0].label and new[1] == src.samples[1]
