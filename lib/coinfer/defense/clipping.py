r"""Choosing the clip bound :math:`G` from the trained weights, and a victim clipped to it.

The noise scale of the paper's shield is :math:`2G/\epsilon`, so :math:`G` decides where on the
:math:`\epsilon` axis the classifier collapses.  The shared victim (:data:`coinfer.train.VICTIM`)
is trained with the paper's rescaling :math:`\theta \leftarrow \theta / \max(1,
\lVert\theta\rVert_\infty/G)` and :math:`G = 1`, a bound its weights never reach.  This module
makes the choice explicit:

* :func:`choose_clip_bound` — the rule: :math:`G` = the ``percentile``-th percentile of
  :math:`|\theta_{1,j}|` over the device part, rounded *up* to two significant digits;
* :func:`clamp_parameters` — coordinate-wise clipping :math:`\theta_j \leftarrow
  \min(\max(\theta_j, -G), G)`, which bounds every coordinate by :math:`G` (the only property
  the sensitivity argument uses) while leaving the coordinates below :math:`G` untouched;
* :class:`ClipFineTune` and :func:`load_or_finetune_clipped` — the cached victim fine-tuned for a
  fixed number of Adam steps with :func:`clamp_parameters` applied to :math:`\theta_1` after
  every step (and once before the first), cached on disk keyed by its settings like
  :func:`coinfer.train.load_or_train`.

Why not the paper's rescaling with a smaller :math:`G`?  Rescaling makes
:math:`\lVert\theta_1\rVert_\infty = G` whenever it binds, so the ratio of the noise scale
:math:`2G/\epsilon` to the largest weight is :math:`2/\epsilon` whatever :math:`G` is: under that
rule :math:`G` is only a unit.  A percentile rule only means something with coordinate clipping.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..config import (cache_dir, check_positive_float, check_positive_int, default_device,
                      file_lock, payload_digest, progress_bar, tensors_digest)
from ..data import ImageSet, load_signs, train_val_split
from ..models import device_part_parameters, road_sign_cnn
from ..models import check_split_point as _check_at
from ..train import VICTIM, TrainConfig, fixed_threads, load_or_train, use_bf16

__all__ = [
    "CLIP_PERCENTILE",
    "choose_clip_bound",
    "clamp_parameters",
    "ClipFineTune",
    "ClippedVictim",
    "finetune_clipped",
    "load_or_finetune_clipped",
]

#: The percentile of :math:`|\theta_1|` that :func:`choose_clip_bound` uses by default.
CLIP_PERCENTILE = 99.0


def _round_up(x: float, digits: int) -> float:
    if x <= 0:
        raise ValueError(f"cannot round a non-positive bound {x}")
    exponent = math.floor(math.log10(x)) - (digits - 1)
    step = 10.0 ** exponent
    return float(f"{math.ceil(x / step - 1e-9) * step:.{max(digits, 1) + 6}g}")


def choose_clip_bound(model: nn.Sequential, *, at: int = 4, percentile: float = CLIP_PERCENTILE,
                      digits: int = 2) -> float:
    r"""The clip bound :math:`G` chosen from the trained weights.

    .. math:: G = \operatorname{roundup}_{\text{digits}}\big(
              Q_{p}\{|\theta_{1,j}| : j = 1, \dots, d\}\big),

    the ``percentile``-th percentile :math:`Q_p` (NumPy's linear interpolation) of the absolute
    values of the device parameters at split ``at`` (weights and biases), rounded up to
    ``digits`` significant digits so that the bound is a readable number and never below the
    percentile.  A fraction of about :math:`1 - p/100` of the coordinates then exceeds
    :math:`G` and is clipped by :func:`clamp_parameters`.
    """
    _check_at(at)
    p = check_positive_float("percentile", percentile)
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    digits = check_positive_int("digits", digits)
    values = torch.cat([q.detach().abs().flatten().double().cpu()
                        for q in device_part_parameters(model, at=at)]).numpy()
    return _round_up(float(np.percentile(values, p)), digits)


@torch.no_grad()
def clamp_parameters(params, *, bound: float) -> int:
    r"""Coordinate-wise clipping :math:`\theta_j \leftarrow \min(\max(\theta_j, -G), G)`, in place.

    Afterwards every coordinate satisfies :math:`|\theta_j| \le G`, so two clipped vectors differ
    by at most :math:`2G` per coordinate — the premise of the sensitivity :math:`2Gd` of
    the proposition on the paper's calibration in Chapter 3.  Unlike
    :func:`coinfer.train.clip_parameters` (the paper's rescaling) it leaves the coordinates already
    within the bound unchanged.

    Returns
    -------
    int
        The number of coordinates that were changed.
    """
    G = check_positive_float("bound", bound)
    params = list(params)
    if not params:
        raise ValueError("params must contain at least one tensor")
    changed = 0
    for q in params:
        changed += int((q.abs() > G).sum())
        q.clamp_(-G, G)
    return changed


@dataclass(frozen=True)
class ClipFineTune:
    r"""A victim fine-tuned under coordinate clipping of :math:`\theta_1` to :math:`[-G, G]`.

    Attributes
    ----------
    clip_bound
        :math:`G`.
    at
        The split point whose device part :math:`\theta_1` is clipped (and later perturbed).
    steps
        Adam steps of fine-tuning (a fixed count), with :func:`clamp_parameters` after each.
    lr, batch_size, seed
        Adam's constant learning rate, the mini-batch size, and the seed of the batch order and
        the augmentation.
    base
        The :class:`~coinfer.train.TrainConfig` of the victim that is fine-tuned (its training
        part of the GTSRB training split is used; its augmentation setting is kept).
    """

    clip_bound: float
    at: int = 4
    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 128
    seed: int = 0
    base: TrainConfig = VICTIM

    def __post_init__(self):
        check_positive_float("clip_bound", self.clip_bound)
        _check_at(self.at)
        check_positive_int("steps", self.steps)
        check_positive_float("lr", self.lr)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("seed", self.seed, allow_zero=True)
        if not isinstance(self.base, TrainConfig):
            raise TypeError(f"base must be a TrainConfig, got {type(self.base).__name__}")


class ClippedVictim(NamedTuple):
    """A fine-tuned, clipped victim and how it got there."""

    model: nn.Sequential
    config: ClipFineTune
    clamped_at_start: int
    history: list[dict]
    cache_hit: bool
    seconds: float


def finetune_clipped(
    model: nn.Sequential,
    config: ClipFineTune,
    *,
    train_set: ImageSet,
    device: torch.device | None = None,
    progress: bool = True,
) -> ClippedVictim:
    r"""Fine-tune a copy of ``model`` for ``config.steps`` Adam steps under coordinate clipping.

    The clipping step of Algorithm 2 of Wu et al. (2021), with coordinate clipping
    (:func:`clamp_parameters`) in place of the rescaling: :math:`\theta_1` is clipped to
    :math:`[-G, G]` once before the first step and after every step, so the returned model
    satisfies :math:`\theta_1 \in [-G, G]^d`.  Deterministic at a fixed thread count.
    """
    from ..train import _augment, _batches, _prepare  # the victim's own training steps

    if not isinstance(config, ClipFineTune):
        raise TypeError(f"config must be a ClipFineTune, got {type(config).__name__}")
    device = device or default_device()
    base = config.base
    tr_idx, _ = train_val_split(len(train_set), val_fraction=base.val_fraction, seed=base.seed)
    part = train_set.subset(tr_idx)
    start = time.perf_counter()
    bf16 = use_bf16(base.mixed_precision, device)
    channels_last = bf16 and device.type == "cpu"
    net = road_sign_cnn(seed=base.seed, hidden=base.hidden).to(device)
    net.load_state_dict(model.state_dict())
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    clipped = device_part_parameters(net, at=config.at)
    history = []
    with fixed_threads(base.num_threads):
        at_start = clamp_parameters(clipped, bound=config.clip_bound)
        optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
        loss_fn = nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(config.seed)
        bar = progress_bar(total=config.steps, desc="fine-tuning under clipping",
                           progress=progress, mininterval=1.0)
        step, losses = 0, []
        net.train()
        while step < config.steps:
            for xb, yb in _batches(part.images, part.labels, config.batch_size, generator):
                x = _prepare(xb, device, channels_last)
                if base.augment:
                    x = _augment(x, generator)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = loss_fn(net(x), yb.to(device))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                clamp_parameters(clipped, bound=config.clip_bound)
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
                if step % 50 == 0 or step == config.steps:  # mean loss over the last block
                    history.append({"step": step, "train_loss": float(np.mean(losses))})
                    losses = []
                if step == config.steps:
                    break
        bar.close()
    net = net.to(memory_format=torch.contiguous_format).eval()
    return ClippedVictim(net, config, at_start, history, False, time.perf_counter() - start)


def _key(config: ClipFineTune, base_model: nn.Sequential, device: torch.device) -> str:
    payload = dataclasses.asdict(config) | {
        "base_weights": tensors_digest(base_model.state_dict().values()),
        "device": device.type,
        "bf16": use_bf16(config.base.mixed_precision, device),
        "torch": torch.__version__.split("+")[0],
        "format": 1,
    }
    return payload_digest(payload)


def load_or_finetune_clipped(
    config: ClipFineTune,
    *,
    base_model: nn.Sequential | None = None,
    train_set: ImageSet | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> ClippedVictim:
    """The victim of ``config``: from the model cache when present, else fine-tuned and cached.

    The cache key covers ``config`` (including the base :class:`~coinfer.train.TrainConfig`), a
    hash of the base victim's weights, the device type, bf16 use and the torch version.
    ``base_model`` defaults to ``coinfer.train.load_or_train(config.base).model``.
    """
    if not isinstance(config, ClipFineTune):
        raise TypeError(f"config must be a ClipFineTune, got {type(config).__name__}")
    device = device or default_device()
    if train_set is None:
        train_set = load_signs("train", source=config.base.data, progress=progress)
    if base_model is None:
        base_model = load_or_train(config.base, train_set=train_set, device=device,
                                   progress=progress).model
    path = cache_dir("models") / f"clipped-{_key(config, base_model, device)}.pt"
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            try:
                blob = torch.load(path, map_location=device, weights_only=True)
                net = road_sign_cnn(seed=config.base.seed, hidden=config.base.hidden).to(device)
                net.load_state_dict(blob["state_dict"])
                return ClippedVictim(net.eval(), config, int(blob["clamped_at_start"]),
                                     blob["history"], True, 0.0)
            except Exception:
                path.unlink(missing_ok=True)
        result = finetune_clipped(base_model, config, train_set=train_set, device=device,
                                  progress=progress)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": result.model.state_dict(), "history": result.history,
                    "clamped_at_start": result.clamped_at_start}, tmp)
        tmp.replace(path)
        return result
