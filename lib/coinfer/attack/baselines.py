"""Yardsticks for the spears (Sect. 2.8): the trivial attacker and the class leak.

* :func:`mean_image_baseline` — the attacker that ignores :math:`v_0`: every attack must beat it;
* :func:`class_leak` — classify the reconstructions with the victim: does the class survive?
  (a :class:`ClassLeak` per attack).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from ..config import check_positive_int
from ..models import IMAGE_SHAPE
from ..train import predict
from ._checks import _image_tensor, _to_float

class ClassLeak(NamedTuple):
    """How much of the class survives a reconstruction, judged by the victim itself.

    Attributes
    ----------
    original_accuracy
        Victim's top-1 accuracy on the original images.
    reconstruction_accuracy
        Top-1 accuracy on the reconstructions (fraction that keeps its true label).
    agreement
        Fraction of reconstructions classified like their original.
    n
        Number of images.
    """

    original_accuracy: float
    reconstruction_accuracy: float
    agreement: float
    n: int


def class_leak(model: nn.Module, originals, reconstructions, labels: torch.Tensor):
    """Classify originals and reconstructions with the victim ``model`` and compare the labels.

    Parameters
    ----------
    model
        The victim classifier (the whole CNN, :math:`f_{\\theta_2} \\circ f_{\\theta_1}`).
    originals
        The true images :math:`x_0` (``uint8`` or float in [0, 1]).
    reconstructions
        The attacker's :math:`x_0'` (same shape), or a mapping ``name -> reconstructions`` to score
        several attacks against one pass over the originals.
    labels
        True class ids of ``originals``.

    Returns
    -------
    ClassLeak, or dict of ClassLeak when ``reconstructions`` is a mapping.
    """
    originals = _image_tensor(originals, "originals")
    if not isinstance(labels, torch.Tensor) or labels.shape != (originals.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({originals.shape[0]},)")
    batches = reconstructions if isinstance(reconstructions, Mapping) else {None: reconstructions}
    for name, rec in batches.items():
        rec = _image_tensor(rec, "reconstructions")
        if rec.shape != originals.shape:
            raise ValueError(f"originals and reconstructions{'' if name is None else f'[{name!r}]'} "
                             f"must have the same shape, got {tuple(originals.shape)} and "
                             f"{tuple(rec.shape)}")
    p_orig = predict(model, originals).argmax(1)
    out = {}
    for name, rec in batches.items():
        p_rec = predict(model, rec).argmax(1)
        out[name] = ClassLeak(float((p_orig == labels).float().mean()),
                              float((p_rec == labels).float().mean()),
                              float((p_rec == p_orig).float().mean()), int(labels.shape[0]))
    return out if isinstance(reconstructions, Mapping) else out[None]


def mean_image_baseline(attacker_images, n: int) -> torch.Tensor:
    """The trivial attacker: ``n`` copies of the mean of its own images, whatever it intercepts.

    Any attack worth the name must beat this baseline, which uses no information about
    :math:`v_0` at all.
    """
    images = _image_tensor(attacker_images, "attacker_images")
    check_positive_int("n", n)
    mean = _to_float(images).mean(dim=0, keepdim=True)
    return mean.expand(n, *IMAGE_SHAPE).clone()

