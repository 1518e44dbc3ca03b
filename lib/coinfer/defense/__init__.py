r"""Shields: the paper's model-perturbation defence, two baselines, and the accuracy-vs-ε curve.

**Model perturbation** (Algorithm 2 of Wu et al. 2021).  The device part :math:`\theta_1` (the
parameters of the first ``at`` convolutions) is clipped to :math:`[-G, G]` during training
(:func:`coinfer.train.clip_parameters`) and Laplace noise is added to every parameter:
:func:`perturb_parameters` returns a *new* model (the input is never modified).  Two choices the
paper leaves open are explicit arguments:

* ``policy="once"`` — the noise is drawn once, at deployment, and the vehicle runs the fixed
  :math:`f_{\tilde\theta_1}`; ``policy="fresh"`` — every image of every forward call gets its own
  noise draw, from a ``torch.Generator`` the returned model owns.
* ``calibration="per-coordinate"`` — the paper's scale :math:`2G/\epsilon`;
  ``calibration="whole-vector"`` — :math:`2Gd/\epsilon`, the Laplace mechanism for the
  :math:`\ell_1` sensitivity of the whole vector (see :mod:`coinfer.privacy`).

**Baseline shields** that act on the intermediate output :math:`v = f_{\theta_1}(x)` instead:
Laplace noise (Titcombe et al. 2021; Ryu et al. 2021) and dropout (He, Zhang & Lee 2020).  Each
shield is a small frozen parameter object (:class:`ParameterNoise`, :class:`OutputNoise`,
:class:`OutputDropout`) and :func:`apply_shield` turns it into a defended
:class:`~coinfer.models.SplitModel`.

**Fig. 5 and the fit** :math:`A(\epsilon) = a\log(b\epsilon + 1)` (Sect. 4.1 of the paper):
:func:`accuracy_sweep`, :func:`fit_accuracy_curve` and :func:`fitted_accuracy_curve`, which
caches the fit that Chapter 3 computes (``coinfer.config.cache_dir("fits")``) so that the game
chapter reads the very same :math:`(a, b)`.  Its :class:`AccuracyFit` also carries the curve
capped at the clean accuracy (``paper_curve``), a saturating logistic fit in
:math:`\log\epsilon` (``logistic_curve``) and the :math:`R^2` of each.

**The clip bound** :math:`G`: :func:`choose_clip_bound` (a percentile of :math:`|\theta_1|`,
rounded up) and :func:`load_or_finetune_clipped` (the victim fine-tuned under coordinate
clipping, cached).

The package follows the sections of Chapter 3:

* :mod:`coinfer.defense.mechanisms` — the shields themselves (Sect. 3.2): :func:`check_clipped`,
  :func:`perturb_parameters`, the output-noise and dropout layers, the shield objects,
  :func:`apply_shield`, :func:`shield_strength` / :func:`with_strength`;
* :mod:`coinfer.defense.clipping` — choosing the clip bound :math:`G` from the trained weights
  (:func:`choose_clip_bound`) and a victim fine-tuned under coordinate clipping to it
  (:func:`load_or_finetune_clipped`);
* :mod:`coinfer.defense.audit` — the defence audited as a mechanism on the inference input
  (Sects. 3.3–3.4): :func:`audit_inference_input`;
* :mod:`coinfer.defense.evaluate` — accuracy, device features and the spears against the shields
  (Table 2 and Fig. 4, Sect. 3.5): :func:`evaluate_shield`, :func:`defence_table`,
  :func:`shield_sweep`;
* :mod:`coinfer.defense.fit` — Fig. 5's sweep and the cached fit (Sect. 3.6);
* :mod:`coinfer.defense.curves` — the curves fitted to it: the paper's, capped, logistic;
* :mod:`coinfer.defense.frontier` — the privacy–utility frontier (Sect. 3.7).

:func:`device_part_parameters` lives in :mod:`coinfer.models` (the privacy accounting needs it
too, and :mod:`coinfer.privacy` never imports the defence); it is re-exported here.
"""

from __future__ import annotations

from ..models import device_part_parameters
from . import audit, clipping, curves, evaluate, fit, frontier, mechanisms
from .audit import *  # noqa: F401,F403 - re-exported; the names are in audit.__all__
from .clipping import *  # noqa: F401,F403 - re-exported; the names are in clipping.__all__
from .curves import *  # noqa: F401,F403 - re-exported; the names are in curves.__all__
from .evaluate import *  # noqa: F401,F403 - re-exported; the names are in evaluate.__all__
from .fit import *  # noqa: F401,F403 - re-exported; the names are in fit.__all__
from .frontier import *  # noqa: F401,F403 - re-exported; the names are in frontier.__all__
from .mechanisms import *  # noqa: F401,F403 - re-exported; the names are in mechanisms.__all__
from .audit import _deployments_forward  # noqa: F401 - not public; the tests import it

__all__ = [
    "device_part_parameters",
    *mechanisms.__all__,
    *clipping.__all__,
    *audit.__all__,
    *evaluate.__all__,
    *curves.__all__,
    *fit.__all__,
    *frontier.__all__,
]
