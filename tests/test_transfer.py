"""Transfer learning: feature cache, frozen backbone, recipes, attention head (tiny data, tiny timm models)."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import make_folder

MODEL = "test_efficientnet"  # timm's tiny test model: BatchNorm, depthwise convs, group_matcher, ~20k params


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-class folder and a local 'pretrained' weights file for MODEL (7-class head: it must be reset)."""
    import timm
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("transfer")
    data = make_folder(base / "data", n=20)
    torch.manual_seed(0)
    m = timm.create_model(MODEL, num_classes=7)
    with torch.no_grad():  # realistic BN statistics, so train/eval BN modes differ as in real weights
        m.train()
        m(torch.rand(16, 3, 32, 32))
    weights = base / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(weights))
    return {"base": base, "data": data, "weights": weights}


def _cfg(tiny, tmp_path, **kw):
    from nextclass.config import make_config

    d = dict(data=str(tiny["data"]), model=MODEL, pretrained=str(tiny["weights"]), recipe="linear-probe", epochs=3,
             img_size=32, output=str(tmp_path / "runs"), report=False, batch_size=16)
    d.update(kw)
    return make_config(**d)


def _count_backbone_calls(model) -> list[int]:
    calls = [0]
    model.conv_stem.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_feature_cache_hit_then_invalidated_by_preprocessing_and_weights(tiny, tmp_path):
    from nextclass.training.features import cached_features
    from nextclass.training.setup import prepare

    ctx = prepare(_cfg(tiny, tmp_path, tta_views=1), progress=False)
    model = ctx.model
    calls = _count_backbone_calls(model)
    first = cached_features(ctx, model, progress=False)
    assert not first.hit and calls[0] > 0 and first.path.exists()
    assert first.train.shape[:2] == (2, len(ctx.rows["train"]))  # eval view + 1 augmented view
    assert not torch.equal(first.train[0], first.train[1])

    calls[0] = 0
    again = cached_features(ctx, model, progress=False)
    assert again.hit and calls[0] == 0, "second run must not run the backbone"
    assert torch.equal(again.train, first.train) and torch.equal(again.val, first.val)

    ctx.pp = dataclasses.replace(ctx.pp, mean=(0.4, 0.4, 0.4))  # other preprocessing -> other features
    changed_pp = cached_features(ctx, model, progress=False)
    assert not changed_pp.hit and calls[0] > 0 and changed_pp.key != first.key

    calls[0] = 0
    with torch.no_grad():
        model.conv_stem.weight.mul_(1.01)  # other weights -> other features
    changed_w = cached_features(ctx, model, progress=False)
    assert not changed_w.hit and calls[0] > 0 and changed_w.key not in (first.key, changed_pp.key)


def test_probe_leaves_frozen_backbone_bit_identical(tiny, tmp_path):
    from nextclass.models.heads import head_prefixes
    from nextclass.training.probe import probe_phase
    from nextclass.training.setup import prepare

    ctx = prepare(_cfg(tiny, tmp_path, epochs=4, lr=5e-3), progress=False)
    model = ctx.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe_phase(ctx, model, {}, epochs=4, lr=5e-3, progress=False)
    after = model.state_dict()
    heads = head_prefixes(model)
    backbone = [k for k in before if not k.startswith(heads)]
    assert any("running_mean" in k for k in backbone)
    assert all(torch.equal(before[k], after[k]) for k in backbone), "a frozen weight or BN statistic moved"
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"]), "the head did not train"
    assert all(p.requires_grad for p in model.parameters()), "requires_grad must be restored after the probe"
    rows = list(csv.DictReader(open(ctx.run_dir / "history.csv")))
    from nextclass.training.linear_probe import C_GRID  # a linear head: one logistic fit per C, chosen on val

    assert [r["phase"] for r in rows] == ["probe"] * len(C_GRID)
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(C_GRID) + 1))
    assert (ctx.run_dir / "checkpoints" / "best.safetensors").exists()


def test_frozen_backbone_in_train_mode_keeps_bn_statistics(tiny):
    import timm
    from nextclass.models.freeze import frozen_backbone, trainable_names

    m = timm.create_model(MODEL, num_classes=3).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    bn_type = type(m.bn1)
    with frozen_backbone(m):
        assert trainable_names(m) == ["classifier.weight", "classifier.bias"]
        m(torch.rand(8, 3, 32, 32)).sum().backward()  # train-mode forward: plain BN would update running stats
    assert type(m.bn1) is bn_type and m.conv_stem.weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert m.conv_stem.weight.grad is None and m.classifier.weight.grad is not None


def test_two_phase_attention_head_history_selection_and_bundle_roundtrip(tiny, tmp_path):
    import nextclass
    from nextclass.training.fit import fit

    run = fit(_cfg(tiny, tmp_path, recipe="two-phase", head="attention", probe_epochs=4, epochs=2, lr=1e-3,
                   augment="light"), progress=False)
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [(int(r["epoch"]), r["phase"]) for r in rows] == [(1, "probe"), (2, "probe"), (3, "probe"), (4, "probe"),
                                                              (5, "finetune"), (6, "finetune")]
    from nextclass.engine.checkpoint import load_checkpoint

    st = load_checkpoint(run / "checkpoints" / "best.safetensors")
    accs = [float(r["val_acc"]) for r in rows]
    assert st["best_epoch"] == int(np.argmax(accs)) + 1, "best checkpoint must be the best val epoch of both phases"
    # the attention block trained and survives the bundle: same probabilities after reload
    from safetensors.torch import load_file

    sd = load_file(str(run / "model" / "model.safetensors"))
    assert "head_attn.qkv.weight" in sd and not torch.allclose(sd["head_attn.gamma"], torch.full_like(sd["head_attn.gamma"], 1e-2))
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["arch"]["head"] == "attention" and meta["recipe"] == "two-phase"
    pred = nextclass.load(run)
    assert type(pred.model).__name__.endswith("WithAttention")
    saved = list(csv.DictReader(open(run / "predictions.csv")))
    got = pred.predict([r["path"] for r in saved], topk=1)
    for r, p in zip(saved, got):
        assert p.label == r["predicted"] and abs(p.probability - float(r["probability"])) < 1e-4


def test_linear_probe_end_to_end_uses_cache_on_second_run(tiny, tmp_path):
    from nextclass.engine.checkpoint import load_checkpoint
    from nextclass.training.fit import fit

    cache = str(tmp_path / "own-cache")  # not the session cache: the first run must miss
    runs = [fit(_cfg(tiny, tmp_path, head="mlp", epochs=3, lr=3e-3, name=f"lp{i}", cache_dir=cache), progress=False)
            for i in range(2)]
    states = [load_checkpoint(r / "checkpoints" / "last.safetensors") for r in runs]
    assert [s["feature_cache"] for s in states] == ["built", "hit"] and states[0]["feature_key"] == states[1]["feature_key"]
    h = [(r / "history.csv").read_text() for r in runs]
    strip = lambda t: [row.split(",")[:6] for row in t.splitlines()]  # noqa: E731 (timings differ)
    assert strip(h[0]) == strip(h[1]), "a cached probe must train exactly as the first one"
    assert json.loads((runs[1] / "metrics.json").read_text())["test"]["n"] > 0


def test_layer_decay_default_and_attention_params_at_head_rate(tiny):
    import timm
    from nextclass.models.heads import attach_head
    from nextclass.engine.optim import param_groups
    from nextclass.models.freeze import default_layer_decay

    m = attach_head(timm.create_model(MODEL, num_classes=3), "attention", 3)
    ld = default_layer_decay(m)
    assert 0.3 < ld < 1
    groups = param_groups(m, 0.05, 1e-3, ld)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(m.head_attn.qkv.weight)] == pytest.approx(1e-3) == lr_of[id(m.classifier.weight)]
    assert lr_of[id(m.conv_stem.weight)] == pytest.approx(1e-3 * 0.1, rel=0.05)


def test_attention_head_rejects_unknown_options_and_tuple_classifiers():
    import timm
    from nextclass.models.factory import ModelError
    from nextclass.models.heads import attach_head

    with pytest.raises(ModelError, match="unknown option"):
        attach_head(timm.create_model("test_resnet", num_classes=3), "attention", 3, width=3)
    with pytest.raises(ModelError, match="Invalid head 'conv'"):
        attach_head(timm.create_model("test_resnet", num_classes=3), "conv", 3)
    vit = attach_head(timm.create_model("test_vit", num_classes=3), "attention", 3)  # tokens (B, N, C) work too
    assert vit(torch.rand(2, 3, *timm.create_model("test_vit").pretrained_cfg["input_size"][1:])).shape == (2, 3)


def test_bn_stats_frozen_keeps_running_stats_but_trains_affine():
    import timm
    from nextclass.models.freeze import bn_stats_frozen

    m = timm.create_model(MODEL, num_classes=3).train()
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    with bn_stats_frozen(m):
        m(torch.rand(8, 3, 32, 32) * 3).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items() if "running" in k)
    assert m.bn1.weight.grad is not None and m.bn1.training  # affine weights learn; train mode restored
    m(torch.rand(8, 3, 32, 32) * 3)  # hooks removed: plain train mode updates statistics again
    assert not torch.equal(before["bn1.running_mean"], m.bn1.running_mean)


def test_probe_neighbour_vectors_come_from_the_cache_and_match_a_backbone_pass(tiny, tmp_path):
    """After a linear probe the index, val and test vectors are read from the feature cache (no backbone call)
    and equal what the bundle's Embedder computes on the images."""
    from nextclass.evaluation.scorer import embeddings
    from nextclass.training.features import cached_features
    from nextclass.training.scoring import eval_images, scoring_of
    from nextclass.training.setup import prepare

    ctx = prepare(_cfg(tiny, tmp_path, cache_dir=str(tmp_path / "c")), progress=False)
    model = ctx.model.eval()
    ctx.features = cached_features(ctx, model, progress=False)
    calls = _count_backbone_calls(model)
    keep = np.array([0, 2, 3])
    s = scoring_of(ctx)
    embed = lambda split: embeddings(model, eval_images(ctx, split, keep if split == "train" else None), s)  # noqa: E731
    cached = {split: embed(split) for split in ("train", "val", "test")}
    assert calls[0] == 0, "a probe's neighbour vectors must not run the backbone"
    ctx.cfg = ctx.cfg.model_copy(update={"recipe": "finetune"})  # the same function, through the backbone
    for split, got in cached.items():
        want = embed(split)
        assert got.shape == want.shape == (len(keep) if split == "train" else len(ctx.rows[split]), got.shape[1])
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert calls[0] > 0


def test_robustness_is_cached_by_weights_images_and_seed(tiny, tmp_path):
    from nextclass.evaluation.robust import cached_robustness
    from nextclass.training.scoring import eval_images, scoring_of
    from nextclass.training.setup import prepare

    ctx = prepare(_cfg(tiny, tmp_path, cache_dir=str(tmp_path / "c")), progress=False)
    model = ctx.model.eval()
    calls = _count_backbone_calls(model)
    val = eval_images(ctx, "val")
    first = cached_robustness(model, val, scoring_of(ctx))
    assert calls[0] > 0 and 0 <= first["clean_accuracy"] <= 1
    calls[0] = 0
    again = cached_robustness(model, val, scoring_of(ctx))
    assert calls[0] == 0 and again == first  # read back: no corrupted pass, the very same block
    with torch.no_grad():
        model.classifier.bias.add_(0.5)  # another head -> another model: measured again
    cached_robustness(model, val, scoring_of(ctx))
    assert calls[0] > 0
    calls[0] = 0
    ctx.cfg = ctx.cfg.model_copy(update={"seed": ctx.cfg.seed + 1})  # another seed -> other corrupted copies
    cached_robustness(model, val, scoring_of(ctx))
    assert calls[0] > 0