r"""The Laplace mechanism and the calibration of the parameter perturbation (Sects. 3.1–3.3).

* validation of the privacy settings: :func:`check_epsilon`, :data:`CALIBRATIONS` /
  :func:`check_calibration`, :data:`POLICIES` / :func:`check_policy`;
* the Laplace mechanism (Dwork, McSherry, Nissim & Smith 2006; Dwork & Roth 2014, Thm 3.6):
  :func:`laplace_noise` and :func:`laplace_mechanism`;
* the sensitivity of the clipped device parameters and the Laplace scale of the paper's
  Algorithm 2 / Theorem 1 (Wu et al. 2021): :func:`per_coordinate_sensitivity`,
  :func:`l1_sensitivity`, :func:`noise_scale`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..config import check_positive_float, check_positive_int

__all__ = [
    "CALIBRATIONS",
    "POLICIES",
    "check_epsilon",
    "check_calibration",
    "check_policy",
    "laplace_noise",
    "laplace_mechanism",
    "per_coordinate_sensitivity",
    "l1_sensitivity",
    "noise_scale",
]

#: ``"per-coordinate"``: the paper's scale 2G/ε (ε-DP for one coordinate only);
#: ``"whole-vector"``: the scale 2G·d/ε that makes the d-dimensional release ε-DP.
CALIBRATIONS = ("per-coordinate", "whole-vector")
#: ``"once"``: noise drawn once at deployment; ``"fresh"``: new noise at every inference.
POLICIES = ("once", "fresh")


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

def check_epsilon(epsilon, *, name: str = "epsilon") -> float:
    """A privacy budget: a finite real number > 0 (raises ``TypeError``/``ValueError`` naming it)."""
    return check_positive_float(name, epsilon)


def check_calibration(calibration) -> str:
    """One of :data:`CALIBRATIONS`."""
    if not isinstance(calibration, str) or calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    return calibration


def check_policy(policy) -> str:
    """One of :data:`POLICIES`."""
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    return policy


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


# ----------------------------------------------------------------------------------------------
# the Laplace mechanism
# ----------------------------------------------------------------------------------------------

# |u - 1/2| is clamped below 1/2 by one float32 ulp so that log1p never sees -1: the tails are cut
# at b·ln(2^24) ≈ 16.6 b, a mass of 6·10⁻⁸ (floating-point Laplace samplers are only
# approximately DP in any case, Mironov 2012).
_HALF_OPEN = 0.5 - 2.0 ** -25


def laplace_noise(
    shape: Sequence[int] | torch.Size,
    *,
    scale: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""I.i.d. :math:`\mathrm{Lap}(0, b)` noise of the given shape, density :math:`e^{-|y|/b}/(2b)`.

    Inverse-CDF sampling from one uniform per coordinate: with :math:`u \sim U(-\tfrac12,\tfrac12)`,
    :math:`y = -b\,\mathrm{sgn}(u)\log(1 - 2|u|)`.  The uniforms come from ``generator`` (on the
    CPU), so a seeded generator gives the same noise on every device.

    Parameters
    ----------
    shape
        Shape of the noise tensor.
    scale
        :math:`b > 0` (finite).  The standard deviation is :math:`\sqrt2\,b`.
    generator
        A CPU ``torch.Generator``; it is advanced by ``prod(shape)`` draws.
    """
    scale = check_positive_float("scale", scale)
    _check_generator(generator)
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float32).sub_(0.5)
    magnitude = u.abs().clamp_(max=_HALF_OPEN).mul_(-2.0).log1p_().mul_(-scale)
    noise = magnitude.mul_(torch.sign(u))
    return noise.to(device=device, dtype=dtype) if (device is not None or dtype != torch.float32) \
        else noise


def laplace_mechanism(
    value: torch.Tensor | np.ndarray | float,
    *,
    epsilon: float,
    sensitivity: float,
    generator: torch.Generator,
) -> torch.Tensor:
    r"""The Laplace mechanism :math:`M(D) = f(D) + (Y_1, \dots, Y_k)`, :math:`Y_i \sim \mathrm{Lap}(\Delta_1 f/\epsilon)`.

    Theorem 3.6 of Dwork & Roth (2014) (the theorem "Laplace mechanism" of Chapter 3 of the book):
    when ``sensitivity`` is the :math:`\ell_1` sensitivity
    :math:`\Delta_1 f = \max_{D \sim D'} \|f(D) - f(D')\|_1` of the *whole* output
    ``value = f(D)``, the release is :math:`\epsilon`-DP.

    Returns a new float tensor (``value`` is not modified).
    """
    epsilon = check_epsilon(epsilon)
    sensitivity = check_positive_float("sensitivity", sensitivity)
    value = torch.as_tensor(value)
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    if not bool(torch.isfinite(value).all()):
        raise ValueError("value must be finite (got NaN or inf entries)")
    noise = laplace_noise(value.shape, scale=sensitivity / epsilon, generator=generator,
                          dtype=value.dtype, device=value.device)
    return value + noise


# ----------------------------------------------------------------------------------------------
# sensitivity and calibration of the parameter perturbation
# ----------------------------------------------------------------------------------------------

def per_coordinate_sensitivity(clip_bound: float) -> float:
    r""":math:`\max |\theta_i - \theta'_i| = 2G` for coordinates clipped to :math:`[-G, G]`.

    This is the quantity the paper's sensitivity display (Sect. 3.2 of Wu et al. 2021) bounds;
    it is the :math:`\ell_\infty` (one-coordinate) sensitivity, not the :math:`\ell_1` one.
    """
    return 2.0 * check_positive_float("clip_bound", clip_bound)


def l1_sensitivity(num_parameters: int, clip_bound: float) -> float:
    r"""The :math:`\ell_1` sensitivity :math:`2Gd` of a vector :math:`\theta \in [-G, G]^d`.

    :math:`\sup_{\theta, \theta' \in [-G,G]^d} \|\theta - \theta'\|_1 = 2Gd`, attained at
    :math:`\theta = G\mathbf 1`, :math:`\theta' = -G\mathbf 1`.  Without further knowledge of the
    training algorithm this is the sensitivity of its clipped output to *any* change of the
    training set (Chaudhuri, Monteleoni & Sarwate 2011 call this output perturbation).
    """
    d = check_positive_int("num_parameters", num_parameters)
    return 2.0 * check_positive_float("clip_bound", clip_bound) * d


def noise_scale(
    *, epsilon: float, clip_bound: float, num_parameters: int, calibration: str = "per-coordinate"
) -> float:
    r"""Laplace scale :math:`b` added to each of the :math:`d` clipped parameters.

    ``"per-coordinate"`` — :math:`b = 2G/\epsilon`, the paper's Algorithm 2 / Theorem 1.
    ``"whole-vector"`` — :math:`b = 2Gd/\epsilon`, the Laplace mechanism for the
    :math:`\ell_1` sensitivity :math:`2Gd` of the whole vector (Dwork & Roth 2014, Thm 3.6).
    """
    epsilon = check_epsilon(epsilon)
    check_calibration(calibration)
    if calibration == "per-coordinate":
        return per_coordinate_sensitivity(clip_bound) / epsilon
    return l1_sensitivity(num_parameters, clip_bound) / epsilon
