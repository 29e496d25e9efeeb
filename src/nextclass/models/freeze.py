"""Freeze a backbone correctly: no gradients *and* no BatchNorm statistics updates.

Setting ``requires_grad = False`` is not enough: a BatchNorm layer in ``train()`` mode still
updates its running mean/var on every forward, so a "frozen" backbone silently drifts when the
training loop calls ``model.train()`` (the classic bug of the seed notebooks). While frozen,
every BatchNorm outside the head is swapped for timm's ``FrozenBatchNorm2d`` /
``FrozenBatchNormAct2d`` (fixed statistics in any mode); leaving the context puts the very same
original modules back, so the model's class, state-dict keys and BN settings are exactly as
before.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

from nextclass.models.heads import head_prefixes

__all__ = ["frozen_backbone", "freeze_backbone", "unfreeze", "trainable_names", "bn_stats_frozen", "default_layer_decay"]


def _is_head(name: str, heads: tuple[str, ...]) -> bool:
    return any((name + ".").startswith(h) for h in heads)


def freeze_backbone(model: nn.Module, bn: bool = True) -> dict:
    """Freeze everything but the head. Returns the undo record for :func:`unfreeze`.

    Args:
        model: a timm model (optionally with an attached head).
        bn: also swap the backbone's BatchNorm layers for frozen ones (needed whenever the
            backbone runs in ``train()`` mode; a loop on cached features can skip it).

    Example:
        >>> import timm
        >>> m = timm.create_model("test_resnet", num_classes=3)
        >>> undo = freeze_backbone(m); trainable_names(m)
        ['fc.weight', 'fc.bias']
        >>> unfreeze(m, undo)
    """
    from timm.layers import freeze_batch_norm_2d
    from torch.nn.modules.batchnorm import _BatchNorm

    heads = head_prefixes(model)
    grads = {}
    for n, p in model.named_parameters():
        if not _is_head(n, heads):
            grads[n] = p.requires_grad
            p.requires_grad_(False)
    swapped = {}
    for name, mod in list(model.named_modules()):
        if bn and name and isinstance(mod, _BatchNorm) and not _is_head(name, heads):
            frozen = freeze_batch_norm_2d(mod)
            if frozen is not mod:
                swapped[name] = mod
                model.set_submodule(name, frozen)
    return {"grads": grads, "modules": swapped}


def unfreeze(model: nn.Module, undo: dict) -> None:
    """Undo :func:`freeze_backbone`: original BatchNorm modules back, ``requires_grad`` as it was."""
    for name, mod in undo["modules"].items():
        model.set_submodule(name, mod)
    params = dict(model.named_parameters())
    for n, flag in undo["grads"].items():
        params[n].requires_grad_(flag)


@contextmanager
def frozen_backbone(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager around :func:`freeze_backbone` / :func:`unfreeze` (restores even on error).

    Example:
        >>> import timm, torch
        >>> m = timm.create_model("test_resnet", num_classes=3)
        >>> with frozen_backbone(m):
        ...     _ = m.train()(torch.zeros(2, 3, 32, 32))  # BN statistics stay as they were
    """
    undo = freeze_backbone(model)
    try:
        yield model
    finally:
        unfreeze(model, undo)


def _use_running_stats(module: nn.Module, args) -> None:
    module.training = False  # normalise with the running statistics and leave them as they are


@contextmanager
def bn_stats_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Fine-tune with every BatchNorm normalising by its running statistics (affine weights still train).

    Why: a head probed on features computed with the pretrained statistics no longer fits once
    ``train()`` mode normalises by batch statistics of another domain. Measured on Fashion-MNIST
    with EfficientNet-Lite0 at 64 px: the probed model's loss on a training batch is 1.24 in eval
    mode and 5.56 in train mode, and the first fine-tuning epoch destroyed the probe (val 0.51 -> 0.21).
    Small CPU batches make batch statistics noisy as well. Forward pre-hooks keep the modules,
    their class and state-dict keys unchanged (the hook travels with ``copy.deepcopy``, e.g. EMA).

    Example:
        >>> import timm, torch
        >>> m = timm.create_model("test_resnet", num_classes=3).train()
        >>> with bn_stats_frozen(m):
        ...     _ = m(torch.rand(2, 3, 32, 32))  # running_mean/var untouched, BN weights get gradients
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    handles = [m.register_forward_pre_hook(_use_running_stats) for m in model.modules() if isinstance(m, _BatchNorm)]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.train(model.training)


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def default_layer_decay(model: nn.Module, stem_ratio: float = 0.1) -> float | None:
    """Layer-wise lr decay that gives the first layer group ``stem_ratio`` x the head's rate.

    Uses timm's ``group_matcher`` (the grouping timm's ``param_groups_layer_decay`` uses).
    ``None`` for a model without one.

    Example:
        >>> import timm
        >>> 0 < default_layer_decay(timm.create_model("test_resnet")) < 1
        True
    """
    if not hasattr(model, "group_matcher"):
        return None
    from timm.models import group_parameters

    layer_map = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    layer_max = max(layer_map.values())  # the head (unmatched names) is the last group, at scale 1
    if layer_max < 1:
        return None
    return float(f"{stem_ratio ** (1 / layer_max):.3f}")
