"""Model registry: build any classifier by name; every model is a StagedNet with BatchNorm layers."""
from __future__ import annotations

from collections.abc import Callable

from natinv.models.base import StagedNet
from natinv.models.mobilenetv2 import mobilenetv2
from natinv.models.resnet import resnet8, resnet18, resnet34
from natinv.models.vgg import vgg11, vgg16

ARCHS: dict[str, Callable[..., StagedNet]] = {
    "resnet8": resnet8,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "mobilenetv2": mobilenetv2,
}


def build_model(arch: str, num_classes: int, in_channels: int, width: int | None = None) -> StagedNet:
    if arch not in ARCHS:
        from natinv.errors import ConfigError

        raise ConfigError(f"unknown model arch {arch!r}; expected one of {', '.join(ARCHS)}")
    return ARCHS[arch](num_classes=num_classes, in_channels=in_channels, width=width)


__all__ = ["ARCHS", "StagedNet", "build_model"]
