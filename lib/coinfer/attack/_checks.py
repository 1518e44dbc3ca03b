"""Input validation shared by the modules of :mod:`coinfer.attack` (not public).

Images are *checked*, never clipped: a batch must be ``(n, 3, 32, 32)``, ``uint8`` or float in
``[0, 1]``; features must have the shape of the split point they come from.
"""

from __future__ import annotations

import torch

from ..data import ImageSet
from ..models import IMAGE_SHAPE, check_split_point, feature_shape

_check_at = check_split_point  # one validation of split points for the whole library


def _image_tensor(images, name: str, *, allow_empty: bool = False) -> torch.Tensor:
    """Validate a batch of images (``uint8`` or float in [0, 1]); return it unchanged.

    Accepts an :class:`~coinfer.data.ImageSet` (its ``images``).  Values are *checked*, never
    clipped.
    """
    if isinstance(images, ImageSet):
        images = images.images
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or ImageSet, got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{name} must have shape (n, 3, 32, 32), got {tuple(images.shape)}")
    if images.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: the attack needs at least one image")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"{name} must be uint8 or floating point in [0, 1], got dtype {images.dtype}")
    if images.numel():
        if not torch.isfinite(images).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name} must have values in [0, 1], got values in [{low:.4g}, {high:.4g}]"
            )
    return images


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def _check_features(features, at: int, name: str = "features") -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    expected = feature_shape(at)
    if features.dim() != 4 or tuple(features.shape[1:]) != expected:
        raise ValueError(
            f"{name} must have shape (n, {', '.join(map(str, expected))}) for split at={at} "
            f"(the output of conv {at}'s ReLU), got {tuple(features.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one feature map")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {features.dtype}")
    return features

