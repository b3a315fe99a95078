"""Model registry: build any classifier by name; every model is a StagedNet with BatchNorm layers.

The registry names each architecture's module and builder, so that the names (ARCHS) are known without importing
torch (the params check in the Snakefile needs them); a builder's module is imported when a model is built.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from natinv.models.base import StagedNet

# arch name -> (module under natinv.models, builder function)
ARCHS: dict[str, tuple[str, str]] = {
    "resnet8": ("resnet", "resnet8"),
    "resnet18": ("resnet", "resnet18"),
    "resnet34": ("resnet", "resnet34"),
    "vgg11": ("vgg", "vgg11"),
    "vgg16": ("vgg", "vgg16"),
    "mobilenetv2": ("mobilenetv2", "mobilenetv2"),
}


# the smallest images an architecture takes (VGG: five 2x2 max-poolings down to 1x1); others: MIN_IMAGE_SIZE
SMALLEST_INPUT = {"vgg11": 32, "vgg16": 32}
MIN_IMAGE_SIZE = 8  # below this no architecture here has anything left to learn from (data.image_size's bound too)


def check_input_size(arch: str, image_size: int) -> None:
    """One line when `arch` cannot take square images of `image_size`."""
    smallest = SMALLEST_INPUT.get(arch, MIN_IMAGE_SIZE)
    if image_size < smallest:
        from natinv.errors import ConfigError

        raise ConfigError(f"model arch {arch} takes images of at least {smallest}x{smallest}; these data are "
                          f"{image_size}x{image_size} (choose another architecture, or resize the data: data.image_size)")


def build_model(arch: str, num_classes: int, in_channels: int, width: int | None = None) -> StagedNet:
    if arch not in ARCHS:
        from natinv.errors import ConfigError

        raise ConfigError(f"unknown model arch {arch!r}; expected one of {', '.join(ARCHS)}")
    module, builder = ARCHS[arch]
    return getattr(importlib.import_module(f"natinv.models.{module}"), builder)(
        num_classes=num_classes, in_channels=in_channels, width=width)


def __getattr__(name: str):
    if name == "StagedNet":  # imported on first use: it needs torch
        from natinv.models.base import StagedNet

        return StagedNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ARCHS", "StagedNet", "build_model"]
