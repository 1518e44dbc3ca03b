r"""Local differential privacy for the inference input: clip the device features, then add noise.

Chapter 3 showed that noise on the *parameters* protects the training data and gives the
vehicle's image :math:`x` no guarantee.  To protect :math:`x` itself, the vehicle must randomise
what it sends, as a mechanism on :math:`x`.  The device computes :math:`v = f_{\theta_1}(x)`,
scales it to norm at most :math:`C` (:func:`clip_features`), and adds noise calibrated to the
sensitivity of the *clipped encoder* over **all** pairs of images (:func:`feature_sensitivity`):

* ``norm="l1"``: :math:`\lVert\bar v(x) - \bar v(x')\rVert_1 \le 2C`, Laplace noise of scale
  :math:`2C/\epsilon` on every coordinate — :math:`\epsilon`-DP (Laplace mechanism);
* ``norm="l2"``: :math:`\lVert\bar v(x) - \bar v(x')\rVert_2 \le 2C`, Gaussian noise with the
  analytic calibration :func:`coinfer.privacy.analytic_gaussian_sigma` —
  :math:`(\epsilon,\delta)`-DP.

Because every pair of inputs is covered, this is *local* DP (Kasiviswanathan et al. 2011): it
protects the image against anyone who sees the transmitted features, the edge server included.
:class:`FeatureLDP` is the parameter object, :class:`LocalDPLayer` the device-side module,
:func:`local_dp_device` appends it to a device part, and :func:`evaluate_local_dp` measures the
accuracy and the attacks against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import check_positive_float, check_positive_int
from ..data import ImageSet, to_float
from .gaussian import analytic_gaussian_sigma, check_delta, gaussian_noise
from .mechanisms import check_epsilon, laplace_noise

__all__ = [
    "NORMS",
    "clip_features",
    "feature_norms",
    "feature_sensitivity",
    "FeatureLDP",
    "ldp_noise_scale",
    "LocalDPLayer",
    "local_dp_device",
    "LocalDPEvaluation",
    "local_dp_accuracy",
    "evaluate_local_dp",
]

#: ``"l1"`` (Laplace, pure ε-DP) or ``"l2"`` (Gaussian, (ε, δ)-DP).
NORMS = ("l1", "l2")


def _check_norm(norm) -> str:
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def feature_norms(features: torch.Tensor, *, norm: str) -> torch.Tensor:
    r"""Per-example :math:`\ell_1` or :math:`\ell_2` norm of a batch ``(n, ...)`` of feature maps."""
    norm = _check_norm(norm)
    if not isinstance(features, torch.Tensor) or features.dim() < 2:
        raise ValueError("features must be a tensor of shape (n, ...) with n >= 1")
    flat = features.reshape(features.shape[0], -1)
    return flat.abs().sum(1) if norm == "l1" else flat.norm(dim=1)


def clip_features(features: torch.Tensor, *, clip_bound: float, norm: str) -> torch.Tensor:
    r"""Scale each example's feature map to norm at most :math:`C`: :math:`\bar v = v\min(1, C/\lVert v\rVert)`.

    The first step of the local mechanism (not a silent correction: it is what makes the
    sensitivity finite).  Directions are kept; only maps with norm above :math:`C` change.
    """
    clip_bound = check_positive_float("clip_bound", clip_bound)
    norms = feature_norms(features, norm=norm)
    factor = (clip_bound / norms.clamp_min(1e-30)).clamp(max=1.0)
    return features * factor.view(-1, *([1] * (features.dim() - 1))).to(features.dtype)


def feature_sensitivity(clip_bound: float, *, norm: str) -> float:
    r"""Sensitivity :math:`2C` of the clipped encoder :math:`x \mapsto \bar v(x)` in the chosen norm.

    For any two inputs, :math:`\lVert\bar v(x) - \bar v(x')\rVert \le \lVert\bar v(x)\rVert +
    \lVert\bar v(x')\rVert \le 2C` (triangle inequality), whatever the encoder; the bound is
    attained by two maps of norm :math:`C` pointing in opposite directions, and for ReLU
    features (non-negative) approached by two maps with disjoint supports.
    """
    _check_norm(norm)
    return 2.0 * check_positive_float("clip_bound", clip_bound)


@dataclass(frozen=True)
class FeatureLDP:
    r"""Local DP on the device features: clip to norm ``clip_bound``, add calibrated noise.

    ``norm="l1"``: Laplace noise, :math:`\epsilon`-DP (``delta`` must be 0).  ``norm="l2"``:
    Gaussian noise, :math:`(\epsilon,\delta)`-DP (``delta`` in (0, 1)).
    """

    epsilon: float
    clip_bound: float
    norm: str = "l1"
    delta: float = 0.0

    def __post_init__(self):
        check_epsilon(self.epsilon)
        check_positive_float("clip_bound", self.clip_bound)
        _check_norm(self.norm)
        if self.norm == "l1":
            if self.delta != 0:
                raise ValueError(f"delta must be 0 for norm='l1' (Laplace, pure DP), got "
                                 f"{self.delta}")
        else:
            check_delta(self.delta)

    @property
    def label(self) -> str:
        if self.norm == "l1":
            return f"ℓ1-clip + Laplace, ε={self.epsilon:.3g}"
        return f"ℓ2-clip + Gaussian, ε={self.epsilon:.3g}, δ={self.delta:.0e}"


def ldp_noise_scale(shield: FeatureLDP) -> float:
    r"""Per-coordinate noise: Laplace scale :math:`b = 2C/\epsilon` (``l1``) or Gaussian
    :math:`\sigma` = :func:`analytic_gaussian_sigma` :math:`(\epsilon, \delta, 2C)` (``l2``)."""
    if not isinstance(shield, FeatureLDP):
        raise TypeError(f"shield must be a FeatureLDP, got {type(shield).__name__}")
    sens = feature_sensitivity(shield.clip_bound, norm=shield.norm)
    if shield.norm == "l1":
        return sens / shield.epsilon
    return analytic_gaussian_sigma(epsilon=shield.epsilon, delta=shield.delta, sensitivity=sens)


class LocalDPLayer(nn.Module):
    r"""Device-side module :math:`v \mapsto \bar v + \eta` (:func:`clip_features`, then fresh noise).

    A new noise vector for every image and call, drawn from a ``torch.Generator`` seeded by
    ``seed`` that the layer owns.
    """

    def __init__(self, shield: FeatureLDP, *, seed: int = 0):
        super().__init__()
        if not isinstance(shield, FeatureLDP):
            raise TypeError(f"shield must be a FeatureLDP, got {type(shield).__name__}")
        check_positive_int("seed", seed, allow_zero=True)
        self.shield = shield
        self.scale = ldp_noise_scale(shield)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # noqa: D401
        clipped = clip_features(v, clip_bound=self.shield.clip_bound, norm=self.shield.norm)
        if self.shield.norm == "l1":
            noise = laplace_noise(v.shape, scale=self.scale, generator=self.generator,
                                  dtype=v.dtype, device=v.device)
        else:
            noise = gaussian_noise(v.shape, std=self.scale, generator=self.generator,
                                   dtype=v.dtype, device=v.device)
        return clipped + noise

    def extra_repr(self) -> str:
        return f"{self.shield.label}, scale={self.scale:.4g}"


def local_dp_device(device_model: nn.Module, shield: FeatureLDP, *, seed: int = 0
                    ) -> nn.Sequential:
    """``nn.Sequential(device_model, LocalDPLayer(shield, seed=seed))``: what the vehicle runs."""
    if not isinstance(device_model, nn.Module):
        raise TypeError(f"device_model must be an nn.Module, got {type(device_model).__name__}")
    return nn.Sequential(device_model, LocalDPLayer(shield, seed=seed)).eval()


@dataclass(frozen=True)
class LocalDPEvaluation:
    """One local-DP setting attacked: accuracy, and the metric summaries of the clean-API and
    (optionally) the adaptive attacker (:class:`coinfer.metrics.MetricSummary`)."""

    shield: FeatureLDP
    accuracy: float
    clean_api: object
    adaptive: object | None


@torch.no_grad()
def local_dp_accuracy(
    model: nn.Sequential,
    shield: FeatureLDP,
    *,
    eval_set: ImageSet,
    at: int = 4,
    clean_features: torch.Tensor | None = None,
    seed: int = 0,
) -> float:
    r"""Top-1 accuracy of the edge part of ``model`` on :class:`FeatureLDP`-protected features.

    The device part at split ``at`` encodes ``eval_set`` (or ``clean_features`` are given), a
    :class:`LocalDPLayer` seeded by ``seed`` clips and noises them (fresh noise per image), and
    the unchanged edge part classifies the result.  No attacker is involved (see
    :func:`evaluate_local_dp` for that).
    """
    from ..models import split

    if not isinstance(eval_set, ImageSet):
        raise TypeError(f"eval_set must be an ImageSet, got {type(eval_set).__name__}")
    parts = split(model, at=at)
    if clean_features is None:
        clean_features = torch.cat([parts.device(to_float(eval_set.images[s:s + 500]))
                                    for s in range(0, len(eval_set), 500)])
    if clean_features.shape[0] != len(eval_set):
        raise ValueError(f"clean_features must hold one row per evaluation image, got "
                         f"{clean_features.shape[0]} for {len(eval_set)}")
    layer = LocalDPLayer(shield, seed=seed)
    correct = 0
    for s in range(0, len(eval_set), 500):
        logits = parts.edge(layer(clean_features[s:s + 500]))
        correct += int((logits.argmax(1) == eval_set.labels[s:s + 500]).sum())
    return correct / len(eval_set)


def evaluate_local_dp(
    model: nn.Sequential,
    shield: FeatureLDP,
    *,
    eval_set: ImageSet,
    clean_inverse: nn.Module,
    at: int = 4,
    attacker_images: torch.Tensor | None = None,
    adaptive_config=None,
    clean_features: torch.Tensor | None = None,
    seed: int = 0,
) -> LocalDPEvaluation:
    r"""Deploy :class:`FeatureLDP` after the device part of ``model`` at split ``at`` and attack it.

    The edge classifies the noisy features (accuracy); the clean-API attacker (``clean_inverse``,
    Chapter 2's inverse trained on undefended features) reconstructs from them; with
    ``attacker_images`` and ``adaptive_config`` the adaptive attacker of Chapter 3
    (:func:`coinfer.attack.adaptive_attack`: Algorithm 1 against query access to the *defended*
    device, features standardised by their standard deviation, inverse cached) attacks it.  ``clean_features``
    (the undefended features of ``eval_set``) saves recomputing the device part.
    """
    from ..attack import adaptive_attack, check_adaptive_attacker, reconstruct
    from ..metrics import reconstruction_metrics
    from ..models import split

    if not isinstance(eval_set, ImageSet):
        raise TypeError(f"eval_set must be an ImageSet, got {type(eval_set).__name__}")
    check_adaptive_attacker(attacker_images, adaptive_config)
    parts = split(model, at=at)
    device = local_dp_device(parts.device, shield, seed=seed)
    layer = device[1]
    with torch.no_grad():
        if clean_features is None:
            clean_features = torch.cat([
                parts.device(to_float(eval_set.images[s:s + 500])) for s in
                range(0, len(eval_set), 500)])
        if clean_features.shape[0] != len(eval_set):
            raise ValueError(f"clean_features must hold one row per evaluation image, got "
                             f"{clean_features.shape[0]} for {len(eval_set)}")
        v = torch.cat([layer(clean_features[s:s + 500]) for s in range(0, len(eval_set), 500)])
        logits = torch.cat([parts.edge(v[s:s + 500]) for s in range(0, len(v), 500)])
    acc = float((logits.argmax(1) == eval_set.labels).float().mean())
    originals = to_float(eval_set.images)
    clean = reconstruction_metrics(originals, reconstruct(clean_inverse, v))
    adaptive = None
    if adaptive_config is not None:
        result = adaptive_attack(device, attacker_images, v, at=at, config=adaptive_config)
        adaptive = reconstruction_metrics(originals, result.reconstructions)
    return LocalDPEvaluation(shield, acc, clean, adaptive)
