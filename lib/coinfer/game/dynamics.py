r"""Best-response dynamics of the vehicles' subgame (book Sect. 4.3, the paper's Sect. 5.1).

:func:`best_response_dynamics` plays Eq. (15) round after round, simultaneously (Jacobi,
optionally damped) or one vehicle after the other (Gauss–Seidel), and records the residuals and
the distance to the exact NE in a :class:`DynamicsResult`; undamped Jacobi rounds can cycle for
ever once Theorem 4's condition fails.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..config import check_positive_float, check_positive_int
from .market import Market, _check_eps, _check_market, _check_reward

__all__ = [
    "best_response_dynamics",
    "DynamicsResult",
]


# --------------------------------------------------------------------------------------------
# Best-response dynamics
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DynamicsResult:
    """Outcome of :func:`best_response_dynamics`.

    Attributes
    ----------
    eps
        The last profile.
    iterations
        Rounds played (a round updates every vehicle once).
    converged
        Whether the residual fell to ``tol`` × the largest budget.
    changes
        ``changes[t]`` = :math:`\\max_i |B_i(\\epsilon^t) - \\epsilon_i^t|` in round t (the undamped residual; for the
        sequential variant each reply sees the budgets already updated in that round).
    distances
        :math:`\\max_i |\\epsilon_i^t - \\epsilon_i^*|` after round t, when the exact NE was supplied (else empty).
    history
        The profiles after every round when ``record=True`` (else ``None``).
    seconds
        Wall-clock time of the rounds.
    """

    eps: np.ndarray
    iterations: int
    converged: bool
    changes: np.ndarray
    distances: np.ndarray
    history: np.ndarray | None
    seconds: float

    def period(self, max_period: int = 50, rtol: float = 1e-6) -> int | None:
        """Smallest p <= ``max_period`` with the last profile equal to the one p rounds earlier
        (a cycle of the dynamics), or ``None``; needs ``record=True``."""
        if self.history is None:
            raise ValueError("period needs the history: run with record=True")
        max_period = check_positive_int("max_period", max_period)
        h = self.history
        for p in range(1, min(max_period, len(h) - 1) + 1):
            if np.allclose(h[-1], h[-1 - p], rtol=rtol, atol=0.0):
                return p
        return None


def best_response_dynamics(
    market: Market,
    reward: float,
    *,
    initial=None,
    damping: float = 1.0,
    sequential: bool = False,
    tol: float = 1e-9,
    max_iter: int = 10_000,
    target=None,
    record: bool = False,
) -> DynamicsResult:
    r"""The best-response dynamics the paper suggests for the subgame (Sect. 5.1, after [29]).

    Each round every vehicle replies with Eq. (15) (:func:`best_response`):

    * ``sequential=False`` — simultaneously (Jacobi; Yates' iteration for standard functions),
      :math:`\epsilon^{t+1} = (1-\beta)\epsilon^t + \beta B(\epsilon^t)` with ``damping``
      :math:`\beta \in (0, 1]`.  Undamped (:math:`\beta = 1`) it can cycle for ever once
      Theorem 4's condition fails;
    * ``sequential=True`` — one vehicle after the other (Gauss–Seidel) with the running
      aggregate (a Python loop: for small markets).

    Stops when no vehicle's best reply differs from its budget by more than
    ``tol`` × the largest budget (the residual :math:`\max_i|B_i(\epsilon) - \epsilon_i|`,
    measured before damping).

    Parameters
    ----------
    initial
        Starting profile (default: everybody at :math:`\epsilon_{\min}`).
    target
        The exact NE (e.g. from :func:`nash_equilibrium`) to record the distance to it.
    record
        Keep every round's profile (memory ``iterations × n``).
    """
    market = _check_market(market)
    reward = _check_reward(reward)
    damping = check_positive_float("damping", damping)
    if damping > 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    tol = check_positive_float("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    eps = (np.full(market.n_vehicles, market.eps_min) if initial is None
           else _check_eps(market, initial).copy())
    if target is not None:
        target = _check_eps(market, target)
    v, w = market.speeds, market.weights
    lo, hi = market.x_min, market.x_max
    x = eps / v
    changes, distances, history = [], [], []
    converged = False
    start = time.perf_counter()
    it = 0
    for it in range(1, max_iter + 1):
        if sequential:
            s = float(x.sum())
            change = 0.0
            for i in range(x.shape[0]):
                others = s - x[i]
                new = (math.sqrt(reward * others / w[i]) - others) if reward > 0 else lo[i]
                new = min(max(new, lo[i]), hi[i])
                change = max(change, abs(new - x[i]) * v[i])
                new = x[i] + damping * (new - x[i])
                s = others + new
                x[i] = new
        else:
            others = x.sum() - x
            reply = np.sqrt(reward * others / w) - others if reward > 0 else lo.copy()
            np.clip(reply, lo, hi, out=reply)
            step = reply - x
            change = float(np.max(np.abs(step) * v))
            if damping != 1.0:
                step *= damping
            x = x + step
        changes.append(change)
        if target is not None:
            distances.append(float(np.max(np.abs(x * v - target))))
        if record:
            history.append(np.clip(x * v, market.eps_min, market.eps_max))
        if change <= tol * float(np.max(x * v)):
            converged = True
            break
    seconds = time.perf_counter() - start
    eps = np.clip(x * v, market.eps_min, market.eps_max)
    return DynamicsResult(eps, it, converged, np.array(changes), np.array(distances),
                          np.array(history) if record else None, seconds)
