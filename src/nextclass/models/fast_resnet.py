"""``fast_resnet``: a small BatchNorm CNN for training from scratch on small images, fast on a CPU.

The design follows the fast-training records on CIFAR-10 (Page's "How to train your ResNet", Keller
Jordan's airbench), re-derived and sized for a 2-core CPU:

* a **frozen patch-whitening** first layer: a 2x2 convolution whose filters are the eigenvectors of the
  training patches' covariance, scaled by ``1/sqrt(eigenvalue)``, each with its negative (so the GELU
  after it keeps both signs). :meth:`FastResNet.init_whitening` sets it from the training images before
  the first step; its weights never train (its bias does).
* three stages ``conv3x3 → max-pool 2 → BN → GELU → conv3x3 → BN → GELU``; every conv starts as the
  identity on its first input channels (``dirac``), so the untrained net passes the whitened image
  through instead of noise.
* global max pooling, a linear classifier without bias, and logits scaled by ``1/9``: with the high
  Nesterov-SGD learning rate of the recipe this keeps early logits small.

Widths ``(32, 64, 128)`` keep the training step at ~70 MFLOP per 28-px image, which runs near the
CPU's matmul peak in oneDNN (measured in ``nextclass benchmark``). Any input from 8 px up works: the
pools round up. It follows timm's model interface (``forward_features``/``forward_head``/
``reset_classifier``/``num_features``), so heads, Grad-CAM, feature maps and export work on it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FastResNet", "fast_resnet", "WHITEN_EPS"]

WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues: keeps flat-patch directions from exploding
LOGIT_SCALE = 1 / 9


class _Stage(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.GELU()
        for conv in (self.conv1, self.conv2):  # identity on the first channels, default init elsewhere
            nn.init.dirac_(conv.weight.data[: conv.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


class FastResNet(nn.Module):
    """See the module docstring. ``widths``: channels of the three stages; ``whiten_kernel``: patch side."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128),
                 whiten_kernel: int = 2, drop_rate: float = 0.0, **_: object):
        super().__init__()
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        k = whiten_kernel
        self.whiten = nn.Conv2d(in_chans, 2 * in_chans * k * k, k, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act0 = nn.GELU()
        stages, c = [], self.whiten.out_channels
        for w in widths:
            stages.append(_Stage(c, w))
            c = w
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = c
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(c, num_classes, bias=False) if num_classes > 0 else nn.Identity()
        self.default_cfg = self.pretrained_cfg = {
            "input_size": (in_chans, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0,
            "mean": (0.5,) * in_chans, "std": (0.5,) * in_chans, "classifier": "classifier",
            "first_conv": "whiten", "num_classes": num_classes,
        }

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the first layer from ``images`` (N x C x H x W, normalised like the model's input).

        Example:
            >>> m = FastResNet(in_chans=1)
            >>> m.init_whitening(torch.randn(64, 1, 16, 16))
        """
        k = self.whiten.kernel_size[0]
        c = images.shape[1]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / max(1, len(patches) - 1)
        eigval, eigvec = torch.linalg.eigh(cov)
        filters = (eigvec.T / torch.sqrt(eigval.clamp_min(0) + eps)[:, None]).reshape(-1, c, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))
        self.whiten.bias.zero_()

    logit_scale = LOGIT_SCALE  # what forward_head multiplies the classifier's output by (heads.head_from_trunk too)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.act0(self.whiten(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x) * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes, bias=False) if num_classes > 0 else nn.Identity()


def fast_resnet(pretrained: bool = False, **kwargs) -> FastResNet:
    """timm entry point. ``pretrained`` is ignored (there are no published weights)."""
    for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "drop_path_rate", "global_pool"):
        kwargs.pop(k, None)
    return FastResNet(**kwargs)
