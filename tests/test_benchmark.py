"""`nextclass benchmark` (where training time goes) and the opt-in `--compile` training path."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from conftest import make_folder, run_cli

PARTS = ("decode", "loader", "model_alone", "step")


def test_benchmark_cli_json_and_file(tmp_path):
    data = make_folder(tmp_path / "data", n=40)
    out = tmp_path / "bench.json"
    p = run_cli("benchmark", str(data), "--steps", "3", "--warmup", "1", "--batch-size", "16", "--json", "-o", str(out),
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
    p2 = run_cli("benchmark", str(data), "--steps", "2", "--warmup", "0", "--batch-size", "16", "--json",
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
    p = run_cli("benchmark", str(tmp_path / "nope"), check=False)
    assert p.returncode == 2 and "nope" in p.stderr
    p = run_cli("benchmark", "digits", "--set", "optimizer=rmsprop", check=False)
    assert p.returncode == 2 and "optimizer" in p.stderr


def test_compile_benchmark_and_training(tmp_path):
    """torch.compile: timed by the benchmark; a compiled training run saves plain (loadable) weights."""
    import nextclass
    from nextclass.benchmark import benchmark

    data = make_folder(tmp_path / "data", n=30, size=24)
    r = benchmark(str(data), steps=2, warmup=1, batch_size=16, compile=True, progress=False,
                  cache_dir=str(tmp_path / "cache"))
    c = r["compile"]
    assert c["first_step_seconds"] > 0 and c["images_per_second"] > 0
    assert c["speedup"] == c["images_per_second"] / r["step"]["images_per_second"]
    assert any(v.startswith("torch.compile") for v in r["verdict"])
    run = nextclass.train(data=str(data), model="simple_cnn", epochs=1, batch_size=16, compile=True, report=False,
                          output=str(tmp_path / "runs"), name="compiled", progress=False, cache_dir=str(tmp_path / "cache"))
    p = nextclass.load(run)  # keys are the plain module's (no `_orig_mod.` prefix)
    probs = p.predict(sorted(str(f) for f in data.rglob("*.png"))[:4])
    assert len(probs) == 4
    assert all(r.error is None for r in probs) and np.isfinite([r.probability for r in probs]).all()
