r"""Approximate differential privacy and the Gaussian mechanism (Sect. 3b.1–3b.2 of the book).

A mechanism :math:`M` is :math:`(\epsilon, \delta)`-DP when
:math:`\Pr[M(D) \in S] \le e^\epsilon \Pr[M(D') \in S] + \delta` for all neighbours
:math:`D \sim D'` and all events :math:`S` (Dwork & Roth 2014, Def. 2.4).  Its *privacy profile*
:math:`\delta_M(\epsilon)` is the smallest such :math:`\delta` for each :math:`\epsilon`.

* the :math:`\ell_2` sensitivity of clipped parameters: :func:`l2_sensitivity` (:math:`2G\sqrt d`
  for :math:`\theta \in [-G, G]^d`);
* Gaussian noise and the Gaussian mechanism: :func:`gaussian_noise`, :func:`gaussian_mechanism`;
* calibrations: the classical :math:`\sigma = \Delta_2\sqrt{2\ln(1.25/\delta)}/\epsilon`
  (:func:`classical_gaussian_sigma`, Dwork & Roth 2014, Thm A.1, valid for :math:`\epsilon < 1`)
  and the exact *analytic Gaussian mechanism* (:func:`analytic_gaussian_sigma`, Balle & Wang
  2018, Thm 8 and Alg. 1), both from the exact profile :func:`gaussian_delta` and its inverse
  :func:`gaussian_epsilon`;
* the Laplace mechanism's profile :func:`laplace_delta`, to compare the two;
* :func:`scalar_gaussian`, a reference mechanism for :func:`coinfer.privacy.audit_mechanism`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy import optimize, special

from ..config import check_positive_float, check_positive_int
from .mechanisms import check_epsilon

__all__ = [
    "check_delta",
    "l2_sensitivity",
    "gaussian_noise",
    "gaussian_mechanism",
    "classical_gaussian_sigma",
    "gaussian_delta",
    "gaussian_epsilon",
    "analytic_gaussian_sigma",
    "laplace_delta",
    "scalar_gaussian",
]


def check_delta(delta, *, name: str = "delta") -> float:
    """A failure probability :math:`\\delta \\in (0, 1)` (raises ``TypeError``/``ValueError`` naming it)."""
    delta = check_positive_float(name, delta)
    if not delta < 1:
        raise ValueError(f"{name} must be in (0, 1), got {delta}")
    return delta


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def l2_sensitivity(num_parameters: int, clip_bound: float) -> float:
    r"""The :math:`\ell_2` sensitivity :math:`2G\sqrt d` of a vector :math:`\theta \in [-G, G]^d`.

    :math:`\sup_{\theta,\theta' \in [-G,G]^d} \lVert\theta - \theta'\rVert_2 = \sqrt{d (2G)^2}
    = 2G\sqrt d`, attained at :math:`\pm G\mathbf 1`.  Compare the :math:`\ell_1` sensitivity
    :math:`2Gd` (:func:`coinfer.privacy.l1_sensitivity`): the Gaussian mechanism pays
    :math:`\sqrt d` where the Laplace mechanism pays :math:`d`.
    """
    d = check_positive_int("num_parameters", num_parameters)
    return 2.0 * check_positive_float("clip_bound", clip_bound) * math.sqrt(d)


def gaussian_noise(
    shape: Sequence[int] | torch.Size,
    *,
    std: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""I.i.d. :math:`\mathcal N(0, \sigma^2)` noise drawn on the CPU from ``generator``."""
    std = check_positive_float("std", std)
    _check_generator(generator)
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float64).mul_(std)
    return noise.to(device=device, dtype=dtype)


def gaussian_mechanism(
    value: torch.Tensor | np.ndarray | float,
    *,
    sigma: float,
    generator: torch.Generator,
) -> torch.Tensor:
    r"""The Gaussian mechanism :math:`M(D) = f(D) + \mathcal N(0, \sigma^2 I)`.

    With :math:`\Delta_2 f = \max_{D\sim D'} \lVert f(D) - f(D')\rVert_2` it is
    :math:`(\epsilon, \delta)`-DP for every :math:`\delta \ge` :func:`gaussian_delta`
    ``(sigma, epsilon=ε, sensitivity=Δ₂)``; choose ``sigma`` with
    :func:`analytic_gaussian_sigma` (exact) or :func:`classical_gaussian_sigma`.  It is not
    :math:`\epsilon`-DP for any finite :math:`\epsilon` (:func:`gaussian_delta` is positive for
    every :math:`\epsilon`).  Returns a new float tensor.
    """
    value = torch.as_tensor(value)
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    if not bool(torch.isfinite(value).all()):
        raise ValueError("value must be finite (got NaN or inf entries)")
    return value + gaussian_noise(value.shape, std=sigma, generator=generator, dtype=value.dtype,
                                  device=value.device)


def classical_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    r"""The classical calibration :math:`\sigma = \Delta_2 \sqrt{2\ln(1.25/\delta)}/\epsilon`.

    Dwork & Roth (2014), Theorem A.1 (stated as Thm 3.22): for :math:`\epsilon \in (0, 1)` and
    :math:`c^2 > 2\ln(1.25/\delta)`, the Gaussian mechanism with :math:`\sigma \ge c\Delta_2/\epsilon`
    is :math:`(\epsilon,\delta)`-DP.  The proof needs :math:`\epsilon < 1`, so larger budgets raise
    ``ValueError`` (use :func:`analytic_gaussian_sigma`, valid for every :math:`\epsilon > 0`).
    """
    epsilon = check_epsilon(epsilon)
    if not epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1) for the classical Gaussian calibration, got "
                         f"{epsilon}; use analytic_gaussian_sigma for larger budgets")
    delta = check_delta(delta)
    sensitivity = check_positive_float("sensitivity", sensitivity)
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def _log_ndtr_diff(a: float, b: float, c: float) -> float:
    """log(Φ(a) − e^c Φ(b)) for Φ(a) > e^c Φ(b), computed in log space (−inf when ≤ 0)."""
    la, lb = special.log_ndtr(a), c + special.log_ndtr(b)
    if not la > lb:
        return -math.inf
    return la + math.log1p(-math.exp(lb - la))


def gaussian_delta(sigma: float, *, epsilon: float, sensitivity: float = 1.0) -> float:
    r"""The exact privacy profile of the Gaussian mechanism (Balle & Wang 2018, Theorem 8).

    With :math:`\mu = \Delta_2/\sigma`, the smallest :math:`\delta` for which
    :math:`x \mapsto x + \mathcal N(0, \sigma^2 I)` is :math:`(\epsilon, \delta)`-DP over inputs at
    :math:`\ell_2` distance :math:`\le \Delta_2` is

    .. math:: \delta(\epsilon) = \Phi\Big(\frac{\mu}{2} - \frac{\epsilon}{\mu}\Big)
              - e^{\epsilon}\,\Phi\Big(-\frac{\mu}{2} - \frac{\epsilon}{\mu}\Big) \;>\; 0 .

    It is positive for every finite :math:`\epsilon`: the Gaussian mechanism is never pure DP.
    ``epsilon = 0`` is allowed (then :math:`\delta` is the total-variation distance).
    """
    sigma = check_positive_float("sigma", sigma)
    epsilon = check_positive_float("epsilon", epsilon, allow_zero=True)
    mu = check_positive_float("sensitivity", sensitivity) / sigma
    return math.exp(_log_ndtr_diff(mu / 2 - epsilon / mu, -mu / 2 - epsilon / mu, epsilon))


def gaussian_epsilon(sigma: float, *, delta: float, sensitivity: float = 1.0) -> float:
    r"""The smallest :math:`\epsilon \ge 0` with :func:`gaussian_delta` :math:`\le \delta` (root finding)."""
    delta = check_delta(delta)
    sigma = check_positive_float("sigma", sigma)
    sensitivity = check_positive_float("sensitivity", sensitivity)
    f = lambda e: gaussian_delta(sigma, epsilon=e, sensitivity=sensitivity) - delta  # noqa: E731
    if f(0.0) <= 0:
        return 0.0
    hi = 1.0
    while f(hi) > 0:
        hi *= 2.0
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-12, rtol=1e-12))


def analytic_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    r"""The smallest :math:`\sigma` making the Gaussian mechanism :math:`(\epsilon,\delta)`-DP.

    The *analytic Gaussian mechanism* of Balle & Wang (2018), Theorem 8 / Algorithm 1: solve
    :func:`gaussian_delta` :math:`(\sigma) = \delta` for :math:`\sigma` (the profile decreases
    strictly in :math:`\sigma`) with ``scipy.optimize.brentq``.  Valid for every
    :math:`\epsilon > 0`, and never larger than :func:`classical_gaussian_sigma`.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    sensitivity = check_positive_float("sensitivity", sensitivity)
    f = lambda s: gaussian_delta(s, epsilon=epsilon, sensitivity=sensitivity) - delta  # noqa: E731
    lo, hi = sensitivity, sensitivity
    while f(lo) <= 0:
        lo /= 2.0
    while f(hi) > 0:
        hi *= 2.0
    return float(optimize.brentq(f, lo, hi, xtol=1e-14 * sensitivity, rtol=1e-12))


def laplace_delta(scale: float, *, epsilon: float, sensitivity: float = 1.0) -> float:
    r"""The exact privacy profile of the scalar Laplace mechanism :math:`x + \mathrm{Lap}(0, b)`.

    With :math:`\epsilon_0 = \Delta/b` (inputs :math:`|x - x'| \le \Delta`):
    :math:`\delta(\epsilon) = 1 - e^{(\epsilon - \epsilon_0)/2}` for :math:`\epsilon < \epsilon_0`
    and :math:`0` for :math:`\epsilon \ge \epsilon_0` — the mechanism is :math:`\epsilon_0`-DP
    (the Laplace-mechanism theorem of Chapter 3).  Derivation: for :math:`x = 0, x' = \Delta` the
    privacy loss :math:`(|z-\Delta| - |z|)/b` exceeds :math:`\epsilon` exactly on
    :math:`\{z < t\}`, :math:`t = (\Delta - b\epsilon)/2`, and
    :math:`\Pr[Z < t] - e^\epsilon \Pr[Z + \Delta < t] = 1 - e^{(\epsilon-\epsilon_0)/2}`.
    """
    scale = check_positive_float("scale", scale)
    epsilon = check_positive_float("epsilon", epsilon, allow_zero=True)
    eps0 = check_positive_float("sensitivity", sensitivity) / scale
    return 0.0 if epsilon >= eps0 else -math.expm1((epsilon - eps0) / 2.0)


def scalar_gaussian(sigma: float):
    r"""The scalar Gaussian mechanism :math:`x \mapsto x + \mathcal N(0, \sigma^2)`, in the form
    :func:`coinfer.privacy.audit_mechanism` runs (``mechanism(x, n, generator)``)."""
    sigma = check_positive_float("sigma", sigma)

    def mechanism(value, n, generator):
        return float(value) + gaussian_noise((n,), std=sigma, generator=generator,
                                             dtype=torch.float64)

    return mechanism
