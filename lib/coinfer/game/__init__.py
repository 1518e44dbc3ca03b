r"""The Stackelberg incentive of Wu et al. (2021), Sect. 4–5: exact equilibria with the bounds.

The service provider (SP, the leader) announces a total reward :math:`R \ge 0`; each vehicle
:math:`i` (a follower) chooses a privacy budget :math:`\epsilon_i \in [\epsilon_{\min},
\epsilon_{\max}]` and receives the share of :math:`R` that its weighted contribution earns
(Eq. (7) of the paper)

.. math::

    U_i = R\,\frac{\epsilon_i / v_i}{\sum_j \epsilon_j / v_j} - \epsilon_i k_i,
    \qquad k_i = c_i + \frac{e}{v_i},

while the SP earns (Eq. (9))

.. math::

    U_S = \lambda a \sum_i \frac{1}{v_i}\log(b\,\epsilon_i + 1) - R .

**The aggregative form.**  With :math:`x_i = \epsilon_i / v_i`, :math:`w_i = v_i k_i = c_i v_i + e`
and :math:`S = \sum_j x_j` the vehicle's utility is :math:`U_i = R x_i / S - w_i x_i`: the
crowdsourcing contest of Yang et al. (MobiCom 2012) with box constraints
:math:`x_i \in [\ell_i, u_i] = [\epsilon_{\min}/v_i, \epsilon_{\max}/v_i]`.  A profile is a Nash
equilibrium (NE) iff every :math:`x_i` equals the *consistent response* to the aggregate,

.. math::

    x_i = r_i(S) = \operatorname{clip}\!\Big(S - \frac{w_i S^2}{R},\ \ell_i,\ u_i\Big),

and :math:`S = \sum_i r_i(S)`.  Because :math:`\sum_i r_i(S)/S` is continuous and strictly
decreasing from :math:`+\infty` to :math:`0`, the NE exists and is unique for every
:math:`R > 0`; :func:`nash_equilibrium` finds it with one bracketed scalar root-find on
:math:`[\sum_i \ell_i, \sum_i u_i]`.  (At :math:`R = 0` every vehicle sits at
:math:`\epsilon_{\min}`.)

**The leader's problem.**  Along the NE every :math:`x_i(R)` is continuous and non-decreasing, so
each vehicle changes status at most twice (it leaves :math:`\epsilon_{\min}`, later it reaches
:math:`\epsilon_{\max}`).  Between two such *breakpoints* the active set is fixed,
:math:`S(R)` has the closed form of :func:`_piece_aggregate` and :math:`U_S` is concave; at a
breakpoint where a vehicle leaves :math:`\epsilon_{\min}` the slope of the aggregate jumps *up*
and :math:`U_S` typically gets a convex kink, so :math:`U_S` is in general not concave and may
have several local maxima (Theorem 5 of the paper does not hold once a bound binds; :math:`R = 0`
is always a local maximum).  :func:`stackelberg_equilibrium` finds the *global*
maximiser by a branch and bound over reward intervals that uses the monotonicity of the
accuracy term as bound and exact event sweeps for the breakpoints.

**Modules.**  The package follows the sections of Chapter 4 of the book:

* :mod:`coinfer.game.market` — the game (Sects. 4.1–4.2): :class:`Market`, :class:`MarketSpec`,
  :func:`random_market`, the utilities (Eqs. (7)–(9)), :class:`PublicInfo`, and the input
  checks and tolerances the other modules share;
* :mod:`coinfer.game.nash` — the vehicles' subgame (Sect. 4.3): best responses (Eq. (15)), the
  exact NE, the consistent responses;
* :mod:`coinfer.game.dynamics` — best-response dynamics (Sect. 4.3);
* :mod:`coinfer.game.path` — the NE path in :math:`R`: pieces with a fixed active set, the event
  sweep, the breakpoints and the exact slope of :math:`U_S` (Sect. 4.4);
* :mod:`coinfer.game.stackelberg` — the leader's problem (Sect. 4.4): the global SE, the curve
  :math:`U_S(R)` and its local maxima, when :math:`R^* = 0`;
* :mod:`coinfer.game.curves` — the leader's problem with a general accuracy curve
  :math:`A(\epsilon)` (e.g. a logistic in :math:`\log\epsilon`): the NE path is the same, only
  :math:`U_S` changes (Sect. 4.6);
* :mod:`coinfer.game.paper` — the paper's claims checked: Theorem 3's closed form, Theorem 4's
  condition, Eq. (26), counter-examples to Theorem 5;
* :mod:`coinfer.game.mechanisms` — Algorithm 3 (the distributed search) and the linear baseline
  (Sect. 4.4);
* :mod:`coinfer.game.experiments` — Figs. 6–9 and timings (Sects. 4.5 and 4.7).

Everything public is re-exported here: ``from coinfer.game import Market`` and
``game.nash_equilibrium`` work as before.

**Public API.**

* the game: :class:`Market`, :class:`MarketSpec`, :func:`random_market`,
  :func:`vehicle_utilities`, :func:`sp_utility`;
* the followers: :func:`best_response` (Eq. (15)), :func:`nash_equilibrium`,
  :func:`equilibrium_aggregate`, :func:`consistent_responses`, :func:`best_response_dynamics`;
* the paper's closed form: :func:`closed_form_equilibrium` (Theorem 3),
  :func:`closed_form_positive`, :func:`theorem4_condition`, :func:`closed_form_reward_interval`,
  :func:`paper_sp_utility` (Eq. (26)), :func:`closed_form_failure_rates`;
* the leader: :func:`stackelberg_equilibrium` (centralised, global), :func:`sp_utility_curve`,
  :func:`sp_slope`, :func:`reward_breakpoints`, :func:`sp_local_maxima`,
  :func:`multimodal_markets`, :func:`zero_reward_condition`, :func:`zero_reward_threshold`;
* a general accuracy curve: :func:`stackelberg_equilibrium_for_curve`,
  :func:`curve_reward_cap` (and the ``accuracy=`` keyword of :func:`sp_utility` and
  :func:`sp_utility_curve`);
* the mechanisms: :func:`distributed_search` (Algorithm 3; the SP's side is
  :func:`gradient_search`, which sees only :class:`PublicInfo` and the reports),
  :func:`public_info`, :func:`vehicle_oracle`, :func:`estimate_gradient`,
  :func:`linear_pricing`;
* experiments: :func:`compare_approaches`, :func:`sweep_approaches` (Figs. 6–9),
  :func:`time_scaling`, :func:`trend`.
"""

from __future__ import annotations

from . import curves, dynamics, experiments, market, mechanisms, nash, paper, path, stackelberg
from .curves import *  # noqa: F401,F403 - re-exported; the names are in curves.__all__
from .dynamics import *  # noqa: F401,F403 - re-exported; the names are in dynamics.__all__
from .experiments import *  # noqa: F401,F403 - re-exported; the names are in experiments.__all__
from .market import *  # noqa: F401,F403 - re-exported; the names are in market.__all__
from .mechanisms import *  # noqa: F401,F403 - re-exported; the names are in mechanisms.__all__
from .nash import *  # noqa: F401,F403 - re-exported; the names are in nash.__all__
from .paper import *  # noqa: F401,F403 - re-exported; the names are in paper.__all__
from .path import *  # noqa: F401,F403 - re-exported; the names are in path.__all__
from .stackelberg import *  # noqa: F401,F403 - re-exported; the names are in stackelberg.__all__
from .nash import _status  # noqa: F401 - not public; the tests use game._status

__all__ = [
    *market.__all__,
    *nash.__all__,
    *dynamics.__all__,
    *path.__all__,
    *stackelberg.__all__,
    *curves.__all__,
    *paper.__all__,
    *mechanisms.__all__,
    *experiments.__all__,
]
