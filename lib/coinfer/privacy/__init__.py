r"""Differential privacy for the shields: the Laplace mechanism, honest accounting, empirical audits.

Three things live here.

* **The Laplace mechanism** (Dwork, McSherry, Nissim & Smith 2006; Dwork & Roth 2014, Thm 3.6):
  :func:`laplace_noise` draws :math:`\mathrm{Lap}(0, b)` through a ``torch.Generator`` and
  :func:`laplace_mechanism` releases :math:`f(D) + \mathrm{Lap}(0, \Delta_1 f/\epsilon)^k`.
* **Calibration with honest names.**  The paper (Wu et al. 2021, Sect. 3.2 and Theorem 1) adds
  :math:`\mathrm{Lap}(0, 2G/\epsilon)` to every coordinate of the clipped device parameters
  :math:`\theta_1 \in [-G, G]^d`.  That is the Laplace scale for the sensitivity of *one
  coordinate* (``"per-coordinate"``); the :math:`\ell_1` sensitivity of the whole vector is
  :math:`2Gd` and the scale that makes the release :math:`\epsilon`-DP is :math:`2Gd/\epsilon`
  (``"whole-vector"``).  :func:`privacy_guarantee` reports what a given setting really
  guarantees, and for which neighbouring relation.
* **Empirical audits** in the style of Jagielski, Ullman & Oprea (2020): run a mechanism many
  times on two neighbouring inputs, threshold a distinguisher's score, and turn the two observed
  frequencies into a lower bound on :math:`\epsilon` with Clopper–Pearson (1934) confidence
  bounds (:func:`audit_scores`, :func:`audit_mechanism`).  If a mechanism is
  :math:`\epsilon`-DP the bound exceeds :math:`\epsilon` with probability at most ``alpha``.

The package follows the book's sections:

* :mod:`coinfer.privacy.mechanisms` — validation of ε, calibrations and policies, the Laplace
  mechanism and the calibration of the parameter perturbation (Sects. 3.1–3.3);
* :mod:`coinfer.privacy.guarantee` — :func:`privacy_guarantee`, what a setting really guarantees
  (Sect. 3.4);
* :mod:`coinfer.privacy.audit` — Clopper–Pearson bounds, the audits and the reference mechanisms
  that check them (Sect. 3.1, "Auditing a mechanism").

The differential-privacy toolbox of Sect. 3b follows:

* :mod:`coinfer.privacy.gaussian` — :math:`(\epsilon,\delta)`-DP, the Gaussian mechanism and its
  classical and analytic calibrations, privacy profiles;
* :mod:`coinfer.privacy.composition` — basic, advanced and optimal composition, group privacy;
* :mod:`coinfer.privacy.dp_sgd` — DP-SGD with per-example clipping and an RDP accountant;
* :mod:`coinfer.privacy.local` — local DP for the inference input on clipped device features.

Nothing here depends on :mod:`coinfer.defense`: the defence uses the mathematics, not the other
way round.
"""

from __future__ import annotations

from . import audit, composition, dp_sgd, gaussian, guarantee, local, mechanisms
from .audit import *  # noqa: F401,F403 - re-exported; the names are in audit.__all__
from .composition import *  # noqa: F401,F403 - re-exported; the names are in composition.__all__
from .dp_sgd import *  # noqa: F401,F403 - re-exported; the names are in dp_sgd.__all__
from .gaussian import *  # noqa: F401,F403 - re-exported; the names are in gaussian.__all__
from .guarantee import *  # noqa: F401,F403 - re-exported; the names are in guarantee.__all__
from .local import *  # noqa: F401,F403 - re-exported; the names are in local.__all__
from .mechanisms import *  # noqa: F401,F403 - re-exported; the names are in mechanisms.__all__

__all__ = [
    *mechanisms.__all__,
    *guarantee.__all__,
    *audit.__all__,
    *gaussian.__all__,
    *composition.__all__,
    *dp_sgd.__all__,
    *local.__all__,
]
