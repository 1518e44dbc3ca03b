"""The white-box spear of Sect. 2.6: regularised maximum-likelihood estimation (He et al. 2019).

An attacker who knows :math:`\\theta_1` runs gradient descent on
:math:`\\lVert f_{\\theta_1}(x) - v_0 \\rVert_2^2 + \\lambda\\,\\mathrm{TV}(x)` over the image:

* :func:`total_variation` — the image prior :math:`\\mathrm{TV}_\\beta` (Mahendran & Vedaldi 2015);
* :func:`white_box_attack` — the rMLE, returning a :class:`WhiteBoxResult`;
* :func:`tune_tv_weight` — choose :math:`\\lambda` from :data:`TV_GRID` on the attacker's own
  images, from a random start; :data:`CHAPTER_TV_WEIGHTS` holds an earlier run's choices.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..config import check_positive_float, check_positive_int, progress_bar
from ..models import IMAGE_SHAPE
from ..train import fixed_threads
from ._checks import _check_at, _check_features, _image_tensor, _to_float

#: How far inside ``(0, 1)`` a starting image given to :func:`white_box_attack` is placed, so
#: that its logit is finite.
INIT_MARGIN = 1e-4


def total_variation(x: torch.Tensor, *, beta: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """Per-image total variation :math:`\\mathrm{TV}_\\beta(x)`, averaged over pixel positions.

    .. math:: \\mathrm{TV}_\\beta(x) = \\frac{1}{C(H-1)(W-1)} \\sum_{c,i,j}
              \\big((x_{c,i+1,j} - x_{c,i,j})^2 + (x_{c,i,j+1} - x_{c,i,j})^2 + \\varepsilon\\big)^{\\beta/2}

    the image prior of Mahendran & Vedaldi (2015) used by He et al. (2019); :math:`\\beta = 1` is
    the isotropic TV (``eps`` keeps its gradient finite at flat regions).

    Returns
    -------
    torch.Tensor
        Shape ``(n,)``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (n, C, H, W), got {getattr(x, 'shape', x)!r}")
    check_positive_float("beta", beta)
    check_positive_float("eps", eps, allow_zero=True)
    dh = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    dw = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    return (dh.pow(2) + dw.pow(2) + eps).pow(beta / 2).mean(dim=(1, 2, 3))


class WhiteBoxResult(NamedTuple):
    """The outcome of :func:`white_box_attack`.

    Attributes
    ----------
    reconstructions
        Float32 images ``(n, 3, 32, 32)`` in ``[0, 1]``.
    feature_error
        Per image, :math:`\\lVert f_{\\theta_1}(x') - v_0\\rVert_2^2` divided by the number of
        feature entries, at the end.
    history
        Mean objective over the images every ``steps // 20`` steps: dicts with ``step``,
        ``objective``, ``feature_error``.
    """

    reconstructions: torch.Tensor
    feature_error: np.ndarray
    history: list[dict]


def white_box_attack(
    device_model: nn.Module,
    intercepted_features: torch.Tensor,
    *,
    at: int,
    tv_weight: float | torch.Tensor = 0.05,
    steps: int = 300,
    lr: float = 0.1,
    seed: int = 0,
    beta: float = 1.0,
    batch_size: int = 64,
    num_threads: int = 1,
    progress: bool = True,
    init: torch.Tensor | None = None,
    log_every: int | None = None,
) -> WhiteBoxResult:
    """The white-box spear: regularised maximum-likelihood estimation (rMLE) of He et al. (2019).

    An attacker who knows :math:`\\theta_1` solves, for each intercepted :math:`v_0`,

    .. math:: x_0' = \\arg\\min_{x \\in [0,1]^{3 \\times 32 \\times 32}}
              \\frac{1}{d}\\lVert f_{\\theta_1}(x) - v_0 \\rVert_2^2 + \\lambda\\,\\mathrm{TV}(x)

    (:math:`d` = number of feature entries, :math:`\\lambda` = ``tv_weight``, TV from
    :func:`total_variation`) by Adam on the unconstrained :math:`z` of the parametrisation
    :math:`x = \\sigma(z)` (so :math:`x` stays in the image range), from a seeded random start.

    Parameters
    ----------
    device_model
        :math:`f_{\\theta_1}` itself, e.g. ``split(victim, at=k).device`` — white-box access.
        Its parameters are not changed (nor their gradients).
    intercepted_features
        :math:`v_0`, ``(n, *feature_shape(at))``.
    at
        The split point.
    tv_weight, beta
        :math:`\\lambda` and the exponent of the TV prior.  ``tv_weight`` may also be a 1-D
        tensor with one :math:`\\lambda \\ge 0` per image (the objective is a sum of independent
        per-image terms, so a search over :math:`\\lambda` can run as one batch).
    steps, lr
        Number of Adam steps (fixed) and its learning rate on :math:`z`.
    seed
        Seeds the starting point :math:`z \\sim \\mathcal N(0, 0.1^2)` (ignored when ``init`` is
        given).
    batch_size
        Images optimised together (the objective is a sum of independent per-image terms).
    init
        Optional starting images ``(n, 3, 32, 32)`` in ``[0, 1]``, e.g. the black-box inverse
        network's reconstructions :math:`g_\\omega(v_0)`: the optimisation then starts at
        :math:`z = \\operatorname{logit}(x_{\\text{init}})`.  The sigmoid never reaches 0 or 1,
        so pixels of ``init`` outside :math:`[10^{-4}, 1 - 10^{-4}]` start at that bound
        (documented here; it moves no pixel by more than :math:`10^{-4}`).  Default ``None``: the
        seeded random start.
    log_every
        ``None`` (default): the history holds the mean objective every ``steps // 20`` Adam steps,
        each entry evaluated just before the update it is labelled with.  An integer: the history
        starts with the objective at the starting point (``step`` 0) and then holds it every
        ``log_every`` updates, ``step`` counting the updates made before the evaluation.
    """
    if not isinstance(device_model, nn.Module):
        raise TypeError(f"device_model must be an nn.Module (white-box access), got "
                        f"{type(device_model).__name__}")
    at = _check_at(at)
    intercepted_features = _check_features(intercepted_features, at, "intercepted_features")
    n = intercepted_features.shape[0]
    if isinstance(tv_weight, torch.Tensor):
        if tv_weight.shape != (n,) or not tv_weight.is_floating_point():
            raise ValueError(f"tv_weight as a tensor must be floating point of shape ({n},) (one "
                             f"weight per image), got {tuple(tv_weight.shape)} {tv_weight.dtype}")
        if not torch.isfinite(tv_weight).all() or bool((tv_weight < 0).any()):
            raise ValueError("tv_weight must hold finite weights >= 0")
        tv_all = tv_weight.detach().float().cpu()
    else:
        check_positive_float("tv_weight", tv_weight, allow_zero=True)
        tv_all = None
    if log_every is not None:
        check_positive_int("log_every", log_every)
    check_positive_int("steps", steps)
    check_positive_float("lr", lr)
    check_positive_int("seed", seed, allow_zero=True)
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_threads", num_threads)
    params = list(device_model.parameters())
    device = params[0].device if params else torch.device("cpu")
    flags = [p.requires_grad for p in params]
    was_training = device_model.training
    generator = torch.Generator().manual_seed(seed)
    if init is None:
        z_all = torch.randn(n, *IMAGE_SHAPE, generator=generator) * 0.1
    else:
        init = _image_tensor(init, "init")
        if init.shape[0] != n:
            raise ValueError(f"init must hold one starting image per intercepted feature map: "
                             f"got {init.shape[0]} images for {n} feature maps")
        z_all = torch.logit(_to_float(init).clamp(INIT_MARGIN, 1.0 - INIT_MARGIN))
    out, errors = [], []
    every = max(1, steps // 20) if log_every is None else log_every
    curves: list[np.ndarray] = []
    bar = progress_bar(total=steps * math.ceil(n / batch_size), desc=f"white-box rMLE (split {at})",
                       progress=progress, mininterval=1.0)
    try:
        for p in params:
            p.requires_grad_(False)
        device_model.eval()
        with fixed_threads(num_threads):
            for s in range(0, n, batch_size):
                v0 = intercepted_features[s:s + batch_size].to(device).float()
                d = v0[0].numel()
                z = z_all[s:s + batch_size].clone().to(device).requires_grad_(True)
                optimiser = torch.optim.Adam([z], lr=lr)
                weight = tv_weight if tv_all is None else tv_all[s:s + batch_size].to(device)
                curve = []
                for step in range(1, steps + 1):
                    x = torch.sigmoid(z)
                    feat_err = (device_model(x) - v0).pow(2).flatten(1).sum(1) / d
                    objective = feat_err + weight * total_variation(x, beta=beta)
                    optimiser.zero_grad(set_to_none=True)
                    objective.sum().backward()
                    optimiser.step()
                    if log_every is None:
                        if step % every == 0 or step == steps:
                            curve.append((step, float(objective.detach().sum()),
                                          float(feat_err.detach().sum())))
                    elif (step - 1) % every == 0:
                        curve.append((step - 1, float(objective.detach().sum()),
                                      float(feat_err.detach().sum())))
                    bar.update(1)
                with torch.no_grad():
                    x = torch.sigmoid(z)
                    final = (device_model(x) - v0).pow(2).flatten(1).sum(1) / d
                    if log_every is not None and steps % every == 0:
                        curve.append((steps, float((final + weight * total_variation(
                            x, beta=beta)).sum()), float(final.sum())))
                    errors.append(final.cpu())
                    out.append(x.detach().float().cpu())
                curves.append(np.array(curve))
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        device_model.train(was_training)
        bar.close()
    total = np.sum(curves, axis=0)
    history = [{"step": int(row[0]), "objective": row[1] / n, "feature_error": row[2] / n}
               for row in total]
    return WhiteBoxResult(torch.cat(out), torch.cat(errors).numpy(), history)


#: The grid of TV weights λ that :func:`tune_tv_weight` searches.
TV_GRID: tuple[float, ...] = (1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0)

#: The TV weights of a white-box attack from a *random* start (Chapter 2's exercise on the
#: prior; the chapter's own attack searches λ from the inverse network's start with
#: :func:`coinfer.attack.search_tv_weight`), per split, as chosen by
#: ``tune_tv_weight(split(victim, at=k).device, query_subset(train, 8, seed=123), at=k)`` on the
#: attacker's own training-split images (never on the test images it is evaluated on).
CHAPTER_TV_WEIGHTS: dict[int, float] = {2: 1e-3, 4: 0.3, 6: 1.0}


def tune_tv_weight(
    device_model: nn.Module,
    images,
    *,
    at: int,
    grid: tuple[float, ...] = TV_GRID,
    steps: int = 200,
    lr: float = 0.1,
    seed: int = 0,
    progress: bool = False,
) -> tuple[float, dict[float, float]]:
    """Choose the TV weight λ of the rMLE (:func:`white_box_attack`) on the attacker's own images.

    The white-box attacker computes :math:`f_{\\theta_1}` of images it owns, attacks those features
    with every λ in ``grid`` and keeps the λ of the highest mean PSNR — a validation set that is
    disjoint from the victims' images.

    Returns
    -------
    (best λ, {λ: mean PSNR in dB})
    """
    from ..metrics import psnr

    images = _image_tensor(images, "images")
    if not grid:
        raise ValueError("grid must contain at least one TV weight")
    for w in grid:
        check_positive_float("grid entries", w, allow_zero=True)
    x = _to_float(images)
    params = next(iter(device_model.parameters()), None)
    with torch.no_grad():
        v = device_model(x.to(params.device if params is not None else "cpu")).float().cpu()
    scores = {}
    for w in grid:
        result = white_box_attack(device_model, v, at=at, tv_weight=w, steps=steps, lr=lr,
                                  seed=seed, progress=progress)
        scores[float(w)] = float(np.mean(psnr(x, result.reconstructions)))
    return max(scores, key=scores.get), scores

