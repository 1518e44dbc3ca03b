r"""The curves of Fig. 5 (Sect. 3.6): the paper's :math:`A(\epsilon) = a\log(b\epsilon + 1)`,
capped at the clean accuracy, and a saturating curve logistic in :math:`\log\epsilon`.

:func:`fit_accuracy_curve` fits the curve of Sect. 4.1 of Wu et al. (2021) with
``scipy.optimize.curve_fit``; it grows without bound, so :func:`capped_accuracy_curve` caps it at
the clean accuracy and :func:`fit_logistic_curve` fits :func:`logistic_accuracy_curve` beside it;
:func:`r_squared` scores both.  :mod:`coinfer.defense.fit` measures the sweep they are fitted to.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import curve_fit

__all__ = [
    "accuracy_curve",
    "capped_accuracy_curve",
    "logistic_accuracy_curve",
    "fit_accuracy_curve",
    "fit_logistic_curve",
    "r_squared",
]


def _sweep_points(epsilons, accuracies, *, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ε, accuracy)`` as arrays, accuracy with one row per ε (a column per draw), checked."""
    eps = np.asarray(epsilons, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    if acc.ndim == 1:
        acc = acc[:, None]
    if eps.ndim != 1 or acc.shape[0] != eps.size or eps.size < minimum:
        raise ValueError(f"epsilons (shape {eps.shape}) and accuracies (shape {acc.shape}) must "
                         f"have one row per epsilon, at least {minimum}")
    if not (np.isfinite(eps).all() and (eps > 0).all() and np.isfinite(acc).all()):
        raise ValueError("epsilons must be finite and > 0 and accuracies finite")
    return eps, acc


def accuracy_curve(epsilon, a: float, b: float) -> np.ndarray:
    r""":math:`A(\epsilon) = a\log(b\epsilon + 1)` (natural log), the paper's Eq. for Fig. 5."""
    return a * np.log1p(b * np.asarray(epsilon, dtype=float))


def fit_accuracy_curve(epsilons, accuracies) -> tuple[float, float, np.ndarray]:
    r"""Least-squares fit of :math:`A(\epsilon) = a\log(b\epsilon+1)` with ``scipy.optimize.curve_fit``.

    ``accuracies`` may be one value per :math:`\epsilon` or a matrix with one row per
    :math:`\epsilon` (one column per noise draw; every draw is a data point).  The start value
    comes from a grid over :math:`b` with the optimal :math:`a` in closed form
    (:math:`a = \sum y\,g / \sum g^2`, :math:`g = \log(b\epsilon+1)`), then ``curve_fit`` refines
    :math:`(a, b)` within :math:`a, b > 0`.

    Returns
    -------
    a, b, covariance
        The fitted parameters and their estimated covariance matrix.
    """
    eps, acc = _sweep_points(epsilons, accuracies, minimum=2)
    x = np.repeat(eps, acc.shape[1])
    y = acc.reshape(-1)
    best = (math.inf, 1.0, 1.0)
    for b in np.geomspace(1e-6, 1e3, 400) / eps.max() * 10:
        g = np.log1p(b * x)
        a = float(y @ g / (g @ g))
        sse = float(((a * g - y) ** 2).sum())
        if a > 0 and sse < best[0]:
            best = (sse, a, float(b))
    _, a0, b0 = best
    with np.errstate(divide="ignore", invalid="ignore"):
        (a, b), cov = curve_fit(lambda e, a, b: a * np.log1p(b * e), x, y, p0=(a0, b0),
                                bounds=([1e-12, 1e-12], [np.inf, np.inf]), max_nfev=10_000)
    return float(a), float(b), np.asarray(cov)


def capped_accuracy_curve(epsilon, a: float, b: float, *, clean_accuracy: float) -> np.ndarray:
    r""":math:`\min\{a\log(b\epsilon+1),\ A_{\rm clean}\}`: the paper's curve, capped.

    The paper's :math:`A(\epsilon) = a\log(b\epsilon + 1)` grows without bound; no defence can
    make the classifier more accurate than the undefended one, so the curve the game may use is
    capped at ``clean_accuracy``.
    """
    clean = float(clean_accuracy)
    if not (math.isfinite(clean) and 0 <= clean <= 1):
        raise ValueError(f"clean_accuracy must be in [0, 1], got {clean_accuracy!r}")
    return np.minimum(accuracy_curve(epsilon, a, b), clean)


def logistic_accuracy_curve(epsilon, *, a_min: float, a_clean: float, k: float,
                            eps0: float) -> np.ndarray:
    r"""The saturating accuracy curve, a logistic in :math:`\log\epsilon`:

    .. math:: A(\epsilon) = A_{\min} + \frac{A_{\rm clean} - A_{\min}}
              {1 + \exp\big(-k(\log\epsilon - \log\epsilon_0)\big)}.

    A logistic in :math:`\log\epsilon`: :math:`A_{\min}` for :math:`\epsilon \to 0`, the clean
    accuracy :math:`A_{\rm clean}` for :math:`\epsilon \to \infty`, midpoint at :math:`\epsilon_0`,
    steepness :math:`k` per unit of :math:`\log\epsilon` (natural log).  The book fits it beside the
    paper's :math:`a\log(b\epsilon+1)` (Sect. 3.6); with :math:`A_{\min} \le A_{\rm clean}` (as
    :func:`fit_logistic_curve` ensures) it never exceeds :math:`A_{\rm clean}`.
    """
    eps = np.asarray(epsilon, dtype=float)
    if np.any(~np.isfinite(eps)) or np.any(eps <= 0):
        raise ValueError("epsilon must be finite and > 0")
    if not (k > 0 and eps0 > 0):
        raise ValueError(f"k and eps0 must be > 0, got k={k!r}, eps0={eps0!r}")
    z = np.clip(-k * (np.log(eps) - math.log(eps0)), -700.0, 700.0)  # exp overflow guard only
    return a_min + (a_clean - a_min) / (1.0 + np.exp(z))


def r_squared(y, y_hat) -> float:
    r"""Coefficient of determination :math:`R^2 = 1 - \sum (y - \hat y)^2 / \sum (y - \bar y)^2`.

    Can be negative (a fit worse than the constant :math:`\bar y`).
    """
    y = np.asarray(y, dtype=float)
    y_hat = np.broadcast_to(np.asarray(y_hat, dtype=float), y.shape).reshape(-1)
    y = y.reshape(-1)
    if y.size < 2:
        raise ValueError(f"y must hold at least 2 values, got {y.size}")
    sst = float(((y - y.mean()) ** 2).sum())
    if sst == 0:
        raise ValueError("y is constant: R² is undefined")
    return 1.0 - float(((y - y_hat) ** 2).sum()) / sst


def fit_logistic_curve(epsilons, accuracies, *, clean_accuracy: float
                       ) -> tuple[float, float, float, np.ndarray]:
    r"""Least-squares fit of :func:`logistic_accuracy_curve` with :math:`A_{\rm clean}` fixed.

    ``scipy.optimize.curve_fit`` fits :math:`(A_{\min}, k, \log\epsilon_0)` to every point (one
    column of ``accuracies`` per noise draw), within :math:`0 \le A_{\min} \le A_{\rm clean}`,
    :math:`k > 0`, and :math:`\log\epsilon_0` within 5 of the measured range.  The start point is
    the lowest mean accuracy, :math:`k = 2`, and the budget where the mean first reaches half-way.

    Returns
    -------
    a_min, k, eps0, covariance
        The fitted parameters and the covariance of :math:`(A_{\min}, k, \log\epsilon_0)`.
    """
    eps, acc = _sweep_points(epsilons, accuracies, minimum=3)
    clean = float(clean_accuracy)
    if not (math.isfinite(clean) and 0 < clean <= 1):
        raise ValueError(f"clean_accuracy must be in (0, 1], got {clean_accuracy!r}")
    x = np.log(np.repeat(eps, acc.shape[1]))
    y = acc.reshape(-1)
    mean = acc.mean(axis=1)
    lo = float(min(mean.min(), clean))
    half = lo + 0.5 * (clean - lo)
    t0 = float(np.log(eps[np.argmax(mean >= half)])) if (mean >= half).any() else float(x.max())
    lx0, lx1 = float(np.log(eps.min())) - 5, float(np.log(eps.max())) + 5

    def f(t, a_min, k, log_e0):
        return a_min + (clean - a_min) / (1.0 + np.exp(np.clip(-k * (t - log_e0), -700, 700)))

    p0 = (min(max(lo, 0.0), clean * 0.999), 2.0, min(max(t0, lx0), lx1))
    (a_min, k, log_e0), cov = curve_fit(f, x, y, p0=p0,
                                        bounds=([0.0, 1e-6, lx0], [clean, 1e3, lx1]),
                                        max_nfev=20_000)
    return float(a_min), float(k), float(math.exp(log_e0)), np.asarray(cov)
