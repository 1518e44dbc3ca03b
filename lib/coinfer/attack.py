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
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .config import cache_dir, check_positive_float, check_positive_int, file_lock
from .data import ImageSet
from .models import IMAGE_SHAPE, check_split_point, feature_shape, split
from .train import fixed_threads, predict, use_bf16

__all__ = [
    "BlackBoxAccessError",
    "QueryAccess",
    "split_oracle",
    "intercept",
    "observe",
    "InverseConfig",
    "InverseNetwork",
    "inverse_network",
    "inverse_strides",
    "InverseResult",
    "learn",
    "reconstruct",
    "AttackResult",
    "black_box_attack",
    "load_or_train_attacker",
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
]

Images = torch.Tensor


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------

_check_at = check_split_point  # one validation of split points for the whole library


def _image_tensor(images, name: str, *, allow_empty: bool = False) -> torch.Tensor:
    """Validate a batch of images (``uint8`` or float in [0, 1]); return it unchanged.

    Accepts an :class:`~coinfer.data.ImageSet` (its ``images``).  Values are *checked*, never
    clipped.
    """
    if isinstance(images, ImageSet):
        images = images.images
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or ImageSet, got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{name} must have shape (n, 3, 32, 32), got {tuple(images.shape)}")
    if images.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: the attack needs at least one image")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"{name} must be uint8 or floating point in [0, 1], got dtype {images.dtype}")
    if images.numel():
        if not torch.isfinite(images).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name} must have values in [0, 1], got values in [{low:.4g}, {high:.4g}]"
            )
    return images


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def _check_features(features, at: int, name: str = "features") -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    expected = feature_shape(at)
    if features.dim() != 4 or tuple(features.shape[1:]) != expected:
        raise ValueError(
            f"{name} must have shape (n, {', '.join(map(str, expected))}) for split at={at} "
            f"(the output of conv {at}'s ReLU), got {tuple(features.shape)}"
        )
    if features.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one feature map")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {features.dtype}")
    return features


# --------------------------------------------------------------------------------------------
# The threat model: query access only
# --------------------------------------------------------------------------------------------

class BlackBoxAccessError(AttributeError):
    """Raised when code tries to read anything but the outputs of a :class:`QueryAccess`."""


_QUERY_SLOT = "_QueryAccess__query"
_COUNT_SLOT = "_QueryAccess__count"
_PUBLIC = frozenset({"__class__", "__call__", "__repr__", "__doc__", "queries",
                     "__reduce_ex__", "__reduce__"})  # the last two refuse, see below


class QueryAccess:
    """Black-box access to the device model :math:`f_{\\theta_1}`: it can be called, nothing more.

    The threat model of Wu et al. (2021), Sect. 2.2: the attacker "doesn't know the structure and
    parameters of the deep model :math:`f_{\\theta_1}`.  But it could query the model, i.e. use
    arbitrary data X as input to run the model and observe the intermediate outputs
    :math:`V = f_{\\theta_1}(X)`".  ``oracle(X)`` returns :math:`f_{\\theta_1}(X)` (no gradient,
    batched, a CPU ``float32`` tensor); reading any attribute other than :attr:`queries` — the
    parameters, the modules, the state dict, the wrapped model itself — raises
    :class:`BlackBoxAccessError`, and so does setting one.

    This is a contract that catches accidental white-box use (in the attack code and its tests),
    not a security sandbox: Python code can always dig through closures.

    Parameters
    ----------
    device_model
        The device part, e.g. ``split(victim, at=4).device``, or any callable mapping a float
        image batch ``(n, 3, 32, 32)`` in ``[0, 1]`` to features.
    batch_size
        Images per forward pass.
    num_threads
        CPU threads for the forward passes (``None``: leave torch's setting alone).
    """

    __slots__ = (_QUERY_SLOT, _COUNT_SLOT)

    def __init__(self, device_model: Callable[[torch.Tensor], torch.Tensor], *,
                 batch_size: int = 512, num_threads: int | None = None):
        if not callable(device_model):
            raise TypeError(f"device_model must be callable, got {type(device_model).__name__}")
        check_positive_int("batch_size", batch_size)
        if num_threads is not None:
            check_positive_int("num_threads", num_threads)
        if isinstance(device_model, QueryAccess):
            inner = object.__getattribute__(device_model, _QUERY_SLOT)
            run = inner
        else:
            model = device_model

            @torch.no_grad()
            def run(x: torch.Tensor) -> torch.Tensor:
                if isinstance(model, nn.Module):
                    model.eval()
                    params = next(iter(model.parameters()), None)
                    target = params.device if params is not None else torch.device("cpu")
                else:
                    target = torch.device("cpu")
                threads = fixed_threads(num_threads) if num_threads else contextlib.nullcontext()
                out = []
                with threads:
                    for start in range(0, x.shape[0], batch_size):
                        out.append(model(x[start:start + batch_size].to(target)).float().cpu())
                return torch.cat(out)

        object.__setattr__(self, _QUERY_SLOT, run)
        object.__setattr__(self, _COUNT_SLOT, [0])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """:math:`f_{\\theta_1}(X)` for ``images`` ``(n, 3, 32, 32)`` (``uint8`` or float in [0, 1])."""
        images = _image_tensor(images, "images")
        out = object.__getattribute__(self, _QUERY_SLOT)(_to_float(images))
        object.__getattribute__(self, _COUNT_SLOT)[0] += int(images.shape[0])
        return out

    @property
    def queries(self) -> int:
        """How many images have been sent to the model through this object so far."""
        return object.__getattribute__(self, _COUNT_SLOT)[0]

    def __getattribute__(self, name: str):
        if name in _PUBLIC:
            return object.__getattribute__(self, name)
        raise BlackBoxAccessError(
            f"QueryAccess allows only calling the device model (oracle(X)); reading {name!r} "
            "would break the black-box threat model (Wu et al. 2021, Sect. 2.2). A white-box "
            "attacker uses coinfer.attack.white_box_attack with the model itself."
        )

    def __setattr__(self, name: str, value) -> None:
        raise BlackBoxAccessError(f"QueryAccess is read-only; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise BlackBoxAccessError(f"QueryAccess is read-only; cannot delete {name!r}")

    def __reduce_ex__(self, protocol):
        raise TypeError("QueryAccess cannot be pickled or copied: it would expose the model")

    def __reduce__(self):
        raise TypeError("QueryAccess cannot be pickled or copied: it would expose the model")

    def __repr__(self) -> str:
        return f"QueryAccess(<black-box device model>, queries={self.queries})"


def split_oracle(model: nn.Sequential, *, at: int, batch_size: int = 512) -> QueryAccess:
    """Query access to the device part of ``model`` split at ``at``: ``QueryAccess(split(model, at=at).device)``."""
    return QueryAccess(split(model, at=_check_at(at)).device, batch_size=batch_size)


def _check_oracle(oracle) -> None:
    if isinstance(oracle, nn.Module):
        raise TypeError(
            "the black-box attack takes query access only: pass QueryAccess(device_model) "
            "(or coinfer.attack.split_oracle(model, at=k)), not the nn.Module itself"
        )
    if not callable(oracle):
        raise TypeError(f"oracle must be callable (X -> f(X)), got {type(oracle).__name__}")


@torch.no_grad()
def intercept(
    model: nn.Sequential,
    images,
    *,
    splits: tuple[int, ...] = (2, 4, 6),
    batch_size: int = 512,
) -> dict[int, torch.Tensor]:
    """What the eavesdropper captures: :math:`v_0 = f_{\\theta_1}(x_0)` of every vehicle, per split.

    Simulates the vehicles (not the attacker, who never sees ``model``): one forward pass through
    the deepest device part yields the features at every split point in ``splits`` — the same
    numbers as ``split(model, at=k).device(x0)`` for each ``k``, at the cost of one pass.

    Returns
    -------
    dict
        ``{k: features (n, *feature_shape(k))}`` (float32, CPU).
    """
    images = _image_tensor(images, "images")
    if not splits:
        raise ValueError("splits must name at least one split point")
    splits = tuple(sorted({_check_at(k) for k in splits}))
    check_positive_int("batch_size", batch_size)
    cuts = {len(split(model, at=k).device): k for k in splits}
    device_part = split(model, at=splits[-1]).device.eval()
    params = next(iter(device_part.parameters()), None)
    target = params.device if params is not None else torch.device("cpu")
    out: dict[int, list[torch.Tensor]] = {k: [] for k in splits}
    for start in range(0, images.shape[0], batch_size):
        h = _to_float(images[start:start + batch_size]).to(target)
        for i, layer in enumerate(device_part, start=1):
            h = layer(h)
            if i in cuts:
                out[cuts[i]].append(h.float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def observe(
    oracle: Callable[[torch.Tensor], torch.Tensor],
    images,
    *,
    batch_size: int = 512,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> torch.Tensor:
    """Phase 1 of Algorithm 1 of Wu et al. (2021) (*observe*): :math:`V = f_{\\theta_1}(X)`.

    Queries the black box with the attacker's images, batch by batch.

    Parameters
    ----------
    oracle
        A :class:`QueryAccess` or any callable ``X -> f(X)``; never the model itself.
    images
        The attacker's query images :math:`X`, ``(n, 3, 32, 32)``, ``uint8`` or float in ``[0, 1]``
        (an :class:`~coinfer.data.ImageSet` is accepted).
    batch_size
        Images per query.
    dtype
        Floating dtype in which the features are stored (``torch.bfloat16`` halves the memory).
    progress
        Show a progress bar.

    Returns
    -------
    torch.Tensor
        Features ``(n, C, H, W)`` on the CPU.
    """
    _check_oracle(oracle)
    images = _image_tensor(images, "images")
    check_positive_int("batch_size", batch_size)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    n = images.shape[0]
    out: torch.Tensor | None = None
    bar = tqdm(total=n, desc="observe", disable=not progress or None, mininterval=1.0)
    for start in range(0, n, batch_size):
        chunk = images[start:start + batch_size]
        features = oracle(chunk if isinstance(oracle, QueryAccess) else _to_float(chunk))
        if not isinstance(features, torch.Tensor) or features.dim() < 2 \
                or features.shape[0] != chunk.shape[0]:
            raise ValueError(
                "oracle must return a tensor with one row per query image, got "
                f"{getattr(features, 'shape', type(features).__name__)} for {chunk.shape[0]} images"
            )
        if out is None:
            out = torch.empty((n, *features.shape[1:]), dtype=dtype)
        out[start:start + chunk.shape[0]] = features.detach().cpu()
        bar.update(chunk.shape[0])
    bar.close()
    assert out is not None
    return out


# --------------------------------------------------------------------------------------------
# The inverse network g_ω
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InverseConfig:
    """Everything that determines a trained inverse network :math:`g_\\omega` (and its cache key).

    Attributes
    ----------
    architecture
        ``"paper"`` — two transposed convolutions (``width`` channels, kernel 3) with a ReLU
        between (Wu et al. 2021, Sect. 6.1; He et al. 2019's ReLU22 inverse), strides from
        :func:`inverse_strides`; ``"deep"`` — five transposed convolutions with ReLUs (the same
        upsampling steps, each followed by a stride-1 layer), for comparison.
    width
        Channels of the hidden transposed convolutions (paper: 64).
    output
        How the output is mapped to the image range ``[0, 1]``: ``"sigmoid"`` (default; smooth,
        never saturates the gradient completely) or ``"clamp"`` (identity inside ``[0, 1]``,
        clamped outside; zero gradient there).
    max_epochs
        Upper bound on the passes over the query set; training normally stops earlier, on a
        plateau of the held-out loss (see ``patience``).
    patience, min_delta
        The plateau rule: an epoch *improves* when the held-out loss falls below
        ``(1 - min_delta)`` times the best so far; after ``patience`` epochs without improvement
        the learning rate is multiplied by ``lr_decay`` (at most ``lr_drops`` times), and after
        the next plateau training stops.  The best weights on the held-out set are returned.
    lr, lr_decay, lr_drops
        Adam's learning rate and its reduction on a plateau.  The paper trains with Adam at
        10⁻³; the default 3·10⁻³ (then 6·10⁻⁴ after the first plateau) reaches the same
        held-out loss in fewer epochs on the 2-core course machine.
    batch_size
        Mini-batch size (16: more updates per image, at no cost in images per second).
    seed
        Seeds the initial weights, the held-out split and the mini-batch order.
    val_fraction
        Share of the attacker's query set held out to detect the plateau.
    mixed_precision
        ``"auto"`` (bf16 autocast where the CPU has bf16 units, or on CUDA), ``"bf16"`` or
        ``"off"``.  Held-out losses and reconstructions are always computed in float32.
    num_threads
        CPU threads while training (fixed, so results are reproducible).  One thread by
        default: the inverse networks are small, and on a shared 2-core machine a second
        OpenMP thread that has to wait for a core makes every layer several times slower.
    """

    architecture: str = "paper"
    width: int = 64
    output: str = "sigmoid"
    max_epochs: int = 40
    patience: int = 2
    min_delta: float = 0.01
    lr: float = 3e-3
    lr_decay: float = 0.2
    lr_drops: int = 1
    batch_size: int = 16
    seed: int = 0
    val_fraction: float = 0.1
    mixed_precision: str = "auto"
    num_threads: int = 1

    def __post_init__(self):
        if self.architecture not in ("paper", "deep"):
            raise ValueError(f"architecture must be 'paper' or 'deep', got {self.architecture!r}")
        check_positive_int("width", self.width)
        if self.output not in ("sigmoid", "clamp"):
            raise ValueError(f"output must be 'sigmoid' or 'clamp', got {self.output!r}")
        check_positive_int("max_epochs", self.max_epochs)
        check_positive_int("patience", self.patience)
        check_positive_float("min_delta", self.min_delta, allow_zero=True)
        if self.min_delta >= 1:
            raise ValueError(f"min_delta must be in [0, 1), got {self.min_delta}")
        check_positive_float("lr", self.lr)
        check_positive_float("lr_decay", self.lr_decay)
        if self.lr_decay >= 1:
            raise ValueError(f"lr_decay must be in (0, 1), got {self.lr_decay}")
        check_positive_int("lr_drops", self.lr_drops, allow_zero=True)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("seed", self.seed, allow_zero=True)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.mixed_precision not in ("auto", "bf16", "off"):
            raise ValueError(
                f"mixed_precision must be 'auto', 'bf16' or 'off', got {self.mixed_precision!r}"
            )
        check_positive_int("num_threads", self.num_threads)


def inverse_strides(at: int) -> tuple[int, int]:
    """Strides of the paper's two transposed convolutions for split point ``at``.

    The features at split ``k`` have side :math:`32 / 2^m` with :math:`m = \\lfloor (k-1)/2
    \\rfloor` pools before them, so the inverse must upsample ``m`` times: the first layer has
    stride 2 when :math:`m \\ge 1`, the second when :math:`m = 2`.  Splits 1–2: ``(1, 1)``;
    3–4: ``(2, 1)``; 5–6: ``(2, 2)``.
    """
    m = (_check_at(at) - 1) // 2
    return (2 if m >= 1 else 1, 2 if m >= 2 else 1)


def _deconv(c_in: int, c_out: int, stride: int) -> nn.ConvTranspose2d:
    # kernel 3, padding 1: stride 1 keeps the side, stride 2 (output_padding 1) doubles it
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=3, stride=stride, padding=1,
                              output_padding=stride - 1)


class _ToImageRange(nn.Module):
    """The last layer of :math:`g_\\omega`: map to ``[0, 1]`` in float32 (sigmoid or clamp)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return torch.sigmoid(x) if self.kind == "sigmoid" else x.clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return self.kind


class InverseNetwork(nn.Sequential):
    """The attacker's inverse model :math:`g_\\omega` for split point ``at`` (Algorithm 1, phase 2).

    ``"paper"``: ``ConvTranspose2d(64→w, k3, s₁) → ReLU → ConvTranspose2d(w→3, k3, s₂) → range``
    with :math:`(s_1, s_2)` = :func:`inverse_strides` ``(at)`` — "two deconvolution layers and one
    ReLU layer between them.  Each deconvolution layer has 64 channels and the kernel size is 3"
    (Wu et al. 2021, Sect. 6.1).  ``"deep"`` inserts a stride-1 transposed convolution (and
    ReLU) after each of the two, and a final one to 3 channels.  The output layer maps to the
    image range ``[0, 1]`` (see :class:`InverseConfig`).
    """

    def __init__(self, at: int, *, architecture: str = "paper", width: int = 64,
                 output: str = "sigmoid"):
        at = _check_at(at)
        InverseConfig(architecture=architecture, width=width, output=output)  # validates
        channels = feature_shape(at)[0]
        s1, s2 = inverse_strides(at)
        if architecture == "paper":
            layers = [_deconv(channels, width, s1), nn.ReLU(), _deconv(width, 3, s2)]
        else:
            layers = [_deconv(channels, width, s1), nn.ReLU(), _deconv(width, width, 1), nn.ReLU(),
                      _deconv(width, width, s2), nn.ReLU(), _deconv(width, width, 1), nn.ReLU(),
                      _deconv(width, 3, 1)]
        super().__init__(*layers, _ToImageRange(output))
        self.at = at
        self.architecture = architecture
        self.width = width
        self.output = output

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # noqa: D401 - nn.Module API
        expected = feature_shape(self.at)
        if v.dim() != 4 or tuple(v.shape[1:]) != expected:
            raise ValueError(
                f"features must have shape (n, {', '.join(map(str, expected))}) for the inverse "
                f"of split at={self.at}, got {tuple(v.shape)}"
            )
        return super().forward(v)


def inverse_network(at: int, config: InverseConfig = InverseConfig()) -> InverseNetwork:
    """A freshly initialised :class:`InverseNetwork`; its weights depend only on ``config.seed``."""
    if not isinstance(config, InverseConfig):
        raise TypeError(f"config must be an InverseConfig, got {type(config).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return InverseNetwork(at, architecture=config.architecture, width=config.width,
                              output=config.output)


class InverseResult(NamedTuple):
    """A trained inverse network and how it got there.

    Attributes
    ----------
    model
        The trained :class:`InverseNetwork` (best held-out weights, eval mode, on the CPU).
    history
        One dict per epoch: ``epoch``, ``train_loss`` and ``val_loss`` (per-pixel MSE), ``lr``.
    config, at
        The :class:`InverseConfig` and the split point.
    best_epoch
        Epoch whose weights were kept (lowest held-out loss).
    stop_reason
        ``"plateau"`` (converged by the plateau rule) or ``"max_epochs"`` (hit the cap).
    n_train, n_val
        Sizes of the training and held-out parts of the query set.
    seconds
        Training time (0 on a cache hit).
    cache_hit
        True when :func:`load_or_train_attacker` loaded the model from disk.
    """

    model: InverseNetwork
    history: list[dict]
    config: InverseConfig
    at: int
    best_epoch: int
    stop_reason: str
    n_train: int
    n_val: int
    seconds: float
    cache_hit: bool = False

    @property
    def val_loss(self) -> float:
        """Held-out per-pixel MSE of the returned weights."""
        return min(h["val_loss"] for h in self.history)

    @property
    def epochs(self) -> int:
        """Epochs actually run."""
        return len(self.history)


def _use_bf16(config: InverseConfig, device: torch.device) -> bool:
    return use_bf16(config.mixed_precision, device)


@torch.no_grad()
def _held_out_loss(model: nn.Module, features: torch.Tensor, images: torch.Tensor,
                   batch_size: int, device: torch.device) -> float:
    model.eval()
    total = 0.0
    for start in range(0, features.shape[0], batch_size):
        v = features[start:start + batch_size].to(device).float()
        x = _to_float(images[start:start + batch_size]).to(device)
        total += float(F.mse_loss(model(v), x, reduction="sum"))
    return total / (features.shape[0] * math.prod(IMAGE_SHAPE))


def learn(
    features: torch.Tensor,
    images,
    *,
    at: int,
    config: InverseConfig = InverseConfig(),
    device: torch.device | None = None,
    progress: bool = True,
) -> InverseResult:
    """Phase 2 of Algorithm 1 of Wu et al. (2021) (*learn*): train :math:`g_\\omega` on :math:`(V, X)`.

    Minimises the paper's loss

    .. math:: l(\\omega; X) = \\frac{1}{n} \\sum_{i=1}^{n}
              \\lVert g_\\omega(f_{\\theta_1}(x_i)) - x_i \\rVert_2^2

    with Adam (divided by the constant :math:`3 \\cdot 32 \\cdot 32`, i.e. the per-pixel MSE,
    which changes nothing for Adam but makes the numbers readable), on mini-batches of the
    pre-computed features (computed once by :func:`observe` and reused every epoch).  A share
    ``config.val_fraction`` of the query pairs is held out; training runs until the held-out loss
    plateaus (the deterministic rule of :class:`InverseConfig`: patience, one learning-rate
    reduction, stop) or ``config.max_epochs``, and returns the weights with the lowest held-out
    loss.

    Parameters
    ----------
    features
        :math:`V = f_{\\theta_1}(X)`, shape ``(n, *feature_shape(at))``, any float dtype.
    images
        The query images :math:`X`, ``(n, 3, 32, 32)``, ``uint8`` or float in ``[0, 1]``.
    at
        The split point the features come from.
    config
        The :class:`InverseConfig`.
    device
        Where to train (default: CPU; the inverse networks are small).
    progress
        Show a progress bar over epochs.

    Raises
    ------
    ValueError
        Features of the wrong shape for ``at``, mismatched counts, fewer than 2 pairs, images
        outside ``[0, 1]``.
    """
    at = _check_at(at)
    if not isinstance(config, InverseConfig):
        raise TypeError(f"config must be an InverseConfig, got {type(config).__name__}")
    features = _check_features(features, at)
    images = _image_tensor(images, "images")
    n = features.shape[0]
    if images.shape[0] != n:
        raise ValueError(f"features and images must pair up: got {n} features and "
                         f"{images.shape[0]} images")
    n_val = max(1, int(round(n * config.val_fraction)))
    if n - n_val < 1:
        raise ValueError(f"the query set is too small to hold out a validation part: n={n}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(config.seed)
    perm = torch.randperm(n, generator=generator)
    val_idx, tr_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    n_tr = n - n_val
    bf16 = _use_bf16(config, device)
    # bf16 transposed convolutions on the CPU are fastest in channels-last layout (≈1.6× here).
    # The training features are converted once to the dtype and layout the first layer consumes
    # (autocast would cast every batch to bf16 anyway): mini-batches are then plain row gathers.
    layout = torch.channels_last if bf16 and device.type == "cpu" else torch.contiguous_format
    v_val, x_val = features[val_idx].float(), images[val_idx]
    v_tr = features[tr_idx].to(device=device, dtype=torch.bfloat16 if bf16 else torch.float32)
    v_tr = v_tr.contiguous(memory_format=layout)
    x_tr = images[tr_idx]

    start_time = time.perf_counter()
    history: list[dict] = []
    with fixed_threads(config.num_threads):
        model = inverse_network(at, config).to(device).to(memory_format=layout)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
        lr = config.lr
        best_loss, best_epoch = math.inf, 0
        best_state = copy.deepcopy(model.state_dict())
        wait, drops, stop_reason = 0, 0, "max_epochs"
        bar = tqdm(range(1, config.max_epochs + 1), desc=f"learning g_ω (split {at})",
                   disable=not progress or None, mininterval=1.0)
        for epoch in bar:
            model.train()
            total = 0.0
            order = torch.randperm(n_tr, generator=generator)
            for s in range(0, n_tr, config.batch_size):
                idx = order[s:s + config.batch_size]
                v = v_tr[idx].contiguous(memory_format=layout)
                x = _to_float(x_tr[idx]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = model(v)
                loss = F.mse_loss(out.float(), x)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            val = _held_out_loss(model, v_val, x_val, 256, device)
            history.append({"epoch": epoch, "train_loss": total / n_tr, "val_loss": val, "lr": lr})
            bar.set_postfix(val_loss=f"{val:.2e}", lr=f"{lr:.0e}")
            if val < best_loss * (1.0 - config.min_delta):
                wait = 0
            else:
                wait += 1
            if val < best_loss:
                best_loss, best_epoch = val, epoch
                best_state = copy.deepcopy(model.state_dict())
            if wait >= config.patience:
                if drops < config.lr_drops:
                    drops += 1
                    wait = 0
                    lr *= config.lr_decay
                    for group in optimiser.param_groups:
                        group["lr"] = lr
                else:
                    stop_reason = "plateau"
                    break
        bar.close()
    model.load_state_dict(best_state)
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    return InverseResult(model, history, config, at, best_epoch, stop_reason, n_tr, n_val,
                         time.perf_counter() - start_time)


@torch.no_grad()
def reconstruct(
    inverse_model: nn.Module,
    features: torch.Tensor,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Phase 3 of Algorithm 1 of Wu et al. (2021) (*reconstruct*): :math:`x_0' = g_\\omega(v_0)`.

    Parameters
    ----------
    inverse_model
        The trained :math:`g_\\omega` (an :class:`InverseNetwork`, or an :class:`InverseResult`).
    features
        The intercepted features :math:`v_0`, ``(n, *feature_shape(at))``.

    Returns
    -------
    torch.Tensor
        Float32 images ``(n, 3, 32, 32)`` in ``[0, 1]``, on the CPU.
    """
    if isinstance(inverse_model, InverseResult):
        inverse_model = inverse_model.model
    if not isinstance(inverse_model, nn.Module):
        raise TypeError(f"inverse_model must be an nn.Module, got {type(inverse_model).__name__}")
    check_positive_int("batch_size", batch_size)
    if isinstance(inverse_model, InverseNetwork):
        features = _check_features(features, inverse_model.at)
    elif not isinstance(features, torch.Tensor) or features.dim() != 4 or features.shape[0] == 0:
        raise ValueError("features must be a non-empty 4-D tensor (n, C, H, W)")
    inverse_model.eval()
    params = next(iter(inverse_model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    out = [inverse_model(features[s:s + batch_size].to(device).float()).float().cpu()
           for s in range(0, features.shape[0], batch_size)]
    result = torch.cat(out)
    if tuple(result.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"inverse_model must output (n, 3, 32, 32), got {tuple(result.shape)}")
    return result


class AttackResult(NamedTuple):
    """The outcome of :func:`black_box_attack`.

    Attributes
    ----------
    reconstructions
        :math:`x_0' = g_\\omega(v_0)`, float32 ``(n, 3, 32, 32)`` in ``[0, 1]``.
    inverse
        The :class:`InverseResult` (the trained :math:`g_\\omega`).
    history
        Per-epoch training history (``inverse.history``).
    """

    reconstructions: torch.Tensor
    inverse: InverseResult
    history: list[dict]


def black_box_attack(
    oracle: Callable[[torch.Tensor], torch.Tensor],
    attacker_images,
    intercepted_features: torch.Tensor,
    *,
    at: int,
    config: InverseConfig = InverseConfig(),
    progress: bool = True,
) -> AttackResult:
    """Algorithm 1 of Wu et al. (2021): the black-box reconstruction attack, all three phases.

    observe (:func:`observe`) → learn (:func:`learn`) → reconstruct (:func:`reconstruct`).

    Parameters
    ----------
    oracle
        Query access to :math:`f_{\\theta_1}` (:class:`QueryAccess` or any callable — never an
        ``nn.Module``: the attacker does not see the model).
    attacker_images
        The attacker's own images :math:`X` (``uint8`` or float in [0, 1], or an ImageSet).
    intercepted_features
        The victim's features :math:`v_0` captured on the channel.
    at
        The split point (fixes the shape of the inverse network).
    """
    _check_oracle(oracle)
    at = _check_at(at)
    intercepted_features = _check_features(intercepted_features, at, "intercepted_features")
    attacker_images = _image_tensor(attacker_images, "attacker_images")
    features = observe(oracle, attacker_images, progress=progress)
    _check_features(features, at, "oracle outputs")
    inverse = learn(features, attacker_images, at=at, config=config, progress=progress)
    return AttackResult(reconstruct(inverse.model, intercepted_features), inverse, inverse.history)


# --------------------------------------------------------------------------------------------
# Cache of trained attackers
# --------------------------------------------------------------------------------------------

_CACHE_FORMAT = 2  # bump whenever the training code changes its arithmetic


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.uint8 else t.numpy().tobytes())
    return h.hexdigest()[:16]


def _oracle_fingerprint(oracle) -> str:
    """A black-box fingerprint of the oracle: its (rounded) answers to 4 fixed probe images."""
    probe = torch.rand(4, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(20210114))
    answer = oracle(probe).float()
    scale = float(answer.abs().max()) or 1.0
    rounded = torch.round(answer / scale * 1e3).to(torch.int32)
    return _tensor_digest(rounded) + f"-{scale:.3e}"


def load_or_train_attacker(
    oracle_or_device_model,
    attacker_images,
    *,
    at: int,
    config: InverseConfig = InverseConfig(),
    cache_key: str,
    progress: bool = True,
    retrain: bool = False,
) -> InverseResult:
    """The trained :math:`g_\\omega` of Algorithm 1 (phases 1–2), from the disk cache or trained anew.

    The cache file in ``coinfer.config.cache_dir("attackers")`` is keyed by ``cache_key``, the
    split point, the whole :class:`InverseConfig`, a digest of the attacker's images, a black-box
    fingerprint of the oracle (its answers to four fixed probe images — so a changed victim is
    never served a stale attacker) and the torch version.  Checkpoints are loaded with
    ``weights_only=True``; a corrupt or unreadable file is retrained, not crashed on.

    Parameters
    ----------
    oracle_or_device_model
        A :class:`QueryAccess`, a callable, or the device ``nn.Module`` (wrapped in
        :class:`QueryAccess`, so training still sees only its outputs).
    attacker_images
        The query images :math:`X`.
    at, config
        Split point and :class:`InverseConfig`.
    cache_key
        A name for the victim/deployment, e.g. ``"victim"`` (letters, digits, ``-_.``).
    retrain
        Ignore (and overwrite) a cached model.
    """
    at = _check_at(at)
    if not isinstance(config, InverseConfig):
        raise TypeError(f"config must be an InverseConfig, got {type(config).__name__}")
    if not isinstance(cache_key, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", cache_key):
        raise ValueError(
            f"cache_key must be 1-64 characters from letters, digits and '-_.', got {cache_key!r}"
        )
    oracle = oracle_or_device_model
    if isinstance(oracle, nn.Module):
        oracle = QueryAccess(oracle)
    _check_oracle(oracle)
    attacker_images = _image_tensor(attacker_images, "attacker_images")
    payload = {
        "cache_key": cache_key,
        "at": at,
        "config": dataclasses.asdict(config),
        "images": _tensor_digest(attacker_images),
        "oracle": _oracle_fingerprint(oracle),
        "bf16": _use_bf16(config, torch.device("cpu")),
        "torch": torch.__version__.split("+")[0],
        "format": _CACHE_FORMAT,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("attackers") / f"{cache_key}-at{at}-{digest}.pt"
    # One lock per checkpoint: when two processes (two chapters, a chapter and a test) need the
    # same attacker at once, the second waits for the first and then loads its checkpoint.
    with file_lock(path.with_suffix(".lock")):
        return _load_or_train_locked(path, oracle, attacker_images, at, config, progress, retrain)


def _load_or_train_locked(path, oracle, attacker_images, at, config, progress,
                          retrain) -> InverseResult:
    if path.exists() and not retrain:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model = inverse_network(at, config)
            model.load_state_dict(blob["state_dict"])
            meta = blob["meta"]
            return InverseResult(model.eval(), list(blob["history"]), config, at,
                                 int(meta["best_epoch"]), str(meta["stop_reason"]),
                                 int(meta["n_train"]), int(meta["n_val"]), 0.0, True)
        except Exception:  # a truncated or corrupt checkpoint is retrained, not crashed on
            path.unlink(missing_ok=True)
    features = observe(oracle, attacker_images, progress=progress)
    _check_features(features, at, "oracle outputs")
    result = learn(features, attacker_images, at=at, config=config, progress=progress)
    del features
    tmp = path.with_suffix(".tmp")
    torch.save({
        "state_dict": result.model.state_dict(),
        "history": result.history,
        "meta": {"best_epoch": result.best_epoch, "stop_reason": result.stop_reason,
                 "n_train": result.n_train, "n_val": result.n_val},
    }, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint behind
    return result


# --------------------------------------------------------------------------------------------
# White-box spear: rMLE (He et al. 2019)
# --------------------------------------------------------------------------------------------

def total_variation(x: torch.Tensor, *, beta: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """Per-image total variation :math:`\\mathrm{TV}_\\beta(x)`, averaged over pixel positions.

    .. math:: \\mathrm{TV}_\\beta(x) = \\frac{1}{C(H-1)(W-1)} \\sum_{c,i,j}
              \\big((x_{c,i+1,j} - x_{c,i,j})^2 + (x_{c,i,j+1} - x_{c,i,j})^2 + \\varepsilon\\big)^{\\beta/2}

    the image prior of Mahendran & Vedaldi (2015) used by He et al. (2019); :math:`\\beta = 1` is
    the isotropic TV (``eps`` keeps its gradient finite at flat regions).

    Returns
    -------
    torch.Tensor
        Shape ``(n,)``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (n, C, H, W), got {getattr(x, 'shape', x)!r}")
    check_positive_float("beta", beta)
    check_positive_float("eps", eps, allow_zero=True)
    dh = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    dw = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    return (dh.pow(2) + dw.pow(2) + eps).pow(beta / 2).mean(dim=(1, 2, 3))


class WhiteBoxResult(NamedTuple):
    """The outcome of :func:`white_box_attack`.

    Attributes
    ----------
    reconstructions
        Float32 images ``(n, 3, 32, 32)`` in ``[0, 1]``.
    feature_error
        Per image, :math:`\\lVert f_{\\theta_1}(x') - v_0\\rVert_2^2` divided by the number of
        feature entries, at the end.
    history
        Mean objective over the images every ``steps // 20`` steps: dicts with ``step``,
        ``objective``, ``feature_error``.
    """

    reconstructions: torch.Tensor
    feature_error: np.ndarray
    history: list[dict]


def white_box_attack(
    device_model: nn.Module,
    intercepted_features: torch.Tensor,
    *,
    at: int,
    tv_weight: float = 0.05,
    steps: int = 300,
    lr: float = 0.1,
    seed: int = 0,
    beta: float = 1.0,
    batch_size: int = 64,
    num_threads: int = 1,
    progress: bool = True,
) -> WhiteBoxResult:
    """The white-box spear: regularised maximum-likelihood estimation (rMLE) of He et al. (2019).

    An attacker who knows :math:`\\theta_1` solves, for each intercepted :math:`v_0`,

    .. math:: x_0' = \\arg\\min_{x \\in [0,1]^{3 \\times 32 \\times 32}}
              \\frac{1}{d}\\lVert f_{\\theta_1}(x) - v_0 \\rVert_2^2 + \\lambda\\,\\mathrm{TV}(x)

    (:math:`d` = number of feature entries, :math:`\\lambda` = ``tv_weight``, TV from
    :func:`total_variation`) by Adam on the unconstrained :math:`z` of the parametrisation
    :math:`x = \\sigma(z)` (so :math:`x` stays in the image range), from a seeded random start.

    Parameters
    ----------
    device_model
        :math:`f_{\\theta_1}` itself, e.g. ``split(victim, at=k).device`` — white-box access.
        Its parameters are not changed (nor their gradients).
    intercepted_features
        :math:`v_0`, ``(n, *feature_shape(at))``.
    at
        The split point.
    tv_weight, beta
        :math:`\\lambda` and the exponent of the TV prior.
    steps, lr
        Number of Adam steps (fixed) and its learning rate on :math:`z`.
    seed
        Seeds the starting point :math:`z \\sim \\mathcal N(0, 0.1^2)`.
    batch_size
        Images optimised together (the objective is a sum of independent per-image terms).
    """
    if not isinstance(device_model, nn.Module):
        raise TypeError(f"device_model must be an nn.Module (white-box access), got "
                        f"{type(device_model).__name__}")
    at = _check_at(at)
    intercepted_features = _check_features(intercepted_features, at, "intercepted_features")
    check_positive_float("tv_weight", tv_weight, allow_zero=True)
    check_positive_int("steps", steps)
    check_positive_float("lr", lr)
    check_positive_int("seed", seed, allow_zero=True)
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_threads", num_threads)
    params = list(device_model.parameters())
    device = params[0].device if params else torch.device("cpu")
    flags = [p.requires_grad for p in params]
    was_training = device_model.training
    generator = torch.Generator().manual_seed(seed)
    n = intercepted_features.shape[0]
    z_all = torch.randn(n, *IMAGE_SHAPE, generator=generator) * 0.1
    out, errors = [], []
    log_every = max(1, steps // 20)
    curves: list[np.ndarray] = []
    bar = tqdm(total=steps * math.ceil(n / batch_size), desc=f"white-box rMLE (split {at})",
               disable=not progress or None, mininterval=1.0)
    try:
        for p in params:
            p.requires_grad_(False)
        device_model.eval()
        with fixed_threads(num_threads):
            for s in range(0, n, batch_size):
                v0 = intercepted_features[s:s + batch_size].to(device).float()
                d = v0[0].numel()
                z = z_all[s:s + batch_size].clone().to(device).requires_grad_(True)
                optimiser = torch.optim.Adam([z], lr=lr)
                curve = []
                for step in range(1, steps + 1):
                    x = torch.sigmoid(z)
                    feat_err = (device_model(x) - v0).pow(2).flatten(1).sum(1) / d
                    objective = feat_err + tv_weight * total_variation(x, beta=beta)
                    optimiser.zero_grad(set_to_none=True)
                    objective.sum().backward()
                    optimiser.step()
                    if step % log_every == 0 or step == steps:
                        curve.append((step, float(objective.detach().sum()),
                                      float(feat_err.detach().sum())))
                    bar.update(1)
                curves.append(np.array(curve))
                with torch.no_grad():
                    x = torch.sigmoid(z)
                    errors.append(((device_model(x) - v0).pow(2).flatten(1).sum(1) / d).cpu())
                    out.append(x.detach().float().cpu())
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        device_model.train(was_training)
        bar.close()
    total = np.sum(curves, axis=0)
    history = [{"step": int(row[0]), "objective": row[1] / n, "feature_error": row[2] / n}
               for row in total]
    return WhiteBoxResult(torch.cat(out), torch.cat(errors).numpy(), history)


#: The grid of TV weights λ that :func:`tune_tv_weight` searches.
TV_GRID: tuple[float, ...] = (1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0)

#: The TV weights of Chapter 2's white-box attack, per split, as chosen by
#: ``tune_tv_weight(split(victim, at=k).device, query_subset(train, 8, seed=123), at=k)`` on the
#: attacker's own training-split images (never on the test images it is evaluated on).
CHAPTER_TV_WEIGHTS: dict[int, float] = {2: 1e-3, 4: 0.3, 6: 1.0}


def tune_tv_weight(
    device_model: nn.Module,
    images,
    *,
    at: int,
    grid: tuple[float, ...] = TV_GRID,
    steps: int = 200,
    lr: float = 0.1,
    seed: int = 0,
    progress: bool = False,
) -> tuple[float, dict[float, float]]:
    """Choose the TV weight λ of the rMLE (:func:`white_box_attack`) on the attacker's own images.

    The white-box attacker computes :math:`f_{\\theta_1}` of images it owns, attacks those features
    with every λ in ``grid`` and keeps the λ of the highest mean PSNR — a validation set that is
    disjoint from the victims' images.

    Returns
    -------
    (best λ, {λ: mean PSNR in dB})
    """
    from .metrics import psnr

    images = _image_tensor(images, "images")
    if not grid:
        raise ValueError("grid must contain at least one TV weight")
    for w in grid:
        check_positive_float("grid entries", w, allow_zero=True)
    x = _to_float(images)
    params = next(iter(device_model.parameters()), None)
    with torch.no_grad():
        v = device_model(x.to(params.device if params is not None else "cpu")).float().cpu()
    scores = {}
    for w in grid:
        result = white_box_attack(device_model, v, at=at, tv_weight=w, steps=steps, lr=lr,
                                  seed=seed, progress=progress)
        scores[float(w)] = float(np.mean(psnr(x, result.reconstructions)))
    return max(scores, key=scores.get), scores


# --------------------------------------------------------------------------------------------
# Helpers for the chapter's experiments
# --------------------------------------------------------------------------------------------

class ClassLeak(NamedTuple):
    """How much of the class survives a reconstruction, judged by the victim itself.

    Attributes
    ----------
    original_accuracy
        Victim's top-1 accuracy on the original images.
    reconstruction_accuracy
        Top-1 accuracy on the reconstructions (fraction that keeps its true label).
    agreement
        Fraction of reconstructions classified like their original.
    n
        Number of images.
    """

    original_accuracy: float
    reconstruction_accuracy: float
    agreement: float
    n: int


def class_leak(model: nn.Module, originals, reconstructions, labels: torch.Tensor):
    """Classify originals and reconstructions with the victim ``model`` and compare the labels.

    Parameters
    ----------
    model
        The victim classifier (the whole CNN, :math:`f_{\\theta_2} \\circ f_{\\theta_1}`).
    originals
        The true images :math:`x_0` (``uint8`` or float in [0, 1]).
    reconstructions
        The attacker's :math:`x_0'` (same shape), or a mapping ``name -> reconstructions`` to score
        several attacks against one pass over the originals.
    labels
        True class ids of ``originals``.

    Returns
    -------
    ClassLeak, or dict of ClassLeak when ``reconstructions`` is a mapping.
    """
    originals = _image_tensor(originals, "originals")
    if not isinstance(labels, torch.Tensor) or labels.shape != (originals.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({originals.shape[0]},)")
    batches = reconstructions if isinstance(reconstructions, Mapping) else {None: reconstructions}
    for name, rec in batches.items():
        rec = _image_tensor(rec, "reconstructions")
        if rec.shape != originals.shape:
            raise ValueError(f"originals and reconstructions{'' if name is None else f'[{name!r}]'} "
                             f"must have the same shape, got {tuple(originals.shape)} and "
                             f"{tuple(rec.shape)}")
    p_orig = predict(model, originals).argmax(1)
    out = {}
    for name, rec in batches.items():
        p_rec = predict(model, rec).argmax(1)
        out[name] = ClassLeak(float((p_orig == labels).float().mean()),
                              float((p_rec == labels).float().mean()),
                              float((p_rec == p_orig).float().mean()), int(labels.shape[0]))
    return out if isinstance(reconstructions, Mapping) else out[None]


def mean_image_baseline(attacker_images, n: int) -> torch.Tensor:
    """The trivial attacker: ``n`` copies of the mean of its own images, whatever it intercepts.

    Any attack worth the name must beat this baseline, which uses no information about
    :math:`v_0` at all.
    """
    images = _image_tensor(attacker_images, "attacker_images")
    check_positive_int("n", n)
    mean = _to_float(images).mean(dim=0, keepdim=True)
    return mean.expand(n, *IMAGE_SHAPE).clone()


def noise_queries(n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` images of uniform noise (``uint8``): the least informed query set an attacker can use."""
    check_positive_int("n", n)
    check_positive_int("seed", seed, allow_zero=True)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *IMAGE_SHAPE), generator=g, dtype=torch.uint8)


@dataclass(frozen=True)
class AttackProtocol:
    """The experimental protocol of Chapter 2 (Table 1, Fig. 3), in one place.

    The attacker's query images :math:`X` are ``n_queries`` images of the GTSRB *training* split;
    the victims' images :math:`x_0` are ``n_victims`` images of the *test* split, so the two sets
    are disjoint but, as the paper assumes, "follow the same distribution".  Every split point
    gets its own attacker, trained with ``config`` and cached under ``cache_key`` by
    :func:`load_or_train_attacker`; Chapter 3 reuses the split-4 attacker through
    :func:`chapter_attacker`.
    """

    splits: tuple[int, ...] = (2, 4, 6)
    n_queries: int = 1000
    n_victims: int = 1000
    query_seed: int = 0
    victim_seed: int = 1
    cache_key: str = "victim"
    config: InverseConfig = InverseConfig()

    def __post_init__(self):
        for at in self.splits:
            _check_at(at)
        check_positive_int("n_queries", self.n_queries)
        check_positive_int("n_victims", self.n_victims)
        check_positive_int("query_seed", self.query_seed, allow_zero=True)
        check_positive_int("victim_seed", self.victim_seed, allow_zero=True)
        if not isinstance(self.config, InverseConfig):
            raise TypeError(f"config must be an InverseConfig, got {type(self.config).__name__}")

    def attacker_images(self, train_set: ImageSet) -> ImageSet:
        """The attacker's query set :math:`X`: ``query_subset(train_set, n_queries, seed=query_seed)``."""
        return query_subset(train_set, self.n_queries, seed=self.query_seed)

    def victim_images(self, test_set: ImageSet) -> ImageSet:
        """The vehicles' images :math:`x_0`: ``query_subset(test_set, n_victims, seed=victim_seed)``."""
        return query_subset(test_set, self.n_victims, seed=self.victim_seed)


#: Chapter 2's protocol (Table 1 and everything built on it).
PROTOCOL = AttackProtocol()


def chapter_attacker(
    victim: nn.Sequential,
    train_set: ImageSet,
    *,
    at: int,
    protocol: AttackProtocol = PROTOCOL,
    progress: bool = True,
) -> InverseResult:
    """Chapter 2's black-box attacker against ``victim`` split at ``at`` (trained once, then cached).

    ``load_or_train_attacker(split_oracle(victim, at=at), protocol.attacker_images(train_set),
    at=at, config=protocol.config, cache_key=protocol.cache_key)`` — Algorithm 1's phases 1–2
    with query access only.  Chapter 3 calls it to get the same (clean) split-4 attacker.
    """
    if not isinstance(protocol, AttackProtocol):
        raise TypeError(f"protocol must be an AttackProtocol, got {type(protocol).__name__}")
    return load_or_train_attacker(split_oracle(victim, at=at), protocol.attacker_images(train_set),
                                  at=at, config=protocol.config, cache_key=protocol.cache_key,
                                  progress=progress)


def query_subset(data: ImageSet, n: int, *, seed: int = 0,
                 classes: tuple[int, ...] | None = None) -> ImageSet:
    """A seeded random subset of ``n`` images of ``data`` (optionally only from ``classes``).

    The attacker's query set :math:`X` (from the GTSRB *training* split in the chapter) and the
    victims' evaluation images (from the *test* split) are drawn with this.
    """
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
    check_positive_int("n", n)
    check_positive_int("seed", seed, allow_zero=True)
    pool = torch.arange(len(data))
    if classes is not None:
        classes = tuple(int(c) for c in classes)
        if not classes:
            raise ValueError("classes must name at least one class")
        pool = pool[torch.isin(data.labels, torch.tensor(classes))]
    if n > pool.numel():
        raise ValueError(f"n={n} exceeds the {pool.numel()} available images")
    pick = torch.randperm(pool.numel(), generator=torch.Generator().manual_seed(seed))[:n]
    return data.subset(pool[pick].sort().values)
