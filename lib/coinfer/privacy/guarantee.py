r"""Honest accounting: what Laplace noise on the clipped device parameters guarantees (Sect. 3.4).

:func:`privacy_guarantee` reports, for a setting :math:`(\epsilon, G, d)`, calibration and noise
policy, the :math:`\epsilon` that holds for one parameter, for the whole vector
:math:`\theta_1`, for the training set after :math:`T` observed inferences and for the inference
input (none) — the corrected Theorem 1 of Wu et al. (2021) in Chapter 3.
:func:`format_epsilon` writes the (often huge) budgets for text and tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import check_positive_int
from ..models import device_part_parameters
from .mechanisms import check_policy, noise_scale

__all__ = [
    "format_epsilon",
    "PrivacyGuarantee",
    "privacy_guarantee",
]


def format_epsilon(value: float, digits: int = 2) -> str:
    """``5`` → ``"5"``, ``562880`` → ``"5.6×10⁵"``, ``inf`` → ``"∞"`` (for text and tables)."""
    if math.isinf(value):
        return "∞"
    if value == 0:
        return "0"
    exponent = int(math.floor(math.log10(abs(value))))
    if -2 <= exponent <= 3:
        text = f"{value:.{max(0, digits - 1 - exponent)}f}" if exponent < digits else f"{value:.0f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa = value / 10 ** exponent
    sup = str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mantissa:.{digits - 1}f}×10{sup}"


@dataclass(frozen=True)
class PrivacyGuarantee:
    r"""What a parameter-perturbation setting actually guarantees.

    Attributes
    ----------
    nominal_epsilon
        The :math:`\epsilon` the setting was configured with.
    calibration, policy
        See :data:`CALIBRATIONS` and :data:`POLICIES`.
    num_parameters
        :math:`d`, the number of perturbed (clipped) parameters.
    clip_bound
        :math:`G`.
    scale
        The Laplace scale :math:`b` added to every parameter.
    per_coordinate_epsilon
        :math:`2G/b`: the guarantee for the release of *one* parameter.
    whole_vector_epsilon
        :math:`2Gd/b`: the guarantee for the release of the whole :math:`\theta_1` (with respect
        to any change of the training set), i.e. for one deployment.  Tight: no smaller
        :math:`\epsilon` holds for every training algorithm with outputs in :math:`[-G,G]^d`.
    num_inferences
        :math:`T`, the number of inferences an eavesdropper observes.
    training_data_epsilon
        The guarantee for the training set after :math:`T` observed inferences:
        ``whole_vector_epsilon`` under ``"once"`` (post-processing of one release),
        :math:`T\times` ``whole_vector_epsilon`` under ``"fresh"`` (basic composition of
        :math:`T` releases).
    inference_input_epsilon
        The guarantee for the vehicle's inference input :math:`x`: ``inf`` — parameter noise is
        not a mechanism on :math:`x` (see Chapter 3 and the audits).
    split_at
        The split point, when known (for the text).
    """

    nominal_epsilon: float
    calibration: str
    policy: str
    num_parameters: int
    clip_bound: float
    scale: float
    per_coordinate_epsilon: float
    whole_vector_epsilon: float
    num_inferences: int
    training_data_epsilon: float
    inference_input_epsilon: float = math.inf
    split_at: int | None = None

    def summary(self) -> str:
        """One line, e.g. ``per-coordinate ε = 5; whole vector ε = 5·d = 5.6×10⁵ at split 4``."""
        where = f" at split {self.split_at}" if self.split_at is not None else ""
        d = self.num_parameters
        if self.calibration == "per-coordinate":
            vec = f"{format_epsilon(self.per_coordinate_epsilon)}·d = " \
                  f"{format_epsilon(self.whole_vector_epsilon)}"
        else:
            vec = format_epsilon(self.whole_vector_epsilon)
        text = (f"per-coordinate ε = {format_epsilon(self.per_coordinate_epsilon)}; "
                f"whole vector ε = {vec}{where} (d = {d:,})")
        if self.policy == "fresh" and self.num_inferences > 1:
            text += (f"; training data after T = {self.num_inferences:,} fresh inferences: "
                     f"ε = {format_epsilon(self.training_data_epsilon)}")
        return text + "; inference input x: no guarantee (ε = ∞)"

    def __str__(self) -> str:  # pragma: no cover - thin wrapper
        return self.summary()


def privacy_guarantee(
    num_parameters: int | torch.nn.Module,
    *,
    epsilon: float,
    clip_bound: float,
    calibration: str = "per-coordinate",
    policy: str = "once",
    num_inferences: int = 1,
    at: int | None = None,
) -> PrivacyGuarantee:
    r"""The guarantee that actually holds for Laplace noise on :math:`d` clipped parameters.

    Parameters
    ----------
    num_parameters
        :math:`d`, or a model: then ``at`` must be given and :math:`d` is the number of
        parameters of its first ``at`` convolutions (the device part :math:`\theta_1`).
    epsilon, clip_bound, calibration
        The setting (see :func:`noise_scale`).
    policy
        ``"once"`` or ``"fresh"`` (see :data:`POLICIES`); matters for ``num_inferences > 1``.
    num_inferences
        How many inferences of the vehicle an eavesdropper observes.
    at
        Split point (required with a model, optional otherwise; only used for the text).

    Notes
    -----
    The proof is the corrected theorem of Chapter 3: releasing :math:`\theta_1 + \eta` with
    :math:`\eta_i \sim \mathrm{Lap}(b)` i.i.d. and :math:`\theta_1 \in [-G, G]^d` is
    :math:`(2Gd/b)`-DP with respect to the training set, every inference computed from one
    release inherits it (post-processing), and :math:`T` fresh releases compose to
    :math:`T\cdot 2Gd/b`.
    """
    if isinstance(num_parameters, torch.nn.Module):
        if at is None:
            raise ValueError("at must be given when num_parameters is a model")
        d = sum(p.numel() for p in device_part_parameters(num_parameters, at=at))
    else:
        d = check_positive_int("num_parameters", num_parameters)
    check_policy(policy)
    T = check_positive_int("num_inferences", num_inferences)
    b = noise_scale(epsilon=epsilon, clip_bound=clip_bound, num_parameters=d,
                    calibration=calibration)
    G = float(clip_bound)
    whole = 2 * G * d / b
    return PrivacyGuarantee(
        nominal_epsilon=float(epsilon), calibration=calibration, policy=policy, num_parameters=d,
        clip_bound=G, scale=b, per_coordinate_epsilon=2 * G / b, whole_vector_epsilon=whole,
        num_inferences=T, training_data_epsilon=whole * (T if policy == "fresh" else 1),
        split_at=at,
    )
