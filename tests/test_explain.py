"""Grad-CAM: automatic target layer per architecture, overlays that point at the object, `nextclass explain`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli


@pytest.mark.parametrize("name,expected", [("simple_cnn", "features.10"), ("resnet18", "layer4"),
                                           ("convnext_atto", "norm_pre"), ("test_efficientnet", "bn2"),
                                           ("tf_efficientnet_lite0", "bn2")])
def test_target_layer_is_found_per_architecture(name, expected):
    from nextclass.models.factory import create
    from nextclass.report.cam import cam_maps, find_target_layer

    model = create(name, num_classes=3)
    layer_name, layer = find_target_layer(model, (3, 64, 64))
    # simple_cnn ends with a max-pool: the layer feeding it (last ReLU) gives a finer map
    assert layer_name == expected
    maps = cam_maps(model, torch.randn(2, 3, 64, 64), [0, 2], layer)
    assert maps.shape == (2, 64, 64) and maps.max() <= 1.0 and maps.min() >= 0.0 and maps.max() > 0.5
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


@pytest.mark.parametrize("head", ["mlp", "attention"])
def test_target_layer_when_a_custom_head_wraps_the_backbone(head):
    from nextclass.models.factory import create
    from nextclass.models.heads import attach_head
    from nextclass.report.cam import cam_maps, find_target_layer

    model = attach_head(create("test_convnext", num_classes=3), head, 3)
    name, layer = find_target_layer(model, (3, 64, 64))
    assert name == ("head_attn" if head == "attention" else "norm_pre")
    assert cam_maps(model, torch.randn(1, 3, 64, 64), [1], layer).shape == (1, 64, 64)


def test_token_models_get_a_clear_error():
    from nextclass.models.factory import create
    from nextclass.report.cam import CamError, find_target_layer

    with pytest.raises(CamError, match="not a spatial"):
        find_target_layer(create("test_vit", num_classes=3), (3, 32, 32))


def test_cam_overlay_points_at_the_shape(tiny_run: Path):
    """On the trained tiny model, Grad-CAM is hotter on the drawn shape than on the plain background."""
    from PIL import Image

    import nextclass
    from nextclass.report.cam import cam_maps, cam_overlay

    pred = nextclass.load(tiny_run)
    data = tiny_run.parent.parent / "data"
    files = sorted(data.glob("*/*_00[0-3].png"))
    assert len(files) == 12
    inside_hotter = 0
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        mask = img.min(axis=2) < 150  # the coloured shape; the background is light grey
        label = pred.classes.index(f.parent.name)
        cam = cam_maps(pred.model, pred.to_tensor(str(f))[None], [label])[0]
        inside_hotter += cam[mask].mean() > cam[~mask].mean()
    assert inside_hotter >= 10, f"CAM on the shape for only {inside_hotter}/12 images"
    over = cam_overlay(pred, Image.open(files[0]))  # the serving engineer's entry point: PIL in, PIL out
    assert over.mode == "RGB" and over.size == (224, 224)
    assert cam_overlay(pred, str(files[0]), class_index=2).size == (224, 224)


def test_explain_cli_writes_overlays(tiny_run: Path, tmp_path):
    data = tiny_run.parent.parent / "data"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "cams"
    p = cli("explain", str(tiny_run), str(data / "circle" / "circle_000.png"), str(data / "vbar" / "vbar_001.png"),
            str(bad), "--output", str(out))
    assert "unreadable" in p.stdout
    from PIL import Image

    for name in ("circle_000_cam.png", "vbar_001_cam.png"):
        with Image.open(out / name) as im:
            assert im.size == (224, 224) and im.mode == "RGB"
    assert not (out / "broken_cam.png").exists()
    import nextclass
    from nextclass.report.cam import explain_files

    with pytest.raises(ValueError, match="not one of the model's classes"):  # the CLI turns this into exit code 2
        explain_files(nextclass.load(tiny_run), [str(data / "circle" / "circle_000.png")], out, class_name="nope")
    rows = explain_files(nextclass.load(tiny_run), [str(data / "circle" / "circle_000.png")] * 2, out, class_name="hbar")
    assert [r["explained"] for r in rows] == ["hbar", "hbar"]
    assert rows[0]["output"] != rows[1]["output"]  # same file name twice: no overwrite within one call
