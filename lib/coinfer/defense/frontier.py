r"""The privacy–utility frontier (Sect. 3.7): is parameter noise better than output noise?

The strength grids of the three shields (:data:`FRONTIER_EPSILONS`, :data:`FRONTIER_SCALES`,
:data:`FRONTIER_RATES`), the accuracies at which they are compared (:data:`FRONTIER_TARGETS`),
and the interpolation along one shield's sweep: :func:`interpolate_at_accuracy` (attack metrics
at a given accuracy) and :func:`strength_for_accuracy` (the strength that reaches it).  The
sweeps themselves are :func:`coinfer.defense.shield_sweep`.
"""

from __future__ import annotations

import numpy as np

from ..config import check_positive_float

__all__ = [
    "FRONTIER_EPSILONS",
    "frontier_epsilons",
    "FRONTIER_SCALES",
    "FRONTIER_RATES",
    "FRONTIER_TARGETS",
    "interpolate_at_accuracy",
    "strength_for_accuracy",
]

#: Strength grids of the privacy–utility frontier (Sect. 3.7): parameter-noise budgets ε for a
#: clip bound G = 1 (noise scales 2G/ε from 0.167 down to 0.0067; :func:`frontier_epsilons` gives
#: the grid for another G), output-Laplace scales, dropout rates.
FRONTIER_EPSILONS: tuple[float, ...] = (12.0, 20.0, 30.0, 45.0, 80.0, 300.0)
FRONTIER_SCALES: tuple[float, ...] = (0.2, 0.4, 0.7, 1.0, 1.6, 3.0)
FRONTIER_RATES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.98, 0.995)
#: Accuracies (as fractions of the undefended accuracy) at which the shields are compared.
FRONTIER_TARGETS: tuple[float, ...] = (0.9, 0.75, 0.5)


def frontier_epsilons(clip_bound: float) -> tuple[float, ...]:
    r"""The parameter-noise budgets of the frontier for clip bound :math:`G`: :math:`G\cdot`
    :data:`FRONTIER_EPSILONS`.

    The noise scale :math:`2G/\epsilon` depends on :math:`\epsilon/G` only, so this grid deploys
    the same noise scales, :math:`2/\epsilon_j` for :math:`\epsilon_j \in`
    :data:`FRONTIER_EPSILONS`, whatever :math:`G` is.
    """
    G = check_positive_float("clip_bound", clip_bound)
    return tuple(float(f"{e * G:.6g}") for e in FRONTIER_EPSILONS)


def interpolate_at_accuracy(accuracies, values, targets) -> np.ndarray:
    """Linear interpolation of ``values`` at the ``targets`` accuracies along one shield's sweep.

    ``nan`` where a target lies outside the accuracies the sweep reached (no extrapolation).
    """
    acc = np.asarray(accuracies, dtype=float)
    val = np.asarray(values, dtype=float)
    targets = np.atleast_1d(np.asarray(targets, dtype=float))
    if acc.shape != val.shape or acc.ndim != 1 or acc.size < 2:
        raise ValueError("accuracies and values must be 1-D of the same length >= 2")
    order = np.argsort(acc, kind="stable")
    acc, val = acc[order], val[order]
    out = np.interp(targets, acc, val)
    out[(targets < acc[0]) | (targets > acc[-1])] = np.nan
    return out


def strength_for_accuracy(strengths, accuracies, target: float, *, log: bool = True) -> float:
    """The shield strength at which a (monotone) sweep reaches ``target`` accuracy, interpolated.

    Interpolates ``log(strength)`` (or the strength with ``log=False``) linearly in accuracy
    between the two sweep points that bracket ``target``; raises ``ValueError`` when the sweep
    does not bracket it.
    """
    s = np.asarray(strengths, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    if s.shape != acc.shape or s.ndim != 1 or s.size < 2:
        raise ValueError("strengths and accuracies must be 1-D of the same length >= 2")
    x = np.log(s) if log else s
    for i in range(s.size - 1):
        lo, hi = sorted((acc[i], acc[i + 1]))
        if lo <= target <= hi and acc[i] != acc[i + 1]:
            t = (target - acc[i]) / (acc[i + 1] - acc[i])
            value = x[i] + t * (x[i + 1] - x[i])
            return float(np.exp(value) if log else value)
    raise ValueError(f"target accuracy {target} is not bracketed by the sweep "
                     f"({acc.min():.3f} … {acc.max():.3f})")
