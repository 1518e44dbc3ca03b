r"""The shields (Sect. 3.2): the paper's model perturbation and two output baselines.

**Model perturbation** (Algorithm 2 of Wu et al. 2021): :func:`check_clipped` refuses a device
part :math:`\theta_1` that is not clipped to :math:`[-G, G]`, and :func:`perturb_parameters`
adds Laplace noise to every parameter, drawn once at deployment (``policy="once"``) or for every
image (``policy="fresh"``, :class:`FreshNoiseConv2d` with its :class:`NoiseSource`).

**Baselines** on the intermediate output :math:`v = f_{\theta_1}(x)`: Laplace noise
(:class:`OutputLaplace`; Titcombe et al. 2021; Ryu et al. 2021) and dropout
(:class:`FeatureDropout`; He, Zhang & Lee 2020).

**Shield objects** :class:`ParameterNoise`, :class:`OutputNoise`, :class:`OutputDropout`,
their strength (:func:`shield_strength`, :func:`with_strength`), labels (:func:`shield_label`),
and :func:`apply_shield`, which turns one into a defended :class:`~coinfer.models.SplitModel`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import check_positive_float, check_positive_int
from ..models import SplitModel, _check_model, _device_convs, device_part_parameters, split
from ..models import check_split_point as _check_at
from ..privacy import check_calibration, check_epsilon, check_policy, laplace_noise, noise_scale

__all__ = [
    "check_clipped",
    "NoiseSource",
    "FreshNoiseConv2d",
    "perturb_parameters",
    "OutputLaplace",
    "FeatureDropout",
    "ParameterNoise",
    "OutputNoise",
    "OutputDropout",
    "Shield",
    "shield_strength",
    "with_strength",
    "shield_label",
    "apply_shield",
]


# ----------------------------------------------------------------------------------------------
# the clipping of the device part θ1
# ----------------------------------------------------------------------------------------------

def check_clipped(model: nn.Sequential, *, at: int, clip_bound: float, rtol: float = 1e-6
                  ) -> float:
    r"""Return :math:`\|\theta_1\|_\infty` and raise unless it is :math:`\le G`.

    The sensitivity argument behind any Laplace calibration needs :math:`\theta_1 \in [-G, G]^d`;
    the library never clips silently, so a model trained without
    ``TrainConfig(clip_bound=G)`` (or with a larger bound) is refused.
    """
    G = check_positive_float("clip_bound", clip_bound)
    norm = max(float(p.detach().abs().max()) for p in device_part_parameters(model, at=at))
    if norm > G * (1 + rtol):
        raise ValueError(
            f"the device parameters of model are not clipped to clip_bound = {G}: "
            f"‖θ1‖∞ = {norm:.4g} > {G}. Train with TrainConfig(clip_bound={G}) (or apply "
            "coinfer.train.clip_parameters) before perturbing.")
    return norm


# ----------------------------------------------------------------------------------------------
# noise sources and the perturbed models
# ----------------------------------------------------------------------------------------------

def _make_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise TypeError("pass either generator= or seed=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        raise TypeError("a random step needs seed= (an int) or generator= (a torch.Generator)")
    check_positive_int("seed", seed, allow_zero=True)
    return torch.Generator().manual_seed(int(seed))


class NoiseSource:
    """A ``torch.Generator`` shared by the noisy layers of one defended model.

    A deep copy gets its own generator in the same state (so a copy of a fresh-noise model
    continues the same stream independently, it never shares state with the original).
    """

    def __init__(self, seed: int):
        check_positive_int("seed", seed, allow_zero=True)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def reset(self) -> None:
        """Restart the stream from ``seed``."""
        self.generator.manual_seed(self.seed)

    def __deepcopy__(self, memo):
        new = NoiseSource.__new__(NoiseSource)
        new.seed = self.seed
        new.generator = torch.Generator()
        new.generator.set_state(self.generator.get_state())
        memo[id(self)] = new
        return new

    def __repr__(self) -> str:
        return f"NoiseSource(seed={self.seed})"


def _child_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


class FreshNoiseConv2d(nn.Conv2d):
    r"""A convolution whose parameters get new :math:`\mathrm{Lap}(0, b)` noise for every image.

    For a batch of :math:`B` images it draws :math:`B` independent noisy copies
    :math:`\theta + \eta^{(i)}` of its weight and bias (from its :class:`NoiseSource`) and applies
    copy :math:`i` to image :math:`i` (one grouped convolution).  It is still an
    :class:`torch.nn.Conv2d`, so :func:`coinfer.models.split` treats it like the original layer.
    """

    def __init__(self, conv: nn.Conv2d, *, scale: float, source: NoiseSource):
        if conv.padding_mode != "zeros":
            raise ValueError(f"only zero padding is supported, got {conv.padding_mode!r}")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size,
                         stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                         groups=conv.groups, bias=conv.bias is not None)
        with torch.no_grad():
            self.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.bias.copy_(conv.bias)
        self.weight.requires_grad_(conv.weight.requires_grad)
        if conv.bias is not None:
            self.bias.requires_grad_(conv.bias.requires_grad)
        self.scale = check_positive_float("scale", scale)
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401 - nn.Module API
        n, c, h, w = x.shape
        g = self.source.generator
        weight = self.weight.unsqueeze(0) + laplace_noise(
            (n, *self.weight.shape), scale=self.scale, generator=g, device=x.device,
            dtype=self.weight.dtype)
        bias = None
        if self.bias is not None:
            bias = (self.bias.unsqueeze(0) + laplace_noise(
                (n, *self.bias.shape), scale=self.scale, generator=g, device=x.device,
                dtype=self.bias.dtype)).reshape(-1)
        out = F.conv2d(x.reshape(1, n * c, h, w), weight.reshape(-1, *self.weight.shape[1:]),
                       bias, self.stride, self.padding, self.dilation, self.groups * n)
        return out.reshape(n, self.out_channels, *out.shape[2:])

    def extra_repr(self) -> str:
        return super().extra_repr() + f", fresh Laplace noise scale={self.scale:.4g}"


def perturb_parameters(
    model: nn.Sequential,
    *,
    epsilon: float,
    clip_bound: float,
    at: int = 4,
    policy: str = "once",
    calibration: str = "per-coordinate",
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> nn.Sequential:
    r"""The model-perturbation defence (Algorithm 2 of Wu et al. 2021): Laplace noise on :math:`\theta_1`.

    Every parameter of the first ``at`` convolutions (the device part :math:`\theta_1`, already
    clipped to :math:`[-G, G]` by training) gets i.i.d. :math:`\mathrm{Lap}(0, b)` noise with
    :math:`b` = :func:`coinfer.privacy.noise_scale` (``2G/ε`` for the paper's
    ``"per-coordinate"`` calibration, ``2Gd/ε`` for ``"whole-vector"``).

    Parameters
    ----------
    model
        The trained, clipped victim (a :class:`~coinfer.models.RoadSignCNN`); never modified.
    epsilon
        Privacy budget :math:`\epsilon > 0`.
    clip_bound
        :math:`G > 0`; the model's :math:`\|\theta_1\|_\infty` must not exceed it
        (:func:`check_clipped`), otherwise ``ValueError``.
    at
        Split point: convolutions ``1 … at`` are perturbed (default 4, the paper's Table 2).
    policy
        ``"once"``: noise drawn now; the returned model is deterministic.  ``"fresh"``: the
        returned model redraws the noise for every image of every forward call, from its own
        ``torch.Generator`` (seeded from ``seed``/``generator``).
    calibration
        ``"per-coordinate"`` (paper) or ``"whole-vector"``.
    generator, seed
        The randomness: exactly one of them.

    Returns
    -------
    nn.Sequential
        A new model with the same layer layout (``split(result, at=k)`` works for every ``k``).
    """
    model, at = _check_model(model), _check_at(at)
    epsilon = check_epsilon(epsilon)
    clip_bound = check_positive_float("clip_bound", clip_bound)
    check_policy(policy)
    check_calibration(calibration)
    gen = _make_generator(generator, seed)
    check_clipped(model, at=at, clip_bound=clip_bound)
    d = sum(p.numel() for p in device_part_parameters(model, at=at))
    scale = noise_scale(epsilon=epsilon, clip_bound=clip_bound, num_parameters=d,
                        calibration=calibration)
    new = copy.deepcopy(model).eval()
    convs = _device_convs(new, at)
    if policy == "once":
        with torch.no_grad():
            for conv in convs:
                for p in conv.parameters():
                    p.add_(laplace_noise(p.shape, scale=scale, generator=gen, device=p.device,
                                         dtype=p.dtype))
        return new
    source = NoiseSource(_child_seed(gen))
    index = {id(conv): FreshNoiseConv2d(conv, scale=scale, source=source) for conv in convs}
    layers = [index.get(id(layer), layer) for layer in new]
    fresh = nn.Sequential(*layers).eval()
    for name in ("num_classes", "hidden"):
        if hasattr(model, name):
            setattr(fresh, name, getattr(model, name))
    fresh.noise_source = source
    return fresh


class OutputLaplace(nn.Module):
    r"""Fresh :math:`\mathrm{Lap}(0, b)` noise on every coordinate of the intermediate output.

    The output-perturbation shield of Titcombe et al. (2021) and Ryu et al. (2021):
    :math:`v \mapsto v + \eta`, a new :math:`\eta` for every image and call.
    """

    def __init__(self, scale: float, *, source: NoiseSource):
        super().__init__()
        self.scale = check_positive_float("scale", scale)
        self.source = source

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # noqa: D401
        return v + laplace_noise(v.shape, scale=self.scale, generator=self.source.generator,
                                 device=v.device, dtype=v.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}"


class FeatureDropout(nn.Module):
    r"""Dropout on the intermediate output at inference time (He, Zhang & Lee 2020).

    Each coordinate is zeroed with probability :math:`p` and the survivors are scaled by
    :math:`1/(1-p)` so that :math:`\mathbb E[\tilde v] = v` (inverted dropout); a new mask for
    every image and call.
    """

    def __init__(self, rate: float, *, source: NoiseSource):
        super().__init__()
        rate = check_positive_float("rate", rate)
        if not rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {rate}")
        self.rate = rate
        self.source = source

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # noqa: D401
        keep = torch.rand(v.shape, generator=self.source.generator) >= self.rate
        return v * keep.to(device=v.device, dtype=v.dtype) / (1.0 - self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4g}"


@dataclass(frozen=True)
class ParameterNoise:
    """The paper's shield: Laplace noise on θ1 (see :func:`perturb_parameters`)."""

    epsilon: float
    clip_bound: float
    policy: str = "once"
    calibration: str = "per-coordinate"

    def __post_init__(self):
        check_epsilon(self.epsilon)
        check_positive_float("clip_bound", self.clip_bound)
        check_policy(self.policy)
        check_calibration(self.calibration)


@dataclass(frozen=True)
class OutputNoise:
    """Baseline: fresh Laplace noise of scale ``scale`` on the intermediate output."""

    scale: float

    def __post_init__(self):
        check_positive_float("scale", self.scale)


@dataclass(frozen=True)
class OutputDropout:
    """Baseline: inference-time dropout of rate ``rate`` on the intermediate output."""

    rate: float

    def __post_init__(self):
        check_positive_float("rate", self.rate)
        if not self.rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {self.rate}")


Shield = Union[ParameterNoise, OutputNoise, OutputDropout, None]


def shield_strength(shield: Shield) -> float:
    """The one number that sets a shield's strength: ε, the output-noise scale, or the dropout rate."""
    if isinstance(shield, ParameterNoise):
        return float(shield.epsilon)
    if isinstance(shield, OutputNoise):
        return float(shield.scale)
    if isinstance(shield, OutputDropout):
        return float(shield.rate)
    raise TypeError(f"shield must be ParameterNoise, OutputNoise or OutputDropout, got "
                    f"{type(shield).__name__}")


def with_strength(shield: Shield, value: float) -> Shield:
    """A copy of ``shield`` with its strength (see :func:`shield_strength`) set to ``value``."""
    name = {ParameterNoise: "epsilon", OutputNoise: "scale", OutputDropout: "rate"}.get(
        type(shield))
    if name is None:
        raise TypeError(f"shield must be ParameterNoise, OutputNoise or OutputDropout, got "
                        f"{type(shield).__name__}")
    return dataclasses.replace(shield, **{name: float(value)})


def shield_label(shield: Shield) -> str:
    """Short text for tables and legends, e.g. ``"θ-noise once ε=5"``."""
    if shield is None:
        return "no defence"
    if isinstance(shield, ParameterNoise):
        cal = "" if shield.calibration == "per-coordinate" else ", whole-vector"
        return f"θ-noise {shield.policy}{cal} ε={shield.epsilon:.3g}"
    if isinstance(shield, OutputNoise):
        return f"output Laplace b={shield.scale:.3g}"
    if isinstance(shield, OutputDropout):
        return f"output dropout p={shield.rate:.3g}"
    raise TypeError(f"shield must be ParameterNoise, OutputNoise, OutputDropout or None, got "
                    f"{type(shield).__name__}")


def apply_shield(model: nn.Sequential, shield: Shield, *, at: int = 4, seed: int = 0
                 ) -> SplitModel:
    r"""The co-inference pipeline of ``model`` at split ``at`` with ``shield`` in place.

    Returns a :class:`~coinfer.models.SplitModel` whose ``device`` part is what the vehicle runs
    (and what an eavesdropper sees the output of) and whose ``edge`` part is the server's.  The
    input model is never modified; ``shield=None`` gives the undefended split (sharing the
    model's parameters, like :func:`coinfer.models.split`).
    """
    model, at = _check_model(model), _check_at(at)
    shield_label(shield)  # type check
    check_positive_int("seed", seed, allow_zero=True)
    if shield is None:
        return split(model, at=at)
    if isinstance(shield, ParameterNoise):
        noisy = perturb_parameters(model, epsilon=shield.epsilon, clip_bound=shield.clip_bound,
                                   at=at, policy=shield.policy, calibration=shield.calibration,
                                   seed=seed)
        return split(noisy, at=at)
    parts = split(model, at=at)
    source = NoiseSource(seed)
    layer = (OutputLaplace(shield.scale, source=source) if isinstance(shield, OutputNoise)
             else FeatureDropout(shield.rate, source=source))
    return SplitModel(nn.Sequential(*parts.device, layer).eval(), parts.edge, at)
