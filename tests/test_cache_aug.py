"""Decode-once cache (hit, invalidation, identical eval batches) and batched augmentation."""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from conftest import make_folder
from nextclass.data.batch_aug import BatchAugment, BatchEval
from nextclass.data.cache import DecodeSpec, decode_all
from nextclass.data.loader import BatchLoader, Batching
from nextclass.data.sources import load_source
from nextclass.data.transforms import Augment, Preprocess, image_to_tensor
from nextclass.data.decode import open_image


def _decode(src, cache, size=24, channels=3):
    return decode_all(src, list(range(len(src.samples))), DecodeSpec(size, channels), cache_dir=cache, progress=False)


def test_cache_hit_then_invalidated_by_data_and_resolution(tmp_path):
    data = make_folder(tmp_path / "d", n=5, size=40)
    cache = tmp_path / "cache"
    first = _decode(load_source(data), cache)
    assert not first.hit
    second = _decode(load_source(data), cache)
    assert second.hit and np.array_equal(first.array, second.array)
    assert not _decode(load_source(data), cache, size=20).hit  # resolution changed
    assert not _decode(load_source(data), cache, channels=1).hit  # channels changed
    time.sleep(0.01)
    victim = sorted(data.rglob("*.png"))[0]
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(victim)  # data changed
    third = _decode(load_source(data), cache)
    assert not third.hit
    assert not list((tmp_path / "d").rglob("*.npy")), "the cache never writes beside the user's images"


def test_eval_batches_identical_with_and_without_cache(tmp_path):
    data = make_folder(tmp_path / "d", n=4, size=50)
    src = load_source(data)
    pp = Preprocess(size=36, crop=32, channels=3, interpolation="bicubic", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    images = decode_all(src, list(range(len(src.samples))), pp, cache_dir=tmp_path / "c", progress=False)
    labels = np.array([s.label for s in src.samples])
    x, _ = next(iter(BatchLoader(images.array, np.arange(len(labels)), labels, Batching(batch_size=64, train=False))))
    cached = BatchEval(pp)(x)
    direct = torch.stack([image_to_tensor(open_image(s.path, 3), pp) for s in src.samples])
    assert torch.equal(cached, direct)


def test_batch_augment_shapes_ranges_and_seeding():
    pp = Preprocess(size=40, crop=32, channels=3)
    x = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8)
    aug = BatchAugment(pp, Augment(erasing=0.5))
    torch.manual_seed(0)
    a = aug(x)
    torch.manual_seed(0)
    b = aug(x)
    assert a.shape == (16, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1.0 - 1e-6 and a.max() <= 1.0 + 1e-6


def test_batch_augment_identity_when_off_equals_eval():
    pp = Preprocess(size=32, crop=32, channels=1)
    x = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    off = BatchAugment(pp, Augment(scale=(1.0, 1.0), hflip=False, rotation=0.0, brightness=0.0, contrast=0.0))
    assert torch.allclose(off(x), BatchEval(pp)(x), atol=1e-5)


def test_batch_loader_order_depends_on_seed_and_epoch_and_shards_cover_all():
    arr = np.zeros((50, 2, 2, 1), np.uint8)
    labels = np.arange(50) % 5
    order = lambda **kw: np.concatenate([y.numpy() for _, y in BatchLoader(arr, np.arange(50), np.arange(50), Batching(batch_size=8, train=True, **kw))])
    assert np.array_equal(order(seed=1, epoch=2), order(seed=1, epoch=2))
    assert not np.array_equal(order(seed=1, epoch=2), order(seed=1, epoch=3))
    shards = [order(seed=0, epoch=0, shard=(r, 2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 25
    assert set(np.concatenate(shards)) == set(range(50))
    bal = np.concatenate([y.numpy() for _, y in BatchLoader(arr, np.arange(50), np.r_[np.zeros(45, int), np.ones(5, int)],
                                                             Batching(batch_size=10, train=True, balance=True))])
    assert 0.3 < bal.mean() < 0.7  # minority class drawn about as often as the majority
