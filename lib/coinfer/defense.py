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
chapter reads the very same :math:`(a, b)`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import curve_fit
from torch import nn
from tqdm.auto import tqdm

from .config import (cache_dir, check_positive_float, check_positive_int, data_root,
                     default_device)
from .data import ImageSet, to_float
from .models import SplitModel, check_images, check_split_point, feature_shape, split
from .privacy import (AuditResult, audit_scores, check_calibration, check_epsilon, check_policy,
                      laplace_noise, noise_scale)
from .train import VICTIM, TrainConfig

__all__ = [
    "device_part_parameters",
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
    "apply_shield",
    "shield_label",
    "accuracy",
    "device_features",
    "fixed_subset",
    "SweepConfig",
    "SweepResult",
    "accuracy_sweep",
    "accuracy_curve",
    "fit_accuracy_curve",
    "AccuracyFit",
    "fitted_accuracy_curve",
    "fit_cache_path",
    "audit_inference_input",
    "interior_margin",
    "ShieldEvaluation",
    "evaluate_shield",
    "defence_table",
    "shield_sweep",
    "interpolate_at_accuracy",
    "strength_for_accuracy",
    "shield_strength",
    "with_strength",
    "ADAPTIVE_ATTACKER",
    "ADAPTIVE_QUERIES",
    "FRONTIER_EPSILONS",
    "FRONTIER_SCALES",
    "FRONTIER_RATES",
    "FRONTIER_TARGETS",
]


# ----------------------------------------------------------------------------------------------
# the device part θ1 and its clipping
# ----------------------------------------------------------------------------------------------

_check_at = check_split_point  # one validation of split points for the whole library


def _check_model(model) -> nn.Sequential:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential (e.g. RoadSignCNN), got "
                        f"{type(model).__name__}")
    return model


def _device_convs(model: nn.Sequential, at: int) -> list[nn.Conv2d]:
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    if len(convs) < at:
        raise ValueError(f"model has {len(convs)} convolutions, fewer than at = {at}")
    return convs[:at]


def device_part_parameters(model: nn.Sequential, *, at: int) -> list[nn.Parameter]:
    r"""The parameters :math:`\theta_1` of the device part at split ``at`` (convolutions 1…at)."""
    model, at = _check_model(model), _check_at(at)
    return [p for conv in _device_convs(model, at) for p in conv.parameters()]


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


# ----------------------------------------------------------------------------------------------
# accuracy and features
# ----------------------------------------------------------------------------------------------

def _as_float_batch(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return to_float(images)
    check_images(images, name="images")
    return images.float()


@torch.no_grad()
def device_features(device_model: nn.Module, images: torch.Tensor, *, batch_size: int = 500
                    ) -> torch.Tensor:
    """The intermediate outputs :math:`f_{\\theta_1}(x)` of ``images`` (``uint8`` or floats in [0, 1])."""
    check_positive_int("batch_size", batch_size)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise TypeError("images must be a (n, 3, 32, 32) tensor")
    dev = next(device_model.parameters()).device
    device_model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = _as_float_batch(images[start:start + batch_size]).to(dev)
        out.append(device_model(x.contiguous(memory_format=torch.channels_last)).float()
                   .contiguous().cpu())
    return torch.cat(out)


@torch.no_grad()
def accuracy(pipeline: nn.Module | SplitModel, data: ImageSet, *, batch_size: int = 500) -> float:
    """Top-1 accuracy of a model or a (defended) :class:`SplitModel` on ``data``.

    Batches are fed in ``channels_last`` layout (about 1.4× faster on CPUs).  For a fresh-noise
    model each image gets its own noise draw; the result depends on the model's noise stream.
    """
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("data must contain at least one image")
    check_positive_int("batch_size", batch_size)
    if isinstance(pipeline, SplitModel):
        run = lambda x: pipeline.edge(pipeline.device(x))  # noqa: E731
        params = next(pipeline.device.parameters())
        pipeline.device.eval()
        pipeline.edge.eval()
    elif isinstance(pipeline, nn.Module):
        run, params = pipeline, next(pipeline.parameters())
        pipeline.eval()
    else:
        raise TypeError(f"pipeline must be an nn.Module or a SplitModel, got "
                        f"{type(pipeline).__name__}")
    correct = 0
    for start in range(0, len(data), batch_size):
        x = _as_float_batch(data.images[start:start + batch_size]).to(params.device)
        logits = run(x.contiguous(memory_format=torch.channels_last))
        correct += int((logits.argmax(1).cpu() == data.labels[start:start + batch_size]).sum())
    return correct / len(data)


def fixed_subset(data: ImageSet, *, num_images: int, seed: int = 0) -> ImageSet:
    """A fixed random subset of ``num_images`` images (sorted indices, ``torch.Generator(seed)``)."""
    num_images = check_positive_int("num_images", num_images)
    check_positive_int("seed", seed, allow_zero=True)
    if num_images >= len(data):
        return data
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.subset(perm[:num_images].sort().values)


# ----------------------------------------------------------------------------------------------
# Fig. 5: accuracy against ε, and the fit A(ε) = a·log(bε + 1)
# ----------------------------------------------------------------------------------------------

#: The ε grid of the Chapter 3 sweep (log-spaced, 11 values from 1 to 10⁴: ratio 10^0.4).
SWEEP_EPSILONS: tuple[float, ...] = tuple(float(f"{e:.4g}") for e in np.geomspace(1, 1e4, 11))


@dataclass(frozen=True)
class SweepConfig:
    r"""The settings of the accuracy-vs-ε sweep (Fig. 5) — and hence of the cached fit.

    Attributes
    ----------
    epsilons
        The log-spaced grid of privacy budgets.
    draws
        Independent noise draws (deployments) per :math:`\epsilon`.  Draw :math:`j` uses the
        same standard Laplace vector for every :math:`\epsilon`, scaled by :math:`2G/\epsilon`
        (common random numbers: the curve of one draw is a function of :math:`\epsilon` only).
    num_images
        Size of the fixed random subset of the GTSRB test split the accuracy is measured on.
    subset_seed, seed
        Seeds of the subset and of the noise.
    at, policy, calibration
        The defence: split point, noise policy and calibration (the paper's: 4, once,
        per-coordinate).
    victim
        The victim's training configuration (its ``clip_bound`` is :math:`G`).
    """

    epsilons: tuple[float, ...] = SWEEP_EPSILONS
    draws: int = 3
    num_images: int = 500
    subset_seed: int = 0
    seed: int = 0
    at: int = 4
    policy: str = "once"
    calibration: str = "per-coordinate"
    victim: TrainConfig = VICTIM

    def __post_init__(self):
        eps = tuple(float(check_epsilon(e, name="epsilons[i]")) for e in self.epsilons)
        if len(eps) < 2 or list(eps) != sorted(set(eps)):
            raise ValueError(f"epsilons must hold >= 2 increasing values, got {self.epsilons}")
        object.__setattr__(self, "epsilons", eps)
        check_positive_int("draws", self.draws)
        check_positive_int("num_images", self.num_images)
        check_positive_int("subset_seed", self.subset_seed, allow_zero=True)
        check_positive_int("seed", self.seed, allow_zero=True)
        _check_at(self.at)
        check_policy(self.policy)
        check_calibration(self.calibration)
        if not isinstance(self.victim, TrainConfig):
            raise TypeError(f"victim must be a TrainConfig, got {type(self.victim).__name__}")
        if self.victim.clip_bound is None:
            raise ValueError("victim must be trained with a clip_bound (the G of the defence)")

    @property
    def clip_bound(self) -> float:
        """:math:`G`, the victim's clipping bound."""
        return float(self.victim.clip_bound)


class SweepResult(NamedTuple):
    """Accuracies of the sweep: ``accuracy[i, j]`` at ``epsilons[i]``, noise draw ``j``."""

    epsilons: np.ndarray
    accuracy: np.ndarray
    clean_accuracy: float
    config: SweepConfig
    seconds: float

    @property
    def mean(self) -> np.ndarray:
        return self.accuracy.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        return self.accuracy.std(axis=1, ddof=1) if self.accuracy.shape[1] > 1 else \
            np.zeros(len(self.epsilons))


def _draw_seed(seed: int, draw: int) -> int:
    return int(np.random.SeedSequence([seed, draw]).generate_state(1, dtype=np.uint64)[0] >> 2)


def accuracy_sweep(
    model: nn.Sequential,
    test_set: ImageSet,
    *,
    config: SweepConfig = SweepConfig(),
    progress: bool = True,
) -> SweepResult:
    r"""Accuracy of the defended victim over ``config.epsilons`` × ``config.draws`` (Fig. 5).

    For every :math:`\epsilon` and draw, :func:`apply_shield` with
    ``ParameterNoise(ε, G, policy, calibration)`` is evaluated on the fixed subset
    :func:`fixed_subset` ``(test_set, num_images, subset_seed)``.
    """
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    subset = fixed_subset(test_set, num_images=config.num_images, seed=config.subset_seed)
    start = time.perf_counter()
    clean = accuracy(model, subset)
    acc = np.zeros((len(config.epsilons), config.draws))
    bar = tqdm(total=acc.size, desc="accuracy sweep", disable=not progress or None)
    for j in range(config.draws):
        for i, eps in enumerate(config.epsilons):
            shield = ParameterNoise(eps, config.clip_bound, config.policy, config.calibration)
            pipeline = apply_shield(model, shield, at=config.at,
                                    seed=_draw_seed(config.seed, j))
            acc[i, j] = accuracy(pipeline, subset)
            bar.update(1)
    bar.close()
    return SweepResult(np.array(config.epsilons), acc, clean, config,
                       time.perf_counter() - start)


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
    eps = np.asarray(epsilons, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    if acc.ndim == 1:
        acc = acc[:, None]
    if eps.ndim != 1 or acc.shape[0] != eps.size or eps.size < 2:
        raise ValueError(f"epsilons (shape {eps.shape}) and accuracies (shape {acc.shape}) must "
                         "have one row per epsilon, at least 2")
    if not (np.isfinite(eps).all() and (eps > 0).all() and np.isfinite(acc).all()):
        raise ValueError("epsilons must be finite and > 0 and accuracies finite")
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


@dataclass(frozen=True)
class AccuracyFit:
    r"""The fitted accuracy curve :math:`A(\epsilon) = a\log(b\epsilon + 1)` and the sweep behind it.

    Attributes
    ----------
    a, b
        The fitted parameters (accuracy as a fraction in [0, 1], natural logarithm).
    a_stderr, b_stderr
        Standard errors from ``curve_fit``'s covariance.
    epsilons, accuracy
        The sweep: ``accuracy[i][j]`` at ``epsilons[i]``, noise draw ``j``.
    clean_accuracy
        Accuracy of the undefended victim on the same test subset.
    rmse
        Root-mean-square residual of the fit over all points.
    settings
        The :class:`SweepConfig` that produced it.
    sweep_seconds
        Wall time of the sweep when it was computed (not of loading it).
    """

    a: float
    b: float
    a_stderr: float
    b_stderr: float
    epsilons: tuple[float, ...]
    accuracy: tuple[tuple[float, ...], ...]
    clean_accuracy: float
    rmse: float
    settings: SweepConfig
    sweep_seconds: float = field(default=0.0, compare=False)

    def __call__(self, epsilon) -> np.ndarray:
        """:math:`a\\log(b\\epsilon + 1)`."""
        return accuracy_curve(epsilon, self.a, self.b)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.accuracy).mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        acc = np.asarray(self.accuracy)
        return acc.std(axis=1, ddof=1) if acc.shape[1] > 1 else np.zeros(acc.shape[0])

    @classmethod
    def from_sweep(cls, sweep: SweepResult) -> "AccuracyFit":
        a, b, cov = fit_accuracy_curve(sweep.epsilons, sweep.accuracy)
        resid = accuracy_curve(sweep.epsilons[:, None], a, b) - sweep.accuracy
        err = np.sqrt(np.clip(np.diag(cov), 0, np.inf))
        return cls(a=a, b=b, a_stderr=float(err[0]), b_stderr=float(err[1]),
                   epsilons=tuple(float(e) for e in sweep.epsilons),
                   accuracy=tuple(tuple(float(v) for v in row) for row in sweep.accuracy),
                   clean_accuracy=float(sweep.clean_accuracy),
                   rmse=float(np.sqrt(np.mean(resid ** 2))), settings=sweep.config,
                   sweep_seconds=float(sweep.seconds))


def _fit_payload(settings: SweepConfig) -> dict:
    from .train import use_bf16  # the victim's weights depend on it (see train._cache_key)

    device = default_device()
    payload = {
        "settings": dataclasses.asdict(settings),
        "device": device.type,
        "bf16": use_bf16(settings.victim.mixed_precision, device),
        "torch": torch.__version__.split("+")[0],
        "data": (str(data_root()) if settings.victim.data != "synthetic" else "synthetic"),
        "format": 1,
    }
    return payload


def fit_cache_path(settings: SweepConfig = SweepConfig()) -> Path:
    """Where :func:`fitted_accuracy_curve` caches the fit for ``settings``."""
    key = hashlib.sha256(json.dumps(_fit_payload(settings), sort_keys=True).encode()).hexdigest()
    return cache_dir("fits") / f"accuracy-fit-{key[:16]}.json"


def _fingerprint(model: nn.Sequential) -> str:
    h = hashlib.sha256()
    for p in model.state_dict().values():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_fit(path, settings: SweepConfig, fingerprint: str | None) -> AccuracyFit | None:
    try:
        blob = json.loads(path.read_text())
        if blob["payload"] != json.loads(json.dumps(_fit_payload(settings))):
            return None
        if fingerprint is not None and blob.get("victim_fingerprint") != fingerprint:
            return None
        fit = blob["fit"]
        return AccuracyFit(a=fit["a"], b=fit["b"], a_stderr=fit["a_stderr"],
                           b_stderr=fit["b_stderr"], epsilons=tuple(fit["epsilons"]),
                           accuracy=tuple(tuple(r) for r in fit["accuracy"]),
                           clean_accuracy=fit["clean_accuracy"], rmse=fit["rmse"],
                           settings=settings, sweep_seconds=fit["sweep_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fitted_accuracy_curve(
    settings: SweepConfig = SweepConfig(),
    *,
    model: nn.Sequential | None = None,
    test_set: ImageSet | None = None,
    recompute: bool = False,
    progress: bool = False,
) -> AccuracyFit:
    r"""The fit :math:`A(\epsilon) = a\log(b\epsilon+1)` of Fig. 5 — from the cache, or computed.

    Chapter 3 computes it (``recompute=True``) with the default ``settings`` and caches it as
    JSON in ``coinfer.config.cache_dir("fits")``, keyed by the settings (including the victim's
    :class:`~coinfer.train.TrainConfig`), the device type, bf16 use, the torch version and the
    data root.  Chapter 4 calls ``fitted_accuracy_curve()`` and gets the same numbers; when the
    cache is missing it runs the same sweep (:func:`accuracy_sweep` + :func:`fit_accuracy_curve`).

    Parameters
    ----------
    settings
        The sweep settings; the default is exactly the one Chapter 3 uses.
    model, test_set
        The victim and the GTSRB test split, when the caller has them loaded already; by default
        ``coinfer.train.load_or_train(settings.victim)`` and
        ``coinfer.data.load_signs("test", source=settings.victim.data)``.  A given ``model`` is
        fingerprinted and a cached fit of another model is not used.
    recompute
        Run the sweep even when a cached fit exists (and overwrite the cache).
    """
    if not isinstance(settings, SweepConfig):
        raise TypeError(f"settings must be a SweepConfig, got {type(settings).__name__}")
    path = fit_cache_path(settings)
    fingerprint = _fingerprint(model) if model is not None else None
    if path.exists() and not recompute:
        fit = _load_fit(path, settings, fingerprint)
        if fit is not None:
            return fit
    if model is None:
        from .train import load_or_train

        model = load_or_train(settings.victim, progress=progress).model
        fingerprint = _fingerprint(model)
    if test_set is None:
        from .data import load_signs

        test_set = load_signs("test", source=settings.victim.data, progress=progress)
    sweep = accuracy_sweep(model, test_set, config=settings, progress=progress)
    fit = AccuracyFit.from_sweep(sweep)
    blob = {
        "payload": _fit_payload(settings),
        "victim_fingerprint": fingerprint,
        "fit": {k: getattr(fit, k) for k in ("a", "b", "a_stderr", "b_stderr", "epsilons",
                                               "accuracy", "clean_accuracy", "rmse",
                                               "sweep_seconds")},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(blob, indent=1))
    tmp.replace(path)
    return fit


# ----------------------------------------------------------------------------------------------
# auditing the defence with respect to the inference input x
# ----------------------------------------------------------------------------------------------

def interior_margin(at: int) -> int:
    r"""Feature positions within this distance of the border depend on the zero padding.

    Conv :math:`k` (3×3, padding 1) runs at stride :math:`2^{\lfloor (k-1)/2 \rfloor}` pixels and
    widens the padding-influenced border by that many pixels; the 2×2 pools tile the image
    exactly and add nothing.  Positions at least ``interior_margin(at)`` from every border of
    the split-``at`` feature map see no padding at all, so for a constant image they all compute
    the same value: a convolution is translation-equivariant.
    """
    at = _check_at(at)
    border = sum(2 ** ((k - 1) // 2) for k in range(1, at + 1))
    stride = 2 ** ((at - 1) // 2)
    return -(-border // stride)


def _interior_spread(v: torch.Tensor, margin: int) -> torch.Tensor:
    inner = v[:, :, margin:v.shape[2] - margin, margin:v.shape[3] - margin].double()
    flat = inner.reshape(inner.shape[0], inner.shape[1], -1)
    spread = (flat.max(dim=2).values - flat.min(dim=2).values).amax(dim=1)
    return spread / (flat.abs().amax(dim=(1, 2)) + 1e-300)


def _seed_for(seed: int, which: int, run: int) -> int:
    return int(np.random.SeedSequence([seed, which, run]).generate_state(1, dtype=np.uint64)[0]
               >> 2)


def _deployments_forward(device: nn.Sequential, at: int, scale: float, runs: int,
                         generator: torch.Generator, images: torch.Tensor) -> torch.Tensor:
    """Run ``images`` through ``runs`` independent once-policy deployments at once.

    Deployment ``r`` adds row ``r`` of one ``(runs, d)`` Laplace draw to the device parameters
    (in the order of :func:`device_part_parameters`); the deployments are evaluated together as
    one grouped convolution per layer.  Returns a tensor of shape
    ``(runs, len(images), C, H, W)``.
    """
    convs = _device_convs(device, at)
    named = [(id(conv), k, p.detach()) for conv in convs for k, p in
             (("weight", conv.weight), ("bias", conv.bias)) if p is not None]
    noise = laplace_noise((runs, sum(p.numel() for _, _, p in named)), scale=scale,
                          generator=generator, dtype=named[0][2].dtype)
    noisy, offset = {}, 0
    for key, k, p in named:
        noisy[key, k] = (p.unsqueeze(0) + noise[:, offset:offset + p.numel()]
                         .reshape(runs, *p.shape)).reshape(runs * p.shape[0], *p.shape[1:])
        offset += p.numel()
    h = images.repeat(1, runs, 1, 1)  # (m, runs·C, H, W): run r owns channel block r
    for layer in device:
        if isinstance(layer, nn.Conv2d):
            h = F.conv2d(h, noisy[id(layer), "weight"], noisy.get((id(layer), "bias")),
                         layer.stride, layer.padding, layer.dilation, layer.groups * runs)
        else:
            h = layer(h)
    m, _, hh, ww = h.shape
    return h.reshape(m, runs, -1, hh, ww).transpose(0, 1)


@torch.no_grad()
def audit_inference_input(
    model: nn.Sequential,
    x: torch.Tensor,
    x_prime: torch.Tensor,
    *,
    epsilon: float,
    clip_bound: float,
    at: int = 4,
    policy: str = "once",
    calibration: str = "per-coordinate",
    distinguisher: str = "auto",
    trials: int = 500,
    template_queries: int = 64,
    seed: int = 0,
    alpha: float = 0.05,
    batch_size: int = 250,
) -> AuditResult:
    r"""Audit the model-perturbation defence as a mechanism on the **inference input** :math:`x`.

    The mechanism is what an eavesdropper with the paper's query access sees when the vehicle
    runs the defended device part :math:`f_{\tilde\theta_1}` on :math:`x` (resp. :math:`x'`).
    Each run is independent: under ``policy="once"`` it is a new deployment
    (:func:`perturb_parameters` with its own seed) and the observation of one inference; under
    ``"fresh"`` it is one inference with its own noise draw.  :func:`coinfer.privacy.audit_scores`
    turns the distinguisher's scores into a Clopper–Pearson lower bound on :math:`\epsilon`.

    Distinguishers (``"auto"``: ``"requery"`` for once, ``"template"`` for fresh):

    ``"requery"``
        (once) query the deployed device part on :math:`x` and :math:`x'` through the API and
        score :math:`\|v - f_{\tilde\theta_1}(x)\|^2 - \|v - f_{\tilde\theta_1}(x')\|^2`.
    ``"template"``
        average ``template_queries`` API answers for :math:`x` and for :math:`x'` (fresh noise
        each, from a separate seed) into templates :math:`m, m'` and score
        :math:`\|v - m\|^2 - \|v - m'\|^2`.
    ``"constant-image"``
        for a constant image :math:`x` the interior of every channel of
        :math:`f_{\tilde\theta_1}(x)` is spatially constant *for every* :math:`\tilde\theta_1`
        (translation equivariance); score the relative spread of the interior values.

    Parameters
    ----------
    model
        The clipped victim (never modified).
    x, x_prime
        Two single images, shape ``(3, 32, 32)`` or ``(1, 3, 32, 32)``, floats in [0, 1].
    epsilon, clip_bound, at, policy, calibration
        The defence, as in :func:`perturb_parameters`.
    trials
        Runs per input (half choose the threshold, half evaluate it).
    """
    model, at = _check_model(model), _check_at(at)
    epsilon = check_epsilon(epsilon)
    check_policy(policy)
    check_calibration(calibration)
    trials = check_positive_int("trials", trials)
    if trials < 8:
        raise ValueError(f"trials must be >= 8, got {trials}")
    check_positive_int("template_queries", template_queries)
    check_positive_int("seed", seed, allow_zero=True)
    batch_size = check_positive_int("batch_size", batch_size)
    choices = ("auto", "requery", "template", "constant-image")
    if distinguisher not in choices:
        raise ValueError(f"distinguisher must be one of {choices}, got {distinguisher!r}")
    if distinguisher == "auto":
        distinguisher = "requery" if policy == "once" else "template"
    if distinguisher == "requery" and policy != "once":
        raise ValueError("distinguisher='requery' needs policy='once' (a fixed deployed model)")
    inputs = []
    for name, img in (("x", x), ("x_prime", x_prime)):
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(img).__name__}")
        img = img.unsqueeze(0) if img.dim() == 3 else img
        check_images(img, name=name)
        if img.shape[0] != 1:
            raise ValueError(f"{name} must be a single image, got a batch of {img.shape[0]}")
        if not bool(torch.isfinite(img).all()):
            raise ValueError(f"{name} must be finite")
        inputs.append(img.float())
    margin = interior_margin(at)
    side = feature_shape(at)[1]
    if distinguisher == "constant-image":
        if 2 * margin >= side:
            raise ValueError(f"split {at} has no padding-free interior; use at <= 5")
        if float(inputs[0].amax() - inputs[0].amin()) != 0.0:
            raise ValueError("distinguisher='constant-image' needs a constant image x")
    check_clipped(model, at=at, clip_bound=clip_bound)
    d = sum(p.numel() for p in device_part_parameters(model, at=at))
    scale = noise_scale(epsilon=epsilon, clip_bound=clip_bound, num_parameters=d,
                        calibration=calibration)
    base = split(copy.deepcopy(model).eval(), at=at).device

    def score(v: torch.Tensor, refs: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if distinguisher == "constant-image":
            return _interior_spread(v, margin)
        v = v.double().reshape(v.shape[0], -1)
        r0, r1 = (r.double().reshape(r.shape[0], -1) for r in refs)
        return ((v - r0) ** 2).sum(1) - ((v - r1) ** 2).sum(1)

    scores = [[], []]
    if policy == "once":
        both = torch.cat(inputs)
        for which in (0, 1):
            for start in range(0, trials, 25):
                runs = min(trials, start + 25) - start
                gen = torch.Generator().manual_seed(_seed_for(seed, which, start))
                out = _deployments_forward(base, at, scale, runs, gen, both)  # (runs, 2, C, H, W)
                # the vehicle's inference and the attacker's API queries run through the same
                # deployed (deterministic) model: v is the answer for x_which
                s = score(out[:, which], (out[:, 0], out[:, 1]))
                scores[which].extend(s.tolist())
    else:
        fresh = split(perturb_parameters(model, epsilon=epsilon, clip_bound=clip_bound, at=at,
                                         policy="fresh", calibration=calibration,
                                         seed=_seed_for(seed, 2, 0)), at=at).device
        refs = None
        if distinguisher == "template":
            refs = tuple(fresh(inp.expand(template_queries, -1, -1, -1)).mean(0, keepdim=True)
                         for inp in inputs)
        for which in (0, 1):
            fresh[0].source.generator.manual_seed(_seed_for(seed, which, 1))
            done = 0
            while done < trials:
                n = min(batch_size, trials - done)
                v = fresh(inputs[which].expand(n, -1, -1, -1).contiguous())
                scores[which].extend(score(v, refs).tolist())
                done += n
    result = audit_scores(np.array(scores[0]), np.array(scores[1]), alpha=alpha)
    result.notes.update(policy=policy, calibration=calibration, epsilon=epsilon, at=at,
                        distinguisher=distinguisher, scale=scale, num_parameters=d)
    return result


# ----------------------------------------------------------------------------------------------
# spears against shields: Table 2, Fig. 4 and the privacy–utility frontier
# ----------------------------------------------------------------------------------------------

def _adaptive_config():
    from .attack import InverseConfig

    return InverseConfig(max_epochs=10, patience=2, batch_size=32, lr=3e-3)


#: The adaptive attacker's budget in Chapter 3: the paper's two-deconvolution inverse, trained
#: with Adam (learning rate 3·10⁻³, batches of 32) on :data:`ADAPTIVE_QUERIES` query images for
#: at most 10 epochs (plateau rule of :class:`coinfer.attack.InverseConfig`) — smaller than
#: Chapter 2's attacker so that the chapter can train one per defended deployment; Table 2
#: gives it a same-budget reference row against the undefended model.
ADAPTIVE_ATTACKER = _adaptive_config()
#: Number of attacker query images of the adaptive attacker (the first ones of Chapter 2's set).
ADAPTIVE_QUERIES = 800
#: Strength grids of the privacy–utility frontier (Sect. 3.7): parameter-noise budgets ε
#: (scale 2G/ε), output-Laplace scales, dropout rates.
FRONTIER_EPSILONS: tuple[float, ...] = (12.0, 20.0, 30.0, 45.0, 80.0, 300.0)
FRONTIER_SCALES: tuple[float, ...] = (0.2, 0.4, 0.7, 1.0, 1.6, 3.0)
FRONTIER_RATES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.98, 0.995)
#: Accuracies (as fractions of the undefended accuracy) at which the shields are compared.
FRONTIER_TARGETS: tuple[float, ...] = (0.9, 0.75, 0.5)


@dataclass(frozen=True)
class ShieldEvaluation:
    r"""One shield in place, attacked.

    Attributes
    ----------
    shield, label
        The shield (``None`` = no defence) and its short label.
    accuracy
        Top-1 accuracy of the co-inference pipeline on the evaluation images, computed by the edge
        part from the very features :math:`v` an eavesdropper intercepts.
    clean_api
        Metrics (:class:`coinfer.metrics.MetricSummary`) of the attacker that trained its inverse
        on the *clean* API (the paper's setting) and applies it to the intercepted :math:`v`.
    adaptive
        Metrics of the adaptive attacker, who trains its inverse by querying the *defended*
        device part (the deployed model, noise included), or ``None`` when not run.
    adaptive_inverse
        The adaptive attacker's :class:`coinfer.attack.InverseResult` (training history,
        ``stop_reason``), or ``None``.
    examples, examples_adaptive
        Reconstructions of the first ``keep`` evaluation images (clean-API / adaptive).
    """

    shield: Shield
    label: str
    accuracy: float
    clean_api: object
    adaptive: object | None
    adaptive_inverse: object | None
    examples: torch.Tensor
    examples_adaptive: torch.Tensor | None


def evaluate_shield(
    model: nn.Sequential,
    shield: Shield,
    *,
    eval_set: ImageSet,
    clean_inverse: nn.Module,
    at: int = 4,
    metric_images: int | None = None,
    attacker_images: torch.Tensor | None = None,
    adaptive_config=None,
    seed: int = 0,
    keep: int = 8,
    clean_features: torch.Tensor | None = None,
    progress: bool = False,
) -> ShieldEvaluation:
    r"""Deploy ``shield``, run the vehicle on ``eval_set``, and attack the intercepted features.

    1. :func:`apply_shield` (seeded by ``seed``) gives the defended pipeline;
    2. the vehicle computes :math:`v = \tilde f_{\theta_1}(x)` for every evaluation image (a fresh
       draw per image for fresh-noise shields); the edge classifies :math:`v` (``accuracy``);
    3. the clean-API attacker reconstructs :math:`g_\omega(v)` with ``clean_inverse`` (trained by
       Algorithm 1 on the undefended API — Chapter 2's attacker);
    4. with ``attacker_images`` and ``adaptive_config`` given, the adaptive attacker runs
       Algorithm 1 (:func:`coinfer.attack.black_box_attack`) against
       :class:`coinfer.attack.QueryAccess` of the *defended* device part.

    Metrics are computed on the first ``metric_images`` evaluation images (all by default).
    ``clean_features`` (the undefended device features of ``eval_set``) lets output shields skip
    recomputing the device part; the result is the same.
    """
    from .attack import InverseConfig, QueryAccess, black_box_attack, reconstruct
    from .metrics import reconstruction_metrics

    if not isinstance(eval_set, ImageSet):
        raise TypeError(f"eval_set must be an ImageSet, got {type(eval_set).__name__}")
    label = shield_label(shield)
    n_metric = len(eval_set) if metric_images is None else min(
        check_positive_int("metric_images", metric_images), len(eval_set))
    check_positive_int("keep", keep)
    if (attacker_images is None) != (adaptive_config is None):
        raise ValueError("pass both attacker_images and adaptive_config (adaptive attacker) "
                         "or neither")
    if adaptive_config is not None and not isinstance(adaptive_config, InverseConfig):
        raise TypeError(f"adaptive_config must be an InverseConfig, got "
                        f"{type(adaptive_config).__name__}")
    pipeline = apply_shield(model, shield, at=at, seed=seed)
    with torch.no_grad():
        if clean_features is not None and isinstance(shield, (OutputNoise, OutputDropout)):
            # the device part is the clean one followed by the shield layer: apply the layer to
            # the clean features, in the batches device_features would use (same noise stream)
            if clean_features.shape[0] != len(eval_set):
                raise ValueError(f"clean_features must hold one row per evaluation image, got "
                                 f"{clean_features.shape[0]} for {len(eval_set)}")
            layer = pipeline.device[-1]
            v = torch.cat([layer(clean_features[s:s + 500]) for s in
                           range(0, len(eval_set), 500)])
        else:
            v = device_features(pipeline.device, eval_set.images)
        logits = torch.cat([pipeline.edge(v[s:s + 500]) for s in range(0, len(v), 500)])
    acc = float((logits.argmax(1) == eval_set.labels).float().mean())
    originals = to_float(eval_set.images[:n_metric]) if eval_set.images.dtype == torch.uint8 \
        else eval_set.images[:n_metric]
    recon = reconstruct(clean_inverse, v[:n_metric])
    clean_metrics = reconstruction_metrics(originals, recon)
    adaptive = adaptive_inverse = examples_adaptive = None
    if adaptive_config is not None:
        oracle = QueryAccess(pipeline.device, num_threads=adaptive_config.num_threads)
        # The attacker standardises the features by one global scale, the standard deviation
        # of the features it intercepted (parameter noise can blow the activations up by orders
        # of magnitude, which would otherwise stall Adam); its queries are scaled alike.
        scale = float(v.float().std()) or 1.0
        result = black_box_attack(lambda images: oracle(images) / scale, attacker_images,
                                  v[:n_metric] / scale, at=at, config=adaptive_config,
                                  progress=progress)
        adaptive = reconstruction_metrics(originals, result.reconstructions)
        adaptive_inverse = result.inverse
        examples_adaptive = result.reconstructions[:keep].clone()
    return ShieldEvaluation(shield, label, acc, clean_metrics, adaptive, adaptive_inverse,
                            recon[:keep].clone(), examples_adaptive)


def defence_table(
    model: nn.Sequential,
    *,
    clip_bound: float,
    eval_set: ImageSet,
    clean_inverse: nn.Module,
    epsilons: Sequence[float] = (5.0, 10.0, 500.0),
    policies: Sequence[str] = ("once", "fresh"),
    calibration: str = "per-coordinate",
    at: int = 4,
    metric_images: int | None = None,
    attacker_images: torch.Tensor | None = None,
    adaptive_config=None,
    seed: int = 0,
    progress: bool = False,
) -> list[ShieldEvaluation]:
    r"""Table 2 of Wu et al. (2021), extended: no defence, then every (policy, :math:`\epsilon`).

    Each row is :func:`evaluate_shield` with ``ParameterNoise(ε, G, policy, calibration)``; the
    deployments are seeded by ``seed`` (the same noise draw for every :math:`\epsilon` of a
    policy, scaled).  With ``attacker_images``/``adaptive_config`` every row also runs the
    adaptive attacker; the no-defence row then trains it against the clean API, a reference with
    the adaptive attacker's own (smaller) training budget.
    """
    epsilons = [check_epsilon(e, name="epsilons[i]") for e in epsilons]
    for p in policies:
        check_policy(p)
    rows = []
    shields: list[Shield] = [None] + [ParameterNoise(e, clip_bound, p, calibration)
                                      for p in policies for e in epsilons]
    for shield in tqdm(shields, desc="Table 2", disable=not progress or None):
        rows.append(evaluate_shield(model, shield, eval_set=eval_set, clean_inverse=clean_inverse,
                                    at=at, metric_images=metric_images,
                                    attacker_images=attacker_images,
                                    adaptive_config=adaptive_config, seed=seed))
    return rows


def shield_sweep(
    model: nn.Sequential,
    shields: Sequence[Shield],
    *,
    eval_set: ImageSet,
    clean_inverse: nn.Module,
    at: int = 4,
    metric_images: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[ShieldEvaluation]:
    """:func:`evaluate_shield` (clean-API attacker only) for each shield of a strength grid."""
    shields = list(shields)
    clean = None
    if any(isinstance(s, (OutputNoise, OutputDropout)) for s in shields):
        clean = device_features(split(model, at=_check_at(at)).device, eval_set.images)
    return [evaluate_shield(model, s, eval_set=eval_set, clean_inverse=clean_inverse, at=at,
                            metric_images=metric_images, seed=seed, clean_features=clean)
            for s in tqdm(shields, desc="shields", disable=not progress or None)]


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
