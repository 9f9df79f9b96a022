"""Architecture names that say what kind of model a bundle holds, without building one (no torch)."""

from __future__ import annotations

INSTANCE_ARCHITECTURES = ("maskrcnn", "components")  # torchvision's Mask R-CNN and the components oracle


def is_instance_architecture(name: str) -> bool:
    return str(name).lower() in INSTANCE_ARCHITECTURES
