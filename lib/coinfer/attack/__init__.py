"""Spears: reconstructing a vehicle's camera images from the features it shares.

The black-box reconstruction attack of Wu et al. (2021), Sect. 2.2, **Algorithm 1**, following
He, Zhang & Lee (2019).  The vehicle computes :math:`v_0 = f_{\\theta_1}(x_0)` and sends it to the
edge server; an eavesdropper intercepts :math:`v_0`.  The attacker does not know the structure or
the parameters of :math:`f_{\\theta_1}`, but can *query* it (the service provider exposes an
API).  Algorithm 1 has three phases, each a function here:

1. **observe** (:func:`observe`) — query :math:`f_{\\theta_1}` with the attacker's own images
   :math:`X = \\{x_1, …, x_n\\}` and record :math:`V = \\{f_{\\theta_1}(x_i)\\}`;
2. **learn** (:func:`learn`) — train an inverse network :math:`g_\\omega` on the pairs
   :math:`(f_{\\theta_1}(x_i), x_i)` with the loss of the paper

   .. math:: l(\\omega; X) = \\frac{1}{n} \\sum_{i=1}^{n} \\lVert g_\\omega(f_{\\theta_1}(x_i)) - x_i \\rVert_2^2 ;

3. **reconstruct** (:func:`reconstruct`) — :math:`x_0' = g_\\omega(v_0)`.

:func:`black_box_attack` runs the three phases; :func:`load_or_train_attacker` caches the trained
inverse network on disk.  The threat model is enforced in code: the black-box functions take a
:class:`QueryAccess` (or any callable), which allows *calling* the device model and nothing else.

Beyond the paper:

* :func:`white_box_attack` — the regularised maximum-likelihood estimation (rMLE) of He et al.
  (2019) for an attacker who knows :math:`\\theta_1`: gradient descent on
  :math:`\\lVert f_{\\theta_1}(x) - v_0 \\rVert_2^2 + \\lambda\\,\\mathrm{TV}(x)` over the image;
* :func:`class_leak` — classify the reconstructions with the victim: does the class survive?
* :func:`mean_image_baseline` and :func:`noise_queries` — the trivial attacker and the most
  out-of-distribution query set, for comparison.

The package follows the sections of Chapter 2:

* :mod:`coinfer.attack.threat` — the threat model (Sect. 2.1) and phase 1: :class:`QueryAccess`,
  :class:`BlackBoxAccessError`, :func:`split_oracle`, :func:`intercept`, :func:`observe`;
* :mod:`coinfer.attack.inverse` — the inverse network and phase 2 (Sect. 2.2):
  :class:`InverseConfig`, :class:`InverseNetwork`, :func:`inverse_network`,
  :func:`inverse_strides`, :class:`InverseResult`, :func:`learn`;
* :mod:`coinfer.attack.black_box` — phase 3 and Algorithm 1 end to end (Sect. 2.2):
  :func:`reconstruct`, :class:`AttackResult`, :func:`black_box_attack`, and the cache of trained
  attackers, :func:`load_or_train_attacker`;
* :mod:`coinfer.attack.protocol` — the experiment (Sects. 2.3 and 2.7): :func:`query_subset`,
  :func:`noise_queries`, :class:`AttackProtocol`, :data:`PROTOCOL`, :func:`chapter_attacker`,
  :func:`replicate_attackers`, :data:`SIGN_FAMILIES`, :func:`family_classes`;
* :mod:`coinfer.attack.white_box` — the white-box spear (Sect. 2.6): :func:`total_variation`,
  :class:`WhiteBoxResult`, :func:`white_box_attack`, :func:`tune_tv_weight`, :data:`TV_GRID`,
  :data:`CHAPTER_TV_WEIGHTS`;
* :mod:`coinfer.attack.server` — the honest-but-curious edge server's white-box spear
  (Sect. 2.6): :func:`search_tv_weight`, :func:`curious_server_attack`;
* :mod:`coinfer.attack.baselines` — the yardsticks (Sect. 2.8): :func:`mean_image_baseline`,
  :class:`ClassLeak`, :func:`class_leak`;
* :mod:`coinfer.attack.leakage` — class leakage judged fairly (Sect. 2.8):
  :func:`independent_judge`, :func:`train_feature_probe`, :func:`probe_accuracy`.

Everything is re-exported here: ``from coinfer.attack import observe`` and ``attack.observe``
work as before.
"""

from __future__ import annotations

from .baselines import ClassLeak, class_leak, mean_image_baseline
from .black_box import (AttackResult, adaptive_attack, black_box_attack, load_or_train_attacker,
                        reconstruct)
from .inverse import (InverseConfig, InverseNetwork, InverseResult, check_adaptive_attacker,
                      inverse_network, inverse_strides, learn)
from .leakage import (JUDGE, FeatureProbe, JudgeCNN, JudgeConfig, JudgeResult, ProbeResult,
                      independent_judge, probe_accuracy, probe_features, train_feature_probe)
from .protocol import (PROTOCOL, SIGN_FAMILIES, AttackProtocol, chapter_attacker, family_classes,
                       noise_queries, query_subset, replicate_attackers)
from .server import (TV_SEARCH_GRID, ServerAttackResult, TVSearch, curious_server_attack,
                     search_tv_weight)
from .threat import BlackBoxAccessError, QueryAccess, intercept, observe, split_oracle
from .white_box import (CHAPTER_TV_WEIGHTS, TV_GRID, WhiteBoxResult, total_variation,
                        tune_tv_weight, white_box_attack)

__all__ = [
    "BlackBoxAccessError",
    "QueryAccess",
    "split_oracle",
    "intercept",
    "observe",
    "InverseConfig",
    "check_adaptive_attacker",
    "InverseNetwork",
    "inverse_network",
    "inverse_strides",
    "InverseResult",
    "learn",
    "reconstruct",
    "AttackResult",
    "black_box_attack",
    "load_or_train_attacker",
    "adaptive_attack",
    "total_variation",
    "WhiteBoxResult",
    "white_box_attack",
    "tune_tv_weight",
    "TV_GRID",
    "CHAPTER_TV_WEIGHTS",
    "ClassLeak",
    "class_leak",
    "mean_image_baseline",
    "noise_queries",
    "query_subset",
    "AttackProtocol",
    "PROTOCOL",
    "chapter_attacker",
    "replicate_attackers",
    "SIGN_FAMILIES",
    "family_classes",
    "TV_SEARCH_GRID",
    "TVSearch",
    "search_tv_weight",
    "ServerAttackResult",
    "curious_server_attack",
    "JudgeConfig",
    "JUDGE",
    "JudgeCNN",
    "JudgeResult",
    "independent_judge",
    "FeatureProbe",
    "ProbeResult",
    "train_feature_probe",
    "probe_features",
    "probe_accuracy",
]
