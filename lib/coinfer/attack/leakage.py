"""How much of the class leaks (Sect. 2.8): an independent judge and a direct probe of the features.

Judging reconstructions with the victim's own classifier flatters the attack (the victim is the
network whose features were inverted) and is not something the attacker can do.  Two fairer
measures:

* :func:`independent_judge` — a classifier the attacker trains *itself* on its own labelled
  images (a small CNN of its own design, :class:`JudgeCNN`), used to classify the
  reconstructions with :func:`~coinfer.attack.class_leak`;
* :func:`train_feature_probe` — the direct measure: a small classifier trained on the features
  :math:`f_{\\theta_1}(X)` of the attacker's labelled images, scored on the intercepted
  :math:`v_0` (:func:`probe_accuracy`).  A reconstruction is a function of :math:`v_0`, so what
  a classifier can read from the reconstructions is information the features carry too; the
  probe reads it from :math:`v_0` directly, without the detour through an image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..config import (cache_dir, cached_result, check_positive_float, check_positive_int, file_lock,
                      payload_digest, tensors_digest)
from ..data import ImageSet
from ..models import feature_shape
from ..train import fixed_threads
from ._checks import _check_at, _check_features, _image_tensor, _to_float
from .black_box import _tensor_digest
from .threat import _check_oracle

__all__ = ["JudgeConfig", "JUDGE", "JudgeCNN", "JudgeResult", "independent_judge", "FeatureProbe", "ProbeResult", "train_feature_probe",
           "probe_features", "probe_accuracy"]

@dataclass(frozen=True)
class JudgeConfig:
    """How the attacker trains its own classifier (:func:`independent_judge`).

    Attributes
    ----------
    epochs
        Passes over the labelled images (a fixed count).
    batch_size, lr
        Adam's mini-batch size and learning rate.
    seed
        Seeds the initial weights and the mini-batch order.
    """

    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 7

    def __post_init__(self):
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_float("lr", self.lr)
        check_positive_int("seed", self.seed, allow_zero=True)


#: The chapter's judge: 15 epochs, batches of 64, Adam at 2·10⁻³, seed 7.
JUDGE = JudgeConfig()


class JudgeCNN(nn.Sequential):
    """The attacker's own small classifier — deliberately *not* the victim's architecture.

    Three blocks ``conv3×3 → ReLU → maxpool2`` with 16, 32 and 64 channels, then
    ``flatten → Linear(1024→128) → ReLU → Linear(128→num_classes)``: about a twentieth of the
    victim's multiply-adds (the victim has six 64-channel convolutions).
    """

    def __init__(self, num_classes: int = 43):
        check_positive_int("num_classes", num_classes)
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (16, 32, 64):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        super().__init__(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
                         nn.Linear(128, num_classes))


class JudgeResult(NamedTuple):
    """A trained :class:`JudgeCNN`, its per-epoch training loss, its config, and whether cached."""

    model: JudgeCNN
    history: list[float]
    config: JudgeConfig
    cache_hit: bool = False


def _train_judge(labelled: ImageSet, config: JudgeConfig) -> tuple[JudgeCNN, list[float]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = JudgeCNN()
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    x_all, y_all = labelled.images, labelled.labels
    history = []
    with fixed_threads(1):
        model.train()
        for _ in range(config.epochs):
            order = torch.randperm(len(y_all), generator=generator)
            total = 0.0
            for s in range(0, len(order), config.batch_size):
                idx = order[s:s + config.batch_size]
                loss = F.cross_entropy(model(_to_float(x_all[idx])), y_all[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / len(order))
    return model.eval(), history


def independent_judge(labelled: ImageSet, *, config: JudgeConfig = JUDGE) -> JudgeResult:
    """A classifier the attacker trains itself on its own labelled images (cached on disk).

    A :class:`JudgeCNN` trained by Adam on the cross-entropy for ``config.epochs`` epochs on
    ``labelled`` (CPU, one thread, seeded).  It shares nothing with the victim but the data
    *distribution*: neither the architecture, nor the weights, nor the training images' draw.
    The model is cached in ``cache_dir("judges")``, keyed by the configuration, a digest of the
    images and labels and the torch version.
    """
    if not isinstance(labelled, ImageSet):
        raise TypeError(f"labelled must be an ImageSet, got {type(labelled).__name__}")
    if not isinstance(config, JudgeConfig):
        raise TypeError(f"config must be a JudgeConfig, got {type(config).__name__}")
    _image_tensor(labelled.images, "labelled.images")
    payload = {"config": dataclasses.asdict(config), "images": _tensor_digest(labelled.images),
               "labels": _tensor_digest(labelled.labels),
               "torch": torch.__version__.split("+")[0], "format": 1}
    digest = payload_digest(payload)
    path = cache_dir("judges") / f"judge-{digest}.pt"
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                model = JudgeCNN()
                model.load_state_dict(blob["state_dict"])
                return JudgeResult(model.eval(), list(blob["history"]), config, True)
            except Exception:  # a corrupt checkpoint is retrained, not crashed on
                path.unlink(missing_ok=True)
        model, history = _train_judge(labelled, config)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": model.state_dict(), "history": history}, tmp)
        tmp.replace(path)
        return JudgeResult(model, history, config, False)


class FeatureProbe(nn.Sequential):
    """A classifier on split-``at`` features: average pool to ``pool``×``pool``, then an MLP.

    ``AdaptiveAvgPool2d(pool) → Flatten → Linear(64·pool², hidden) → ReLU → Linear(hidden,
    num_classes)``.  The pooling (a fixed 4×4 or 2×2 average at splits 1–4, the identity at
    splits 5–6 where the side is already 8) keeps the probe small; it can only *lose* information,
    so the probe's accuracy is a lower bound on what the features reveal.
    """

    def __init__(self, at: int, *, pool: int = 8, hidden: int = 256, num_classes: int = 43):
        at = _check_at(at)
        check_positive_int("pool", pool)
        check_positive_int("hidden", hidden)
        check_positive_int("num_classes", num_classes)
        channels, side, _ = feature_shape(at)
        if pool > side:
            raise ValueError(f"pool must be at most the feature side {side} at split {at}, "
                             f"got {pool}")
        super().__init__(nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
                         nn.Linear(channels * pool * pool, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
        self.at = at
        self.pool = pool


class ProbeResult(NamedTuple):
    """A trained :class:`FeatureProbe` and its per-epoch training loss (``history``)."""

    model: FeatureProbe
    history: list[float]


@torch.no_grad()
def probe_features(source: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor, images=None, *,
                   at: int, pool: int = 8, batch_size: int = 256) -> torch.Tensor:
    """Features average-pooled to ``pool``×``pool``, batch by batch (never the full maps at once).

    ``source`` is either an oracle (a :class:`~coinfer.attack.QueryAccess` or callable, then
    ``images`` are queried) or a tensor of features already captured (``images`` is ``None``).
    """
    at = _check_at(at)
    check_positive_int("batch_size", batch_size)
    if isinstance(source, torch.Tensor):
        if images is not None:
            raise ValueError("pass images only with an oracle, not with captured features")
        feats = _check_features(source, at)
        chunks = [F.adaptive_avg_pool2d(feats[s:s + batch_size].float(), pool)
                  for s in range(0, feats.shape[0], batch_size)]
    else:
        _check_oracle(source)
        x = images.images if isinstance(images, ImageSet) else images
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"images must be a tensor or ImageSet, got {type(images).__name__}")
        chunks = []
        for s in range(0, x.shape[0], batch_size):
            v = _check_features(source(x[s:s + batch_size]).float(), at, "oracle outputs")
            chunks.append(F.adaptive_avg_pool2d(v, pool))
    return torch.cat(chunks)


def train_feature_probe(
    oracle: Callable[[torch.Tensor], torch.Tensor],
    labelled: ImageSet,
    *,
    at: int,
    pool: int = 8,
    hidden: int = 256,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> ProbeResult:
    """Train a :class:`FeatureProbe` on :math:`(f_{\\theta_1}(x_i), y_i)` of the attacker's images.

    The attacker queries the device model with its labelled images (query access suffices) and
    fits the probe by Adam on the cross-entropy for a fixed number of ``epochs``; the initial
    weights and the mini-batch order come from ``seed``.  Its accuracy on the intercepted
    :math:`v_0` (:func:`probe_accuracy`) measures the class information in the features
    directly.  The trained probe is kept in the result cache
    (:func:`coinfer.config.cached_result`), keyed by the oracle's pooled answers and the settings.
    """
    _check_oracle(oracle)
    if not isinstance(labelled, ImageSet):
        raise TypeError(f"labelled must be an ImageSet, got {type(labelled).__name__}")
    check_positive_int("epochs", epochs)
    check_positive_float("lr", lr)
    check_positive_int("batch_size", batch_size)
    check_positive_int("seed", seed, allow_zero=True)
    pooled = probe_features(oracle, labelled, at=at, pool=pool)
    labels = labelled.labels
    # the probe is a function of the pooled answers and the settings alone: cached on them
    payload = {"pooled": tensors_digest([pooled]), "shape": list(pooled.shape),
               "labels": tensors_digest([labels]), "at": at, "pool": pool, "hidden": hidden,
               "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    return cached_result("feature-probe", payload, lambda: _train_probe(
        pooled, labels, at=at, pool=pool, hidden=hidden, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed))


def _train_probe(pooled, labels, *, at, pool, hidden, epochs, lr, batch_size, seed) -> ProbeResult:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureProbe(at, pool=pool, hidden=hidden)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    with fixed_threads(1):
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=generator)
            total = 0.0
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                loss = F.cross_entropy(model(pooled[idx]), labels[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / len(order))
    return ProbeResult(model.eval(), history)


@torch.no_grad()
def probe_accuracy(probe: ProbeResult | FeatureProbe, features: torch.Tensor,
                   labels: torch.Tensor) -> float:
    """Top-1 accuracy of a feature probe on intercepted features :math:`v_0` with true ``labels``."""
    model = probe.model if isinstance(probe, ProbeResult) else probe
    if not isinstance(model, FeatureProbe):
        raise TypeError(f"probe must be a ProbeResult or FeatureProbe, got {type(probe).__name__}")
    pooled = probe_features(features, at=model.at, pool=model.pool)
    if not isinstance(labels, torch.Tensor) or labels.shape != (pooled.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({pooled.shape[0]},)")
    return float((model(pooled).argmax(1) == labels).float().mean())
