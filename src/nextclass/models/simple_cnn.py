"""``simple_cnn``: the seed notebooks' small CNN, registered in timm's model registry.

Conv32 → Conv64 → Conv128 (each 3x3 conv + BatchNorm + ReLU + 2x2 max-pool), global average
pool, Dense 256 + ReLU + dropout 0.5, classifier. It follows timm's model interface
(``forward_features``/``forward_head``/``reset_classifier``/``num_features``), so everything that
works on a timm model (heads, freezing, Grad-CAM target layers, export) works on it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SimpleCNN", "simple_cnn"]


class SimpleCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128),
                 convs_per_stage: int = 1, hidden: int = 256, drop_rate: float = 0.5, **_: object):
        super().__init__()
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        layers: list[nn.Module] = []
        c = in_chans
        for w in widths:
            for _k in range(convs_per_stage):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.pre_logits = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Dropout(drop_rate))
        self.head_hidden = hidden
        self.head_hidden_size = hidden  # timm's name for the classifier's input width
        self.classifier = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = self.pretrained_cfg = {
            "input_size": (in_chans, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0,
            "mean": (0.5,) * in_chans, "std": (0.5,) * in_chans, "classifier": "classifier",
            "first_conv": "features.0", "num_classes": num_classes,
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x.mean((2, 3)))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.head_hidden, num_classes) if num_classes > 0 else nn.Identity()


def simple_cnn(pretrained: bool = False, **kwargs) -> SimpleCNN:
    """timm entry point. ``pretrained`` is ignored (there are no published weights)."""
    for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "drop_path_rate", "global_pool"):
        kwargs.pop(k, None)
    return SimpleCNN(**kwargs)
