"""The paper's road-sign CNN and its split into a device part and an edge part.

Wu et al. (2021), Sect. 6.1: "a CNN with 6 convolution layers and 2 fully connected layers.  Each
convolution layer has 64 channels and the kernel size is 3.  There is a maxpooling layer after
every two convolution layers.  The model is partitioned at the 2nd, 4th, and 6th convolution
layers."

Split convention (the one of He, Zhang & Lee 2019: their "ReLU22", after the ReLU of the second
block's second convolution, is our split 4, and their "ReLU12" our split 2):
``split(model, at=k)`` cuts **after conv k's ReLU and before the pool that follows it**, so the
device sends

======  =====================  ===========================
k       feature shape          floats sent (raw image: 3,072)
======  =====================  ===========================
1, 2    64 × 32 × 32           65,536
3, 4    64 × 16 × 16           16,384
5, 6    64 × 8 × 8             4,096
======  =====================  ===========================

:func:`device_part_parameters` lists the parameters :math:`\\theta_1` of the device part (the
convolutions ``1 … k``): what the shield of Chapter 3 clips and perturbs, and what the privacy
accounting counts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .config import check_positive_int

__all__ = [
    "RoadSignCNN",
    "road_sign_cnn",
    "SplitModel",
    "split",
    "feature_shape",
    "check_images",
    "check_split_point",
    "device_part_parameters",
    "NUM_CONV",
]

NUM_CONV = 6
CHANNELS = 64
HIDDEN = 256
IMAGE_SHAPE = (3, 32, 32)


class RoadSignCNN(nn.Sequential):
    """The paper's CNN as one flat :class:`torch.nn.Sequential`.

    Layers: ``[conv3×3(64), ReLU] × 2, maxpool2`` three times, then ``flatten, linear(1024→256),
    ReLU, linear(256→43)``.  The flat layout makes every split point an index into the sequence.
    """

    def __init__(self, num_classes: int = 43, hidden: int = HIDDEN):
        check_positive_int("num_classes", num_classes)
        check_positive_int("hidden", hidden)
        layers: list[nn.Module] = []
        in_ch = IMAGE_SHAPE[0]
        for k in range(1, NUM_CONV + 1):
            layers += [nn.Conv2d(in_ch, CHANNELS, kernel_size=3, padding=1), nn.ReLU()]
            in_ch = CHANNELS
            if k % 2 == 0:
                layers.append(nn.MaxPool2d(2))
        side = IMAGE_SHAPE[1] // 2 ** (NUM_CONV // 2)
        layers += [
            nn.Flatten(),
            nn.Linear(CHANNELS * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        ]
        super().__init__(*layers)
        for layer in self:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                # He initialisation: without batch norm, PyTorch's default init shrinks the
                # signal through six ReLU convolutions and Adam stalls on a constant prediction.
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.num_classes = num_classes
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401 - nn.Module API
        check_images(x)
        return super().forward(x)


def road_sign_cnn(*, num_classes: int = 43, seed: int = 0, hidden: int = HIDDEN) -> RoadSignCNN:
    """A freshly initialised :class:`RoadSignCNN`; the initial weights depend only on ``seed``."""
    check_positive_int("seed", seed, allow_zero=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RoadSignCNN(num_classes=num_classes, hidden=hidden)


def check_images(x: torch.Tensor, *, name: str = "x") -> None:
    """Raise a clear error unless ``x`` is a float batch of shape ``(n, 3, 32, 32)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(
            f"{name} must have shape (batch, 3, 32, 32), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor in [0, 1], got dtype {x.dtype}")


def check_split_point(at) -> int:
    """Validate a split point ``k ∈ {1, …, 6}`` and return it as ``int``."""
    if isinstance(at, bool) or not isinstance(at, (int, np.integer)):
        raise TypeError(f"at must be an int split point in 1..{NUM_CONV}, got {at!r}")
    if not 1 <= int(at) <= NUM_CONV:
        raise ValueError(f"at must be a split point in 1..{NUM_CONV}, got {at}")
    return int(at)


def _cut_index(model: nn.Sequential, at: int) -> int:
    """Index just after the ReLU that follows conv ``at``."""
    seen = 0
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Conv2d):
            seen += 1
        if seen == at and isinstance(layer, nn.ReLU):
            return i + 1
    raise ValueError(f"model has fewer than {at} convolution layers")


class SplitModel(NamedTuple):
    """The two halves of a split model: ``edge(device(x)) == model(x)``.

    Attributes
    ----------
    device
        :math:`f_{\\theta_1}`, run on the vehicle: image → intermediate features.
    edge
        :math:`f_{\\theta_2}`, run on the edge server: features → class logits.
    at
        The split point ``k`` (after conv ``k``'s ReLU).
    """

    device: nn.Sequential
    edge: nn.Sequential
    at: int


def split(model: nn.Sequential, *, at: int) -> SplitModel:
    """Partition the CNN into the device part :math:`f_{\\theta_1}` and the edge part :math:`f_{\\theta_2}`.

    Implements the co-inference partition of Wu et al. (2021), Sect. 2.1 / Fig. 2.  The halves
    *share* the parameters of ``model`` (no copy), so ``split(model, at=k).edge(split(model,
    at=k).device(x))`` equals ``model(x)`` exactly.

    Parameters
    ----------
    model
        A :class:`RoadSignCNN` (or any flat ``nn.Sequential`` with the same conv/ReLU layout).
    at
        Split point ``k ∈ {1, …, 6}``: after conv ``k``'s ReLU, before the following pool.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential (e.g. RoadSignCNN), got {type(model).__name__}")
    at = check_split_point(at)
    cut = _cut_index(model, at)
    layers = list(model)
    return SplitModel(nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:]), at)


def feature_shape(at: int) -> tuple[int, int, int]:
    """Shape ``(C, H, W)`` of the features the device sends at split point ``at``."""
    at = check_split_point(at)
    side = IMAGE_SHAPE[1] // 2 ** ((at - 1) // 2)
    return (CHANNELS, side, side)


# ----------------------------------------------------------------------------------------------
# the device part θ1
# ----------------------------------------------------------------------------------------------

def _check_model(model) -> nn.Sequential:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential (e.g. RoadSignCNN), got "
                        f"{type(model).__name__}")
    return model


def _device_convs(model: nn.Sequential, at: int) -> list[nn.Conv2d]:
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    if len(convs) < at:
        raise ValueError(f"model has {len(convs)} convolutions, fewer than at = {at}")
    return convs[:at]


def device_part_parameters(model: nn.Sequential, *, at: int) -> list[nn.Parameter]:
    r"""The parameters :math:`\theta_1` of the device part at split ``at`` (convolutions 1…at)."""
    model, at = _check_model(model), check_split_point(at)
    return [p for conv in _device_convs(model, at) for p in conv.parameters()]
