"""Classifier heads on any timm backbone: ``linear`` (timm's own), ``mlp`` and ``attention``.

* ``mlp``: the classifier module (``pretrained_cfg["classifier"]``, e.g. ``classifier`` or
  ``head.fc``) is replaced in place by ``Linear -> GELU -> Dropout -> Linear``.
* ``attention``: the seed's light self-attention block over the last feature map, applied
  between ``forward_features`` and timm's ``forward_head`` (pooling, norm, classifier). The
  block projects the C channels down to ``dim`` (<= 256), runs one multi-head self-attention over
  the H*W positions, projects back and adds the result through a learnable layer scale that
  starts small, so the pretrained features pass through nearly unchanged at step 0.

The attention head changes the model's *class* to a cached subclass that overrides
``forward_features`` instead of wrapping the model in another module. Why: parameter names stay
those of timm (``blocks.3...``), so pretrained loading, ``group_matcher`` (layer-wise lr decay),
``pretrained_cfg``, ``get_classifier`` and ``forward_head`` all keep working; the new block's
parameters live under ``head_attn.`` (timm's layer-decay maps unmatched names to the last group,
i.e. the head's learning rate).

Both heads are rebuilt from ``(head, num_classes, **head_kwargs)`` alone, which is what the bundle
stores, so a saved model reloads with the same weights and predictions.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclass.models.errors import ModelError

__all__ = ["attach_head", "AttentionBlock", "HEADS", "head_prefixes", "trunk_features", "head_from_trunk", "head_logits",
           "weights_digest"]

HEADS = ("linear", "mlp", "attention")


class AttentionBlock(nn.Module):
    """Pre-norm multi-head self-attention over the positions of a feature map, with a residual.

    Args:
        channels: channels of the feature map (``model.num_features``).
        dim: attention width (channels are projected down to it and back).
        heads: attention heads (``dim`` must be divisible by it).
        init_scale: initial layer-scale value (small: the block starts close to identity).
        channels_last: the feature map is NHWC (timm models with ``output_fmt == "NHWC"``).

    Example:
        >>> blk = AttentionBlock(64, dim=32, heads=2)
        >>> blk(torch.zeros(2, 64, 7, 7)).shape
        torch.Size([2, 64, 7, 7])
    """

    def __init__(self, channels: int, dim: int = 256, heads: int = 4, init_scale: float = 1e-2,
                 channels_last: bool = False):
        super().__init__()
        if dim % heads:
            raise ModelError(f"attention head: dim {dim} is not divisible by heads {heads}")
        self.heads, self.channels_last = heads, channels_last
        self.norm = nn.LayerNorm(channels)
        self.proj_in = nn.Linear(channels, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, channels)
        self.gamma = nn.Parameter(torch.full((channels,), float(init_scale)))

    def _attend(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, N, C)
        b, n, _ = tokens.shape
        h = self.proj_in(self.norm(tokens))
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return tokens + self.gamma * self.proj_out(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # already tokens (ViT-like): (B, N, C)
            return self._attend(x)
        if self.channels_last:  # (B, H, W, C)
            b, hh, ww, c = x.shape
            return self._attend(x.reshape(b, hh * ww, c)).reshape(b, hh, ww, c)
        b, c, hh, ww = x.shape
        t = self._attend(x.flatten(2).transpose(1, 2))
        return t.transpose(1, 2).reshape(b, c, hh, ww)


@functools.lru_cache(maxsize=None)
def _attention_class(base: type) -> type:
    """``base`` with ``forward_features`` followed by ``self.head_attn`` (one class per base)."""

    def forward_features(self, x, *args, **kwargs):  # *args: e.g. ViT's attn_mask
        return self.head_attn(base.forward_features(self, x, *args, **kwargs))

    def trunk(self, x, *args, **kwargs):  # the backbone alone: what the linear-probe feature cache stores
        return base.forward_features(self, x, *args, **kwargs)

    return type(f"{base.__name__}WithAttention", (base,),
                {"forward_features": forward_features, "forward_trunk": trunk, "__module__": base.__module__,
                 "__doc__": f"{base.__name__} with nextclass' self-attention block before the head."})


def _classifier_path(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    path = cfg.get("classifier")
    if isinstance(path, (list, tuple)):
        raise ModelError(f"{type(model).__name__} has several classifiers {path}; use --head linear")
    if not path:
        raise ModelError(f"{type(model).__name__} does not name its classifier in pretrained_cfg; use --head linear")
    return path


def _check_timm(model: nn.Module, head: str) -> None:
    for attr in ("forward_features", "forward_head", "num_features"):
        if not hasattr(model, attr):
            raise ModelError(f"--head {head} needs a timm backbone with {attr}; {type(model).__name__} has none")


def attach_head(model: nn.Module, head: str, num_classes: int, **kw) -> nn.Module:
    """Put a ``head`` classifier for ``num_classes`` classes on ``model`` (in place) and return it.

    Args:
        model: a timm model (already created with ``num_classes``).
        head: ``linear`` (unchanged), ``mlp`` or ``attention``.
        num_classes: classes of the dataset.
        **kw: ``mlp``: ``hidden`` (default 512), ``dropout`` (default 0.2 or the model's drop_rate);
            ``attention``: ``dim`` (default min(C, 256)), ``heads`` (default dim // 64),
            ``init_scale`` (default 1e-2).

    Example:
        >>> import timm
        >>> m = attach_head(timm.create_model("test_resnet", num_classes=3), "attention", 3)
        >>> m(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 3])
    """
    if head == "linear":
        return model
    if head not in HEADS:
        raise ModelError(f"Invalid head {head!r}. Only {', '.join(HEADS)} are supported.")
    _check_timm(model, head)
    if head == "mlp":
        path = _classifier_path(model)
        feat = int(getattr(model, "head_hidden_size", None) or model.num_features)
        hidden = int(kw.get("hidden", 512))
        drop = float(kw.get("dropout", getattr(model, "drop_rate", 0.0) or 0.2))
        mlp = nn.Sequential(nn.Linear(feat, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, num_classes))
        model.set_submodule(path, mlp)
        return model
    unknown = set(kw) - {"dim", "heads", "init_scale"}
    if unknown:
        raise ModelError(f"attention head: unknown option(s) {sorted(unknown)} (allowed: dim, heads, init_scale)")
    c = int(model.num_features)
    dim = int(kw.get("dim", min(c, 256)))
    heads = int(kw.get("heads", max(1, dim // 64)))
    nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
    model.head_attn = AttentionBlock(c, dim, heads, float(kw.get("init_scale", 1e-2)), channels_last=nhwc)
    model.__class__ = _attention_class(type(model))
    return model


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of the trainable head (classifier, MLP, attention block)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cls = cfg.get("classifier") or "classifier"
    names = list(cls) if isinstance(cls, (list, tuple)) else [cls]
    if hasattr(model, "head_attn"):
        names.append("head_attn")
    return tuple(f"{n}." for n in names)


def trunk_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a frozen backbone gives the head: pooled pre-logits, or the feature map for ``attention``."""
    if hasattr(model, "forward_trunk"):
        return model.forward_trunk(x)
    if hasattr(model, "forward_head"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    raise ModelError(f"{type(model).__name__}: no forward_features/forward_head, cannot split backbone and head")


def head_from_trunk(model: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """Logits from :func:`trunk_features` output; ``model(x) == head_from_trunk(model, trunk_features(model, x))``."""
    if hasattr(model, "forward_trunk"):
        return model.forward_head(model.head_attn(t))
    p = getattr(model, "drop_rate", 0.0) or 0.0
    if p and model.training:  # timm applies this dropout between pooling and the classifier
        t = F.dropout(t, p, training=True)
    out = model.get_classifier()(t)
    scale = getattr(model, "logit_scale", None)  # fast_resnet scales its logits after the classifier
    return out * scale if scale is not None else out


@torch.no_grad()
def head_logits(model: nn.Module, feats: torch.Tensor, device, batch: int = 1024) -> np.ndarray:
    """The head's logits (float32, N x K) for cached :func:`trunk_features` of a frozen backbone."""
    model.eval()
    out = [head_from_trunk(model, feats[i:i + batch].to(device).float()).float().cpu() for i in range(0, len(feats), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def weights_digest(model: nn.Module, head: bool = False) -> str:
    """SHA-1 of the backbone's tensors (head excluded unless ``head``): changes whenever the frozen weights do."""
    heads = () if head else head_prefixes(model)
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        if (heads and any(name.startswith(p) for p in heads)) or name.endswith("num_batches_tracked"):
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
