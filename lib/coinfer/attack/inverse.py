"""The inverse network :math:`g_\\omega` and phase 2 of Algorithm 1 (*learn*), Sect. 2.2.

* :class:`InverseConfig` — everything that determines a trained :math:`g_\\omega` (and its cache
  key);
* :class:`InverseNetwork`, :func:`inverse_network`, :func:`inverse_strides` — the paper's two
  transposed convolutions (Wu et al. 2021, Sect. 6.1) or a deeper variant;
* :func:`learn` — train :math:`g_\\omega` on the pairs :math:`(f_{\\theta_1}(x_i), x_i)` with the
  loss of the paper

  .. math:: l(\\omega; X) = \\frac{1}{n} \\sum_{i=1}^{n}
            \\lVert g_\\omega(f_{\\theta_1}(x_i)) - x_i \\rVert_2^2 ,

  returning an :class:`InverseResult`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..config import check_positive_float, check_positive_int, progress_bar
from ..models import IMAGE_SHAPE, feature_shape
from ..train import fixed_threads, use_bf16
from ._checks import _check_at, _check_features, _image_tensor, _to_float

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


def check_adaptive_attacker(attacker_images, adaptive_config) -> None:
    """Check the optional adaptive attacker of a defence evaluation: both arguments or neither.

    An adaptive attacker runs Algorithm 1 against the *defended* device, so it needs its query
    images (``attacker_images``) and its training settings (``adaptive_config``, an
    :class:`InverseConfig`) together.
    """
    if (attacker_images is None) != (adaptive_config is None):
        raise ValueError("pass both attacker_images and adaptive_config (adaptive attacker) "
                         "or neither")
    if adaptive_config is not None and not isinstance(adaptive_config, InverseConfig):
        raise TypeError(f"adaptive_config must be an InverseConfig, got "
                        f"{type(adaptive_config).__name__}")


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
        bar = progress_bar(range(1, config.max_epochs + 1), desc=f"learning g_ω (split {at})",
                           progress=progress, mininterval=1.0)
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

