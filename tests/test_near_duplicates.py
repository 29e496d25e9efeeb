"""Near duplicates mean the same picture: real image sets without copies give (almost) none, planted
copies (re-encoded, resized, cropped, relabelled) are still found, and groups do not chain."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_audit import texture

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _jpeg(img: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert(img.mode)


def _scores(images: list[Image.Image]) -> np.ndarray:
    """same_picture score of images[0] against each of the others, through the real fingerprints."""
    from nextclass.data.hashing import hash_one_file
    from nextclass.data.same_picture import same_picture_scores

    rows = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, "PNG")
        rows.append(buf.getvalue())
    gray, sides = [], []
    for k, raw in enumerate(rows):
        p = Path(f"/tmp/_np_{id(rows)}_{k}.png")
        p.write_bytes(raw)
        fp = hash_one_file(str(p))
        p.unlink()
        gray.append(np.frombuffer(fp[2], np.uint8).reshape(32, 32))
        sides.append(min(fp[3], fp[4]))
    n = len(images) - 1
    return same_picture_scores(np.stack(gray), np.array(sides), np.zeros(n, int), np.arange(1, n + 1))


def test_same_picture_scores_copies_pass_and_look_alikes_do_not():
    from nextclass.data.same_picture import PICTURE_TOLERANCE

    rng = np.random.default_rng(11)
    big = texture(rng, 256)
    w = big.width
    copies = [big, big, _jpeg(big, 60), big.resize((128, 128), Image.BILINEAR),
              big.crop((2, 2, w - 2, w - 2)).resize((w, w), Image.BICUBIC)]  # crop ~0.8 % per side
    s = _scores(copies)
    assert s[0] == 0 and (s <= PICTURE_TOLERANCE).all(), s
    other = texture(rng, 256)
    assert _scores([big, other])[0] > 3 * PICTURE_TOLERANCE
    # a small image: a copy with a 3-pixel mark added is another picture, its JPEG re-encode is not
    small = texture(rng, 28).convert("L")
    marked = np.asarray(small).copy()
    marked[10:13, 10:13] = 255 - marked[10:13, 10:13]
    s = _scores([small, _jpeg(small, 75), small.resize((40, 40), Image.BILINEAR), Image.fromarray(marked)])
    assert s[0] <= PICTURE_TOLERANCE and s[1] <= PICTURE_TOLERANCE and s[2] > PICTURE_TOLERANCE, s


def test_groups_do_not_chain():
    from nextclass.data.groups import centre_groups

    # a chain 0-1-2-3-4-5 and a star around 7: the chain is cut, the star stays one group
    i = np.array([0, 1, 2, 3, 4, 7, 7, 7])
    j = np.array([1, 2, 3, 4, 5, 8, 9, 10])
    c = centre_groups(11, i, j, np.zeros(11, int))
    groups = {}
    for node, centre in enumerate(c.tolist()):
        groups.setdefault(centre, set()).add(node)
    assert groups[7] == {7, 8, 9, 10}
    chain = [g for g in groups.values() if g & {0, 1, 2, 3, 4, 5}]
    assert max(len(g) for g in chain) <= 3 and set().union(*chain) == {0, 1, 2, 3, 4, 5}
    for node, centre in enumerate(c.tolist()):  # a member is always linked to its centre
        assert centre == node or {node, centre} in [{a, b} for a, b in zip(i.tolist(), j.tolist())]


def test_digits_have_no_near_duplicates_and_planted_copies_are_found(tmp_path):
    import nextclass
    from nextclass.data.sources import load_source

    src = load_source("digits", cache_dir=tmp_path / "cache")
    root = tmp_path / "digits"
    shutil.copytree(src.root, root, ignore=shutil.ignore_patterns(".complete"))
    clean = nextclass.audit(str(root), splits="none", progress=False, cache_dir=tmp_path / "cache")["summary"]
    assert clean["near_pairs"] == 0 and clean["exact_extra_copies"] == 0
    planted = {}
    for k, s in enumerate(src.samples[5::200]):  # 8 JPEG re-encodes, 1 exact copy under another label
        img = Image.open(s.path).convert("L")
        cls = src.classes[s.label]
        if k == 0:
            dest = root / src.classes[(s.label + 1) % 10] / "relabelled.png"
            img.save(dest)
        else:
            dest = root / cls / f"reencoded_{k}.jpg"
            img.save(dest, quality=75)
        planted[dest.name] = Path(s.path).name
    rep = nextclass.audit(str(root), splits="none", progress=False, cache_dir=tmp_path / "cache")
    s = rep["summary"]
    assert s["exact_extra_copies"] == 1 and s["label_conflict_groups"] == 1
    assert s["near_pairs"] == len(planted) - 1 == 8  # every re-encode, and nothing else
    grouped = {m["path"].rsplit("/", 1)[1]: g for g in rep["duplicates"] for m in g["members"]}
    for copy, original in planted.items():
        assert {Path(m["path"]).name for m in grouped[copy]["members"]} == {copy, original}


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_subset_look_alikes_are_not_copies_planted_ones_are(tmp_path):
    from nextclass.data.quick_audit import audit_decoded
    from nextclass.data.cache import DecodedImages
    from nextclass.data.sources import DataSource, Sample, load_source

    src = load_source("fashion-mnist")
    n = 20000
    base = src.array[:n]
    jpeg = [np.asarray(_jpeg(Image.fromarray(base[k]))) for k in range(10)]
    # resized up and decoded back to 28 px, as a run's cache sees a resized copy
    resized = [np.asarray(Image.fromarray(base[k]).resize((40, 40), Image.BILINEAR).resize((28, 28), Image.BILINEAR))
               for k in range(10, 20)]
    arr = np.concatenate([base, np.stack(jpeg + resized)])
    labels = [src.samples[k].label for k in range(n)] + [src.samples[k].label for k in range(20)]
    samples = [Sample(f"fm/{k}", int(labels[k]), "train" if k < n else "test", k) for k in range(len(arr))]
    source = DataSource("fm", "fm", "fashion-mnist", src.classes, samples, arr)
    rep = audit_decoded(source, DecodedImages(arr[..., None], np.ones(len(arr), bool), {}), tmp_path / "audit.json")
    s = rep["summary"]
    assert s["near_candidates"] > 1000  # hash + thumbnail alone call these look-alikes near
    assert s["cross_split"]["train-test"] == {"exact": 0, "near": 20}  # every planted copy
    assert s["near_pairs"] - 20 <= 10  # and (almost) nothing among the 20,000 originals
    assert max(g["size"] for g in rep["duplicates"]) <= 4


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_the_quick_audit_narrows_a_crowded_search_and_says_so(tmp_path, monkeypatch, capsys):
    """The run's quick audit is bounded work: on images that crowd the hash space it narrows its threshold (to
    the closest pairs first), keeps finding close copies, and records and logs the narrowing."""
    import nextclass.data.audit as audit
    from nextclass.data.cache import DecodedImages
    from nextclass.data.hashing import candidate_count
    from nextclass.data.quick_audit import audit_decoded
    from nextclass.data.sources import DataSource, Sample, load_source

    src = load_source("fashion-mnist")
    n = 4000
    base = src.array[:n]
    jpeg = [np.asarray(_jpeg(Image.fromarray(base[k]))) for k in range(10)]
    arr = np.concatenate([base, np.stack(jpeg)])
    samples = [Sample(f"fm/{k}", int(src.samples[k % n].label), "train" if k < n else "test", k) for k in range(len(arr))]
    source = DataSource("fm", "fm", "fashion-mnist", src.classes, samples, arr)
    images = DecodedImages(arr[..., None], np.ones(len(arr), bool), {})
    full = audit_decoded(source, images, tmp_path / "full.json")["summary"]
    assert "near_narrowed" not in full and full["near_threshold"] == 8  # within the bounds: the full search
    from nextclass.data.hashing import hash_arrays
    crowd = candidate_count(hash_arrays(arr).phash, 8)
    for work, why in (((crowd // 2, 10**9), "crowd the hash space"),  # as if the hashes were twice as crowded
                      ((10**12, full["near_candidates"] // 4), "the quick audit checks")):  # 4x the pairs to check
        monkeypatch.setattr(audit, "QUICK_WORK", work)
        s = audit_decoded(source, images, tmp_path / "quick.json")["summary"]
        assert s["near_threshold"] < 8 and why in s["near_narrowed"]
        assert s["cross_split"]["train-test"]["near"] == 10  # JPEG copies are close: still every one
        assert "`nextclass audit DATA` runs the full search" in capsys.readouterr().err
