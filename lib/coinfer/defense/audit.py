r"""The defence audited as a mechanism on the inference input :math:`x` (Sects. 3.3–3.4).

Parameter noise protects (at best) the training data; :func:`audit_inference_input` shows
empirically that it gives the vehicle's inference input no differential privacy: it runs
many deployments (or fresh-noise inferences) on two neighbouring images and turns a
distinguisher's scores into a Clopper–Pearson lower bound on :math:`\epsilon`
(:func:`coinfer.privacy.audit_scores`).  :func:`interior_margin` is the border of the feature
map that the zero padding influences (the ``"constant-image"`` distinguisher).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_positive_int
from ..models import (_check_model, _device_convs, check_images, device_part_parameters,
                      feature_shape, split)
from ..models import check_split_point as _check_at
from ..privacy import (AuditResult, audit_scores, check_calibration, check_epsilon, check_policy,
                       laplace_noise, noise_scale)
from .mechanisms import check_clipped, perturb_parameters

__all__ = [
    "interior_margin",
    "audit_inference_input",
]


def interior_margin(at: int) -> int:
    r"""Feature positions within this distance of the border depend on the zero padding.

    Conv :math:`k` (3×3, padding 1) runs at stride :math:`2^{\lfloor (k-1)/2 \rfloor}` pixels and
    widens the padding-influenced border by that many pixels; the 2×2 pools tile the image
    exactly and add nothing.  Positions at least ``interior_margin(at)`` from every border of
    the split-``at`` feature map see no padding at all, so for a constant image they all compute
    the same value: a convolution is translation-equivariant.
    """
    at = _check_at(at)
    border = sum(2 ** ((k - 1) // 2) for k in range(1, at + 1))
    stride = 2 ** ((at - 1) // 2)
    return -(-border // stride)


def _interior_spread(v: torch.Tensor, margin: int) -> torch.Tensor:
    inner = v[:, :, margin:v.shape[2] - margin, margin:v.shape[3] - margin].double()
    flat = inner.reshape(inner.shape[0], inner.shape[1], -1)
    spread = (flat.max(dim=2).values - flat.min(dim=2).values).amax(dim=1)
    return spread / (flat.abs().amax(dim=(1, 2)) + 1e-300)


def _seed_for(seed: int, which: int, run: int) -> int:
    return int(np.random.SeedSequence([seed, which, run]).generate_state(1, dtype=np.uint64)[0]
               >> 2)


def _deployments_forward(device: nn.Sequential, at: int, scale: float, runs: int,
                         generator: torch.Generator, images: torch.Tensor) -> torch.Tensor:
    """Run ``images`` through ``runs`` independent once-policy deployments at once.

    Deployment ``r`` adds row ``r`` of one ``(runs, d)`` Laplace draw to the device parameters
    (in the order of :func:`device_part_parameters`); the deployments are evaluated together as
    one grouped convolution per layer.  Returns a tensor of shape
    ``(runs, len(images), C, H, W)``.
    """
    convs = _device_convs(device, at)
    named = [(id(conv), k, p.detach()) for conv in convs for k, p in
             (("weight", conv.weight), ("bias", conv.bias)) if p is not None]
    noise = laplace_noise((runs, sum(p.numel() for _, _, p in named)), scale=scale,
                          generator=generator, dtype=named[0][2].dtype)
    noisy, offset = {}, 0
    for key, k, p in named:
        noisy[key, k] = (p.unsqueeze(0) + noise[:, offset:offset + p.numel()]
                         .reshape(runs, *p.shape)).reshape(runs * p.shape[0], *p.shape[1:])
        offset += p.numel()
    h = images.repeat(1, runs, 1, 1)  # (m, runs·C, H, W): run r owns channel block r
    for layer in device:
        if isinstance(layer, nn.Conv2d):
            h = F.conv2d(h, noisy[id(layer), "weight"], noisy.get((id(layer), "bias")),
                         layer.stride, layer.padding, layer.dilation, layer.groups * runs)
        else:
            h = layer(h)
    m, _, hh, ww = h.shape
    return h.reshape(m, runs, -1, hh, ww).transpose(0, 1)


@torch.no_grad()
def audit_inference_input(
    model: nn.Sequential,
    x: torch.Tensor,
    x_prime: torch.Tensor,
    *,
    epsilon: float,
    clip_bound: float,
    at: int = 4,
    policy: str = "once",
    calibration: str = "per-coordinate",
    distinguisher: str = "auto",
    trials: int = 500,
    template_queries: int = 64,
    seed: int = 0,
    alpha: float = 0.05,
    batch_size: int = 250,
) -> AuditResult:
    r"""Audit the model-perturbation defence as a mechanism on the **inference input** :math:`x`.

    The mechanism is what an eavesdropper with the paper's query access sees when the vehicle
    runs the defended device part :math:`f_{\tilde\theta_1}` on :math:`x` (resp. :math:`x'`).
    Each run is independent: under ``policy="once"`` it is a new deployment
    (:func:`perturb_parameters` with its own seed) and the observation of one inference; under
    ``"fresh"`` it is one inference with its own noise draw.  :func:`coinfer.privacy.audit_scores`
    turns the distinguisher's scores into a Clopper–Pearson lower bound on :math:`\epsilon`.

    Distinguishers (``"auto"``: ``"requery"`` for once, ``"template"`` for fresh):

    ``"requery"``
        (once) query the deployed device part on :math:`x` and :math:`x'` through the API and
        score :math:`\|v - f_{\tilde\theta_1}(x)\|^2 - \|v - f_{\tilde\theta_1}(x')\|^2`.
    ``"template"``
        average ``template_queries`` API answers for :math:`x` and for :math:`x'` (fresh noise
        each, from a separate seed) into templates :math:`m, m'` and score
        :math:`\|v - m\|^2 - \|v - m'\|^2`.
    ``"constant-image"``
        for a constant image :math:`x` the interior of every channel of
        :math:`f_{\tilde\theta_1}(x)` is spatially constant *for every* :math:`\tilde\theta_1`
        (translation equivariance); score the relative spread of the interior values.

    Parameters
    ----------
    model
        The clipped victim (never modified).
    x, x_prime
        Two single images, shape ``(3, 32, 32)`` or ``(1, 3, 32, 32)``, floats in [0, 1].
    epsilon, clip_bound, at, policy, calibration
        The defence, as in :func:`perturb_parameters`.
    trials
        Runs per input (half choose the threshold, half evaluate it).
    """
    model, at = _check_model(model), _check_at(at)
    epsilon = check_epsilon(epsilon)
    check_policy(policy)
    check_calibration(calibration)
    trials = check_positive_int("trials", trials)
    if trials < 8:
        raise ValueError(f"trials must be >= 8, got {trials}")
    check_positive_int("template_queries", template_queries)
    check_positive_int("seed", seed, allow_zero=True)
    batch_size = check_positive_int("batch_size", batch_size)
    choices = ("auto", "requery", "template", "constant-image")
    if distinguisher not in choices:
        raise ValueError(f"distinguisher must be one of {choices}, got {distinguisher!r}")
    if distinguisher == "auto":
        distinguisher = "requery" if policy == "once" else "template"
    if distinguisher == "requery" and policy != "once":
        raise ValueError("distinguisher='requery' needs policy='once' (a fixed deployed model)")
    inputs = []
    for name, img in (("x", x), ("x_prime", x_prime)):
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
        img = img.unsqueeze(0) if img.dim() == 3 else img
        check_images(img, name=name)
        if img.shape[0] != 1:
            raise ValueError(f"{name} must be a single image, got a batch of {img.shape[0]}")
        if not bool(torch.isfinite(img).all()):
            raise ValueError(f"{name} must be finite")
        inputs.append(img.float())
    margin = interior_margin(at)
    side = feature_shape(at)[1]
    if distinguisher == "constant-image":
        if 2 * margin >= side:
            raise ValueError(f"split {at} has no padding-free interior; use at <= 5")
        if float(inputs[0].amax() - inputs[0].amin()) != 0.0:
            raise ValueError("distinguisher='constant-image' needs a constant image x")
    check_clipped(model, at=at, clip_bound=clip_bound)
    d = sum(p.numel() for p in device_part_parameters(model, at=at))
    scale = noise_scale(epsilon=epsilon, clip_bound=clip_bound, num_parameters=d,
                        calibration=calibration)
    base = split(copy.deepcopy(model).eval(), at=at).device

    def score(v: torch.Tensor, refs: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if distinguisher == "constant-image":
            return _interior_spread(v, margin)
        v = v.double().reshape(v.shape[0], -1)
        r0, r1 = (r.double().reshape(r.shape[0], -1) for r in refs)
        return ((v - r0) ** 2).sum(1) - ((v - r1) ** 2).sum(1)

    scores = [[], []]
    if policy == "once":
        both = torch.cat(inputs)
        for which in (0, 1):
            for start in range(0, trials, 25):
                runs = min(trials, start + 25) - start
                gen = torch.Generator().manual_seed(_seed_for(seed, which, start))
                out = _deployments_forward(base, at, scale, runs, gen, both)  # (runs, 2, C, H, W)
                # the vehicle's inference and the attacker's API queries run through the same
                # deployed (deterministic) model: v is the answer for x_which
                s = score(out[:, which], (out[:, 0], out[:, 1]))
                scores[which].extend(s.tolist())
    else:
        fresh = split(perturb_parameters(model, epsilon=epsilon, clip_bound=clip_bound, at=at,
                                         policy="fresh", calibration=calibration,
                                         seed=_seed_for(seed, 2, 0)), at=at).device
        refs = None
        if distinguisher == "template":
            refs = tuple(fresh(inp.expand(template_queries, -1, -1, -1)).mean(0, keepdim=True)
                         for inp in inputs)
        for which in (0, 1):
            fresh[0].source.generator.manual_seed(_seed_for(seed, which, 1))
            done = 0
            while done < trials:
                n = min(batch_size, trials - done)
                v = fresh(inputs[which].expand(n, -1, -1, -1).contiguous())
                scores[which].extend(score(v, refs).tolist())
                done += n
    result = audit_scores(np.array(scores[0]), np.array(scores[1]), alpha=alpha)
    result.notes.update(policy=policy, calibration=calibration, epsilon=epsilon, at=at,
                        distinguisher=distinguisher, scale=scale, num_parameters=d)
    return result
