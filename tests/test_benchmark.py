"""`nextclass benchmark` (where training time goes) and the opt-in `--compile` training path."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from conftest import cli, make_folder

PARTS = ("decode", "loader", "model_alone", "step")


def test_benchmark_cli_json_and_file(tmp_path):
    data = make_folder(tmp_path / "data", n=40)
    out = tmp_path / "bench.json"
    p = cli("benchmark", str(data), "--steps", "3", "--warmup", "1", "--batch-size", "16", "--json", "-o", str(out),
            "--cache-dir", str(tmp_path / "cache"))
    r = json.loads(p.stdout)  # stdout is pure JSON: progress and logs go to stderr
    assert r == json.loads(out.read_text()) and all(part in r for part in PARTS)
    assert r["model"] == "fast_resnet" and r["batch_size"] == 16 and r["img_size"] == 32  # the training default at 32 px
    assert r["decode"]["cache"] == "built" and r["decode"]["images"] == 120 and r["decode"]["skipped"] == 0
    pf = r["decode"]["per_file"]
    assert pf["files"] > 0 and pf["decoded"] == pf["files"] and pf["images_per_second_one_process"] > 0
    assert r["loader"]["images_per_second"] > 0 and "batched augmentation" in r["loader"]["kind"]
    m = r["model_alone"]
    assert m["train_step_images_per_second"] > 0 and m["inference_images_per_second"] > 0 and m["parameters"] > 10_000
    assert m["forward_mflop_per_image"] > 1 and m["matmul_peak_gflops"] > 0  # fast_resnet at 32 px: ~30 MFLOP
    assert m["train_step_gflops"] == pytest.approx(m["fraction_of_peak"] * m["matmul_peak_gflops"])
    assert r["step"]["images_per_second"] > 0
    assert r["step"]["epoch_seconds_estimate"] == r["train_images"] / r["step"]["images_per_second"]
    assert any(v.startswith(("model-bound", "data-bound")) for v in r["verdict"])
    assert any("channels_last" in n for n in r["auto"])  # the automatic defaults are the training ones, reported
    # second run: the decoded-image cache is hit
    p2 = cli("benchmark", str(data), "--steps", "2", "--warmup", "0", "--batch-size", "16", "--json",
             "--cache-dir", str(tmp_path / "cache"))
    assert json.loads(p2.stdout)["decode"]["cache"] == "hit"


def test_benchmark_table_and_bad_input(tmp_path):
    from rich.console import Console

    from nextclass.benchmark import benchmark
    from nextclass.report.console import benchmark_summary_lines

    r = benchmark("digits", steps=2, warmup=1, batch_size=32, augment="light", progress=False)
    assert r["decode"]["per_file"]["files"] == 200  # digits are PNG files: 200 of them decoded one by one
    buf = io.StringIO()
    con = Console(file=buf, width=200, highlight=False)
    for line in benchmark_summary_lines(r):
        con.print(line)
    text = buf.getvalue()
    for row in ("loader alone", "model alone: train step", "whole training step"):
        assert row in text
    p = cli("benchmark", str(tmp_path / "nope"), check=False)
    assert p.returncode == 2 and "nope" in p.stderr
    p = cli("benchmark", "digits", "--set", "optimizer=rmsprop", check=False)
    assert p.returncode == 2 and "optimizer" in p.stderr


def _history(run) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_compile_benchmark_and_training(tmp_path, capsys):
    """torch.compile: timed by the benchmark; a compiled training run takes the eager run's steps (to float
    rounding) and saves plain (loadable) weights. One model and input shape throughout, so this process compiles
    once: the training run reuses the benchmark's compiled step. No dropout: compiled code draws its own masks."""
    import nextclass
    from nextclass.benchmark import benchmark

    data = make_folder(tmp_path / "data", n=30, size=24)
    same = dict(model="simple_cnn", batch_size=16, drop_rate=0.0, cache_dir=str(tmp_path / "cache"))
    r = benchmark(str(data), steps=2, warmup=1, compile=True, progress=False, **same)
    c = r["compile"]
    assert c["first_step_seconds"] > 0 and c["images_per_second"] > 0
    assert c["speedup"] == c["images_per_second"] / r["step"]["images_per_second"]
    assert any(v.startswith("torch.compile") for v in r["verdict"])
    runs, logs = {}, {}
    for mode in ("compiled", "eager"):
        capsys.readouterr()
        runs[mode] = nextclass.train(data=str(data), epochs=2, compile=mode == "compiled", report=False,
                                     output=str(tmp_path / "runs"), name=mode, progress=False, **same)
        logs[mode] = capsys.readouterr().err
    assert "torch.compile" in logs["compiled"] and "torch.compile" not in logs["eager"]  # the step was compiled
    for a, b in zip(_history(runs["compiled"]), _history(runs["eager"]), strict=True):
        for col in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-4, abs=2e-5), (a["epoch"], col)
    files = sorted(str(f) for f in data.rglob("*.png"))[::9]
    compiled = nextclass.load(runs["compiled"]).predict(files)  # keys are the plain module's (no `_orig_mod.`)
    eager = nextclass.load(runs["eager"]).predict(files)
    assert all(p.error is None for p in compiled) and len(compiled) == len(files) == 10
    assert [p.label for p in compiled] == [p.label for p in eager]
    assert [p.probability for p in compiled] == pytest.approx([p.probability for p in eager], abs=1e-4)
