"""Models: timm backbones by name, nextclass' own ``simple_cnn``, pretrained-weight loading."""

from nextclass.models.factory import create, data_config, count_params

__all__ = ["create", "data_config", "count_params"]
