r"""Spears against shields (Sect. 3.5): accuracy, device features, Table 2 and Fig. 4.

:func:`accuracy` and :func:`device_features` run a (defended) pipeline; :func:`fixed_subset`
fixes the evaluation images.  :func:`evaluate_shield` deploys one shield and attacks the
intercepted features with the clean-API attacker of Chapter 2 and, optionally, the adaptive
attacker (:data:`ADAPTIVE_ATTACKER`, :data:`ADAPTIVE_QUERIES`); :func:`defence_table` is
Table 2 of Wu et al. (2021), extended, and :func:`shield_sweep` evaluates a strength grid (the
privacy–utility frontier of Sect. 3.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..config import (cached_result, check_positive_int, holds_random_state, module_digest,
                      progress_bar, tensors_digest)
from ..data import ImageSet, to_float
from ..models import SplitModel, check_images, split
from ..models import check_split_point as _check_at
from ..privacy import check_epsilon, check_policy
from .mechanisms import (OutputDropout, OutputNoise, ParameterNoise, Shield, apply_shield,
                         shield_label)

__all__ = [
    "accuracy",
    "device_features",
    "fixed_subset",
    "ADAPTIVE_ATTACKER",
    "ADAPTIVE_QUERIES",
    "ShieldEvaluation",
    "evaluate_shield",
    "defence_table",
    "ReplicatedRow",
    "replicated_defence_table",
    "shield_sweep",
]


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
    A model without a random stream of its own gives the same accuracy every time, so that
    result is replayed from the result cache (:func:`coinfer.config.cached_result`).
    """
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("data must contain at least one image")
    check_positive_int("batch_size", batch_size)
    parts = [pipeline.device, pipeline.edge] if isinstance(pipeline, SplitModel) else [pipeline]
    if all(isinstance(p, nn.Module) for p in parts) and not any(map(holds_random_state, parts)):
        payload = {"parts": [module_digest(p) for p in parts], "batch_size": batch_size,
                   "data": tensors_digest([data.images, data.labels]),
                   "shape": list(data.images.shape),
                   "device": next(parts[0].parameters()).device.type}
        return cached_result("accuracy", payload,
                             lambda: _accuracy(pipeline, data, batch_size=batch_size))
    return _accuracy(pipeline, data, batch_size=batch_size)


def _accuracy(pipeline, data: ImageSet, *, batch_size: int) -> float:
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
# spears against shields: Table 2 and Fig. 4
# ----------------------------------------------------------------------------------------------

def _adaptive_config():
    from ..attack import InverseConfig

    return InverseConfig(max_epochs=10, patience=2, batch_size=32, lr=3e-3)


#: The adaptive attacker's budget in Chapter 3: the paper's two-deconvolution inverse, trained
#: with Adam (learning rate 3·10⁻³, batches of 32) on :data:`ADAPTIVE_QUERIES` query images for
#: at most 10 epochs (plateau rule of :class:`coinfer.attack.InverseConfig`) — smaller than
#: Chapter 2's attacker so that the chapter can train one per defended deployment; Table 2
#: gives it a same-budget reference row against the undefended model.
ADAPTIVE_ATTACKER = _adaptive_config()
#: Number of attacker query images of the adaptive attacker (the first ones of Chapter 2's set).
ADAPTIVE_QUERIES = 800


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
    4. with ``attacker_images`` and ``adaptive_config`` given, the adaptive attacker
       (:func:`coinfer.attack.adaptive_attack`) runs Algorithm 1 against query access to the
       *defended* device part; its inverse is cached per deployment.

    Metrics are computed on the first ``metric_images`` evaluation images (all by default).
    ``clean_features`` (the undefended device features of ``eval_set``) lets output shields skip
    recomputing the device part; the result is the same.

    The evaluation is deterministic given its arguments, so it goes through the result cache
    (:func:`coinfer.config.cached_result`, keyed by the weights of ``model`` and
    ``clean_inverse``, the images, the shield, the attacker's settings and ``seed``): a chapter
    executed again replays it.
    """
    from ..attack import check_adaptive_attacker

    if not isinstance(eval_set, ImageSet):
        raise TypeError(f"eval_set must be an ImageSet, got {type(eval_set).__name__}")
    shield_label(shield)  # checks the shield
    n_metric = len(eval_set) if metric_images is None else min(
        check_positive_int("metric_images", metric_images), len(eval_set))
    check_positive_int("keep", keep)
    check_adaptive_attacker(attacker_images, adaptive_config)
    check_positive_int("seed", seed, allow_zero=True)
    payload = {
        "model": module_digest(model), "shield": repr(shield), "at": at,
        "eval_set": tensors_digest([eval_set.images, eval_set.labels]),
        "clean_inverse": module_digest(clean_inverse), "metric_images": n_metric,
        "attacker_images": None if attacker_images is None else tensors_digest([attacker_images]),
        "adaptive_config": repr(adaptive_config), "seed": seed, "keep": keep,
        "device": next(model.parameters()).device.type,
    }
    return cached_result("shield", payload, lambda: _evaluate_shield(
        model, shield, eval_set=eval_set, clean_inverse=clean_inverse, at=at, n_metric=n_metric,
        attacker_images=attacker_images, adaptive_config=adaptive_config, seed=seed, keep=keep,
        clean_features=clean_features, progress=progress))


def _evaluate_shield(model, shield, *, eval_set, clean_inverse, at, n_metric, attacker_images,
                     adaptive_config, seed, keep, clean_features, progress) -> ShieldEvaluation:
    from ..attack import adaptive_attack, reconstruct
    from ..metrics import reconstruction_metrics

    label = shield_label(shield)
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
        result = adaptive_attack(pipeline.device, attacker_images, v, at=at,
                                 config=adaptive_config, progress=progress)
        adaptive = reconstruction_metrics(originals, result.reconstructions[:n_metric])
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
    for shield in progress_bar(shields, desc="Table 2", progress=progress):
        rows.append(evaluate_shield(model, shield, eval_set=eval_set, clean_inverse=clean_inverse,
                                    at=at, metric_images=metric_images,
                                    attacker_images=attacker_images,
                                    adaptive_config=adaptive_config, seed=seed))
    return rows


@dataclass(frozen=True)
class ReplicatedRow:
    r"""One row of Table 2 over several independent noise draws (deployments).

    Attributes
    ----------
    label, shield
        As in :class:`ShieldEvaluation`.
    seeds, adaptive_seeds
        The deployment seeds of the clean-API columns and of the adaptive attacker.
    accuracy
        ``accuracy[i]``: accuracy of deployment ``seeds[i]``.
    clean_api, adaptive
        ``{"mse"|"psnr"|"ssim": array}``: the mean over the evaluation images of each metric,
        one value per deployment (``seeds`` / ``adaptive_seeds``); ``adaptive`` is empty when the
        adaptive attacker was not run.
    first
        The full :class:`ShieldEvaluation` of the first seed (per-image metrics, examples).
    """

    label: str
    shield: Shield
    seeds: tuple[int, ...]
    adaptive_seeds: tuple[int, ...]
    accuracy: np.ndarray
    clean_api: dict
    adaptive: dict
    first: ShieldEvaluation

    def summary(self, column: str, metric: str | None = None):
        """:class:`coinfer.metrics.MeanCI` over the draws of ``"accuracy"`` or of a metric of
        ``"clean_api"`` / ``"adaptive"`` (mean and 95 % Student-t interval; one draw: no interval)."""
        from ..metrics import mean_ci

        if column == "accuracy":
            return mean_ci(self.accuracy)
        if column not in ("clean_api", "adaptive"):
            raise ValueError(f"column must be 'accuracy', 'clean_api' or 'adaptive', got {column!r}")
        values = getattr(self, column)
        if metric not in values:
            raise ValueError(f"metric must be one of {sorted(values)}, got {metric!r}")
        return mean_ci(values[metric])


def replicated_defence_table(
    model: nn.Sequential,
    *,
    clip_bound: float,
    eval_set: ImageSet,
    clean_inverse: nn.Module,
    epsilons: Sequence[float] = (5.0, 10.0, 500.0),
    policies: Sequence[str] = ("once", "fresh"),
    calibration: str = "per-coordinate",
    at: int = 4,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    attacker_images: torch.Tensor | None = None,
    adaptive_config=None,
    adaptive_seeds: Sequence[int] = (0,),
    progress: bool = False,
) -> list[ReplicatedRow]:
    r""":func:`defence_table` repeated over independent noise draws: Table 2 with intervals.

    Every (policy, :math:`\epsilon`) row is deployed once per seed of ``seeds`` (the clean-API
    attacker and the accuracy, cheap) and, with ``attacker_images``/``adaptive_config``, attacked
    by a new adaptive attacker for each seed of ``adaptive_seeds`` (a subset of ``seeds``).  The
    no-defence row involves no noise; it is evaluated once, with seed ``seeds[0]`` (its adaptive
    attacker included), and its per-draw arrays have one entry.  Draw ``seeds[i]`` of every row
    of a policy is the same standard Laplace vector, scaled (common random numbers, as in
    :func:`defence_table`).
    """
    seeds = tuple(check_positive_int("seeds[i]", s, allow_zero=True) for s in seeds)
    adaptive_seeds = tuple(check_positive_int("adaptive_seeds[i]", s, allow_zero=True)
                           for s in adaptive_seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
    if not set(adaptive_seeds) <= set(seeds):
        raise ValueError(f"adaptive_seeds {adaptive_seeds} must be a subset of seeds {seeds}")
    run_adaptive = adaptive_config is not None
    epsilons = [check_epsilon(e, name="epsilons[i]") for e in epsilons]
    for p in policies:
        check_policy(p)
    shields: list[Shield] = [None] + [ParameterNoise(e, clip_bound, p, calibration)
                                      for p in policies for e in epsilons]
    rows = []
    for shield in progress_bar(shields, desc="Table 2 (draws)", progress=progress):
        row_seeds = seeds[:1] if shield is None else seeds
        row_adaptive = (row_seeds if shield is None else adaptive_seeds) if run_adaptive else ()
        evals = {}
        for s in row_seeds:
            with_adaptive = s in row_adaptive
            evals[s] = evaluate_shield(
                model, shield, eval_set=eval_set, clean_inverse=clean_inverse, at=at,
                attacker_images=attacker_images if with_adaptive else None,
                adaptive_config=adaptive_config if with_adaptive else None, seed=s)
        metrics = ("mse", "psnr", "ssim")
        clean = {m: np.array([evals[s].clean_api.mean(m) for s in row_seeds]) for m in metrics}
        adaptive = {m: np.array([evals[s].adaptive.mean(m) for s in row_adaptive])
                    for m in metrics} if row_adaptive else {}
        first = evals[row_seeds[0]]
        rows.append(ReplicatedRow(first.label, shield, row_seeds, tuple(row_adaptive),
                                  np.array([evals[s].accuracy for s in row_seeds]), clean,
                                  adaptive, first))
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
            for s in progress_bar(shields, desc="shields", progress=progress)]
