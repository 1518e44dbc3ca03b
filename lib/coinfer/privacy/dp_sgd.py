r"""DP-SGD: differentially private training of the network itself (Sect. 3b.4 of the book).

DP-SGD (Abadi et al. 2016) protects the *training set* the principled way: at every step

1. sample a batch by including each of the :math:`N` examples independently with probability
   :math:`q` (Poisson sampling);
2. compute one gradient per example (:func:`per_example_gradients`, ``torch.func.vmap`` of
   ``torch.func.grad``) and scale each to :math:`\ell_2` norm at most :math:`C`
   (:func:`clip_per_example`);
3. add :math:`\mathcal N(0, \sigma^2 C^2 I)` to their sum, divide by :math:`qN`, and take an
   optimiser step (:func:`dp_sgd_step`).

Each step is a *subsampled Gaussian mechanism* with noise multiplier :math:`\sigma`.  Its Rényi
DP (Mironov 2017) at integer orders has a closed form (Mironov, Talwar & Zhang 2019, Sect. 3.3):
:func:`rdp_sampled_gaussian`; RDP composes by addition over steps, and :func:`rdp_to_dp` converts
to :math:`(\epsilon, \delta)` (Mironov 2017, Prop. 3).  :func:`dp_sgd_epsilon` is the resulting
accountant.  Opacus (``opacus.PrivacyEngine``) is the library practitioners use for all of this;
the book writes the few lines itself to show them.

:func:`train_dp_sgd` trains a linear classifier with DP-SGD on fixed, data-independent
features (:func:`random_conv_features`), and caches the result keyed by its settings and a hash of
the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special
from torch import nn

from ..config import cache_dir, check_positive_float, check_positive_int, file_lock, payload_digest
from ..data import to_float
from ..train import fixed_threads
from .gaussian import check_delta

__all__ = [
    "DEFAULT_ORDERS",
    "rdp_sampled_gaussian",
    "rdp_to_dp",
    "dp_sgd_epsilon",
    "per_example_gradients",
    "clip_per_example",
    "dp_sgd_step",
    "random_conv_features",
    "DPSGDConfig",
    "DPSGDResult",
    "train_dp_sgd",
]

#: Integer Rényi orders the accountant minimises over (Mironov et al.'s closed form needs integers).
DEFAULT_ORDERS = tuple(range(2, 257))


# ----------------------------------------------------------------------------------------------
# the RDP accountant
# ----------------------------------------------------------------------------------------------

def _check_orders(orders) -> np.ndarray:
    orders = np.asarray(list(orders))
    if orders.size == 0 or orders.dtype.kind not in "iu" or (orders < 2).any():
        raise ValueError(f"orders must be integers >= 2, got {orders.tolist()!r}")
    return orders.astype(int)


def _check_rate(q) -> float:
    q = check_positive_float("sampling_rate", q)
    if q > 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {q}")
    return q


def rdp_sampled_gaussian(sampling_rate: float, *, noise_multiplier: float,
                         orders: Sequence[int] = DEFAULT_ORDERS) -> np.ndarray:
    r"""Rényi DP of one step of the subsampled Gaussian mechanism, at integer orders :math:`\alpha`.

    Mironov, Talwar & Zhang (2019), Sect. 3.3: with sampling rate :math:`q` and noise multiplier
    :math:`\sigma` (noise :math:`\mathcal N(0, \sigma^2 C^2)` on a sum of gradients clipped to
    :math:`C`), the mechanism is :math:`(\alpha, \epsilon_\alpha)`-RDP with
    :math:`\epsilon_\alpha = \frac{1}{\alpha-1}\log A_\alpha` and

    .. math:: A_\alpha = \sum_{j=0}^{\alpha} \binom{\alpha}{j} (1-q)^{\alpha-j} q^j
              \exp\Big(\frac{j^2 - j}{2\sigma^2}\Big),

    which equals :math:`\mathbb E_{z\sim\mathcal N(0,\sigma^2)}[(1 - q + q\,e^{(2z-1)/(2\sigma^2)})^\alpha]`.
    For :math:`q = 1` it is the Gaussian mechanism's :math:`\alpha/(2\sigma^2)` (Mironov 2017).
    Computed in log space (``scipy.special.logsumexp``).
    """
    q = _check_rate(sampling_rate)
    sigma = check_positive_float("noise_multiplier", noise_multiplier)
    orders = _check_orders(orders)
    out = np.empty(orders.size)
    for n, alpha in enumerate(orders):
        if q == 1.0:
            out[n] = alpha / (2 * sigma ** 2)
            continue
        j = np.arange(alpha + 1)
        log_binom = special.gammaln(alpha + 1) - special.gammaln(j + 1) - special.gammaln(
            alpha - j + 1)
        terms = log_binom + (alpha - j) * math.log1p(-q) + j * math.log(q) + (j * j - j) / (
            2 * sigma ** 2)
        out[n] = special.logsumexp(terms) / (alpha - 1)
    return out


def rdp_to_dp(rdp: Sequence[float], *, orders: Sequence[int], delta: float) -> tuple[float, int]:
    r"""Convert an RDP curve to :math:`(\epsilon, \delta)`-DP (Mironov 2017, Proposition 3).

    An :math:`(\alpha, \rho_\alpha)`-RDP mechanism is :math:`(\rho_\alpha + \log(1/\delta)/(\alpha-1),
    \delta)`-DP for every order; returns the smallest such :math:`\epsilon` and its order.
    """
    orders = _check_orders(orders)
    rdp = np.asarray(rdp, dtype=float)
    if rdp.shape != orders.shape:
        raise ValueError(f"rdp must have one value per order ({orders.size}), got {rdp.shape}")
    if (rdp < 0).any() or np.isnan(rdp).any():
        raise ValueError("rdp values must be >= 0 (RDP of a mechanism is non-negative)")
    delta = check_delta(delta)
    eps = rdp + math.log(1 / delta) / (orders - 1)
    i = int(np.argmin(eps))
    return float(eps[i]), int(orders[i])


def dp_sgd_epsilon(*, sampling_rate: float, noise_multiplier: float, steps: int, delta: float,
                   orders: Sequence[int] = DEFAULT_ORDERS) -> float:
    r"""The :math:`\epsilon` of ``steps`` DP-SGD steps at :math:`\delta`: RDP accountant.

    RDP composes additively (Mironov 2017, Prop. 1): ``steps`` × :func:`rdp_sampled_gaussian`,
    then :func:`rdp_to_dp`.  With ``noise_multiplier = 0`` (no noise) returns ``inf``.
    """
    steps = check_positive_int("steps", steps)
    if noise_multiplier == 0:
        return math.inf
    rdp = steps * rdp_sampled_gaussian(sampling_rate, noise_multiplier=noise_multiplier,
                                       orders=orders)
    return rdp_to_dp(rdp, orders=orders, delta=delta)[0]


# ----------------------------------------------------------------------------------------------
# per-example gradients, clipping, the noisy step
# ----------------------------------------------------------------------------------------------

def per_example_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor
                          ) -> dict[str, torch.Tensor]:
    r"""One cross-entropy gradient per example: ``{name: (n, *param.shape)}``.

    ``torch.func.vmap`` over ``torch.func.grad`` of the loss of a single example, evaluated with
    ``torch.func.functional_call`` at the model's current parameters (the model has no batch
    statistics: DP-SGD needs per-example independence, so no batch norm).  For a bare
    ``nn.Linear`` the closed form :math:`(\mathrm{softmax}(z_i) - e_{y_i})\,x_i^\top` is used
    (the tests check that it equals the ``vmap`` path).
    """
    from torch.func import functional_call, grad, vmap

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels must have the same length, got {images.shape[0]} "
                         f"and {labels.shape[0]}")
    if type(model) is nn.Linear:
        # closed form, same numbers as the vmap path: dL/dW_i = (softmax(z_i) - e_{y_i}) x_i^T
        with torch.no_grad():
            r = F.softmax(model(images), dim=1)
            r[torch.arange(labels.shape[0]), labels] -= 1.0
            out = {"weight": r.unsqueeze(2) * images.unsqueeze(1)}
            if model.bias is not None:
                out["bias"] = r
        return out
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, images, labels)


def clip_per_example(grads: dict[str, torch.Tensor], *, max_norm: float
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    r"""Scale every example's whole gradient to :math:`\ell_2` norm :math:`\le C`: :math:`g_i \min(1, C/\lVert g_i\rVert_2)`.

    The clipping step of DP-SGD (Abadi et al. 2016, Algorithm 1) — part of the mechanism, which
    is what bounds the sensitivity of the gradient sum to :math:`C`.  Returns the clipped
    gradients and the per-example norms before clipping.
    """
    max_norm = check_positive_float("max_norm", max_norm)
    if not grads:
        raise ValueError("grads must hold at least one parameter's gradients")
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)
    norms = flat.norm(dim=1)
    factor = (max_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
    clipped = {k: g * factor.view(-1, *([1] * (g.dim() - 1))) for k, g in grads.items()}
    return clipped, norms


def dp_sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                labels: torch.Tensor, *, max_norm: float, noise_multiplier: float,
                expected_batch_size: float, generator: torch.Generator) -> float:
    r"""One DP-SGD step (Abadi et al. 2016, Algorithm 1) on a Poisson-sampled batch.

    Sets ``p.grad`` to :math:`\big(\sum_i \bar g_i + \mathcal N(0, \sigma^2C^2 I)\big)/(qN)` with
    :math:`\bar g_i` the clipped per-example gradients, then calls ``optimizer.step()``.  The
    divisor is the *expected* batch size :math:`qN`, not the realised one, which would leak the
    batch size.  ``noise_multiplier = 0`` gives clipped SGD without noise (not private).
    Returns the mean per-example norm before clipping (``nan`` for an empty batch).
    """
    check_positive_float("noise_multiplier", noise_multiplier, allow_zero=True)
    expected_batch_size = check_positive_float("expected_batch_size", expected_batch_size)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    named = dict(model.named_parameters())
    if images.shape[0] > 0 and type(model) is nn.Linear and model.bias is not None:
        # the same clipped sum without materialising per-example gradients ("ghost clipping"):
        # ||g_i||^2 = ||r_i||^2 (||x_i||^2 + 1) for g_i = r_i [x_i^T, 1]
        with torch.no_grad():
            r = F.softmax(model(images), dim=1)
            r[torch.arange(labels.shape[0]), labels] -= 1.0
            norms = r.norm(dim=1) * (images.pow(2).sum(1) + 1.0).sqrt()
            rf = r * (max_norm / norms.clamp_min(1e-12)).clamp(max=1.0).unsqueeze(1)
            sums = {"weight": rf.T @ images, "bias": rf.sum(0)}
        mean_norm = float(norms.mean())
    elif images.shape[0] > 0:
        clipped, norms = clip_per_example(per_example_gradients(model, images, labels),
                                          max_norm=max_norm)
        sums = {k: g.sum(0) for k, g in clipped.items()}
        mean_norm = float(norms.mean())
    else:
        sums = {k: torch.zeros_like(p) for k, p in named.items()}
        mean_norm = math.nan
    for k, p in named.items():
        g = sums[k]
        if noise_multiplier > 0:
            g = g + torch.randn(p.shape, generator=generator).to(p) * (noise_multiplier * max_norm)
        p.grad = (g / expected_batch_size).detach()
    optimizer.step()
    return mean_norm


# ----------------------------------------------------------------------------------------------
# data-independent features and the training loop
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def random_conv_features(images: torch.Tensor, *, channels: int = 32, seed: int = 0,
                         batch_size: int = 1000) -> torch.Tensor:
    r"""Fixed *random* convolutional features of 32×32 images, one unit-:math:`\ell_2` vector per image.

    conv3×3(3→c) · ReLU · maxpool2 · conv3×3(c→c) · ReLU · average-pool to 4×4 · flatten
    (:math:`16c` numbers), then each vector divided by its :math:`\ell_2` norm.  The weights are
    He-normal draws from ``torch.Generator(seed)`` and the normalisation is per image, so the
    feature map depends on no data: training a classifier on these features with DP-SGD gives a
    guarantee for the whole pipeline.  (Fixed, data-independent features are what makes DP
    training work at small budgets; Tramèr & Boneh 2021 use scattering transforms.)
    """
    channels = check_positive_int("channels", channels)
    check_positive_int("seed", seed, allow_zero=True)
    check_positive_int("batch_size", batch_size)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (
            3, 32, 32):
        raise ValueError("images must be a (n, 3, 32, 32) tensor")
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(channels, 3, 3, 3, generator=g) * math.sqrt(2 / 27)
    w2 = torch.randn(channels, channels, 3, 3, generator=g) * math.sqrt(2 / (9 * channels))
    out = []
    for s in range(0, images.shape[0], batch_size):
        x = images[s:s + batch_size]
        x = (to_float(x) if x.dtype == torch.uint8 else x.float()) - 0.5
        h = F.max_pool2d(F.relu(F.conv2d(x, w1, padding=1)), 2)
        h = F.adaptive_avg_pool2d(F.relu(F.conv2d(h, w2, padding=1)), 4).flatten(1)
        out.append(h / h.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return torch.cat(out)


@dataclass(frozen=True)
class DPSGDConfig:
    r"""Settings of one DP-SGD run (all of them enter the cache key).

    Attributes
    ----------
    noise_multiplier
        :math:`\sigma` (0: clipped SGD without noise — not private).
    max_grad_norm
        The clipping norm :math:`C`.
    expected_batch_size
        :math:`qN`; the sampling rate is ``expected_batch_size / N``.
    steps
        Number of noisy steps (fixed; never "for so many seconds").
    lr
        Adam's learning rate (Adam on the noisy gradients is post-processing: no privacy cost).
    delta
        The :math:`\delta` at which :math:`\epsilon` is reported.
    feature_scale
        The unit-norm features are multiplied by this number before the linear layer (a fixed
        constant: a temperature for the softmax).
    seed
        Seeds the initialisation, the Poisson sampling and the noise.
    """

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    expected_batch_size: int = 256
    steps: int = 500
    lr: float = 1e-2
    delta: float = 1e-5
    feature_scale: float = 10.0
    seed: int = 0

    def __post_init__(self):
        check_positive_float("noise_multiplier", self.noise_multiplier, allow_zero=True)
        check_positive_float("max_grad_norm", self.max_grad_norm)
        check_positive_int("expected_batch_size", self.expected_batch_size)
        check_positive_int("steps", self.steps)
        check_positive_float("lr", self.lr)
        check_delta(self.delta)
        check_positive_float("feature_scale", self.feature_scale)
        check_positive_int("seed", self.seed, allow_zero=True)


class DPSGDResult(NamedTuple):
    """Outcome of :func:`train_dp_sgd`: the linear classifier (applied to ``feature_scale`` ×
    features), its :math:`\\epsilon` at ``config.delta``, the sampling rate, the per-step mean
    per-example gradient norms before clipping, and whether it came from the cache."""

    model: nn.Module
    config: DPSGDConfig
    epsilon: float
    sampling_rate: float
    grad_norms: list[float]
    cached: bool

    @torch.no_grad()
    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy on (unscaled) features and labels."""
        logits = self.model(features * self.config.feature_scale)
        return float((logits.argmax(1) == labels).float().mean())


def _digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_dp_sgd(features: torch.Tensor, labels: torch.Tensor,
                 config: DPSGDConfig = DPSGDConfig(), *, num_classes: int = 43,
                 use_cache: bool = True) -> DPSGDResult:
    r"""Train a linear classifier on ``features`` with DP-SGD (Abadi et al. 2016, Algorithm 1).

    ``config.steps`` steps, each on a Poisson sample (rate :math:`q` =
    ``expected_batch_size / N``) drawn from a ``torch.Generator`` seeded by ``config.seed``,
    through :func:`dp_sgd_step` with Adam, on one CPU thread.  With data-independent features
    (:func:`random_conv_features`) the released classifier is :math:`(\epsilon, \delta)`-DP with
    respect to adding or removing one training example, :math:`\epsilon` =
    :func:`dp_sgd_epsilon`.  Results are cached under ``cache_dir("dp_sgd")``, keyed by the
    configuration and a hash of the features and labels.
    """
    if not isinstance(config, DPSGDConfig):
        raise TypeError(f"config must be a DPSGDConfig, got {type(config).__name__}")
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError("features must be a 2-D tensor (n, dim)")
    if not isinstance(labels, torch.Tensor) or labels.shape != (features.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({features.shape[0]},)")
    num_classes = check_positive_int("num_classes", num_classes)
    n = features.shape[0]
    if config.expected_batch_size > n:
        raise ValueError(f"expected_batch_size must be <= the number of examples {n}, got "
                         f"{config.expected_batch_size}")
    q = config.expected_batch_size / n
    eps = dp_sgd_epsilon(sampling_rate=q, noise_multiplier=config.noise_multiplier,
                         steps=config.steps, delta=config.delta)
    features = features.float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = nn.Linear(features.shape[1], num_classes)
    payload = dataclasses.asdict(config) | {"data": _digest(features, labels), "format": 1,
                                            "classes": num_classes}
    key = payload_digest(payload)
    path = cache_dir("dp_sgd") / f"dpsgd-{key}.pt"
    lock = file_lock(path.with_suffix(".lock")) if use_cache else contextlib.nullcontext()
    with lock:
        if use_cache and path.exists():
            try:
                blob = torch.load(path, weights_only=True)
                model.load_state_dict(blob["state_dict"])
                return DPSGDResult(model.eval(), config, eps, q, blob["grad_norms"], True)
            except Exception:
                path.unlink(missing_ok=True)
        gen = torch.Generator().manual_seed(config.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        scaled = features * config.feature_scale
        norms = []
        # one thread: the steps are tiny (threads only add synchronisation), and the arithmetic
        # then does not depend on the caller's thread count
        with fixed_threads(1):
            _train_steps(model, optimizer, scaled, labels, q, config, gen, norms)
        model.eval()
        if use_cache:
            tmp = path.with_suffix(".tmp")
            torch.save({"state_dict": model.state_dict(), "grad_norms": norms}, tmp)
            tmp.replace(path)
    return DPSGDResult(model, config, eps, q, norms, False)


def _train_steps(model, optimizer, scaled, labels, q, config, gen, norms) -> None:
    n = scaled.shape[0]
    for _ in range(config.steps):
        idx = (torch.rand(n, generator=gen) < q).nonzero().squeeze(1)
        norms.append(dp_sgd_step(model, optimizer, scaled[idx], labels[idx],
                                 max_norm=config.max_grad_norm,
                                 noise_multiplier=config.noise_multiplier,
                                 expected_batch_size=config.expected_batch_size,
                                 generator=gen))
