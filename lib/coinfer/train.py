"""Training the victim CNN, the ℓ∞ parameter clipping of the defence, and the shared model cache.

* :func:`train_classifier` — Adam with learning rate 10⁻³ (Wu et al. 2021, Sect. 6.1), a fixed
  number of epochs, seeded through ``torch.Generator`` and deterministic at a fixed thread count.
  On CPUs with bf16 matrix units it trains in ``channels_last`` layout under bf16 autocast
  (about 3× faster here); on a GPU it uses CUDA.
* :func:`clip_parameters` — θ ← θ / max(1, ‖θ‖∞ / G), the clipping of the paper's Algorithm 2,
  applied after every optimiser step when ``TrainConfig.clip_bound`` is set.  It is applied to
  the parameters of all six convolutions: every device part θ₁ (split 1…6) is a sub-vector, so one
  clipped victim serves every chapter.
* :func:`load_or_train` — a cache keyed by the full training configuration and the data source,
  so the chapters share one trained victim; a cache hit gives bit-identical weights to retraining.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from dataclasses import dataclass
from typing import Iterable, NamedTuple

import numpy as np
import torch
from torch import nn

from .config import (cache_dir, cached_result, check_positive_float, check_positive_int,
                     default_device, file_lock, holds_random_state, module_digest, payload_digest,
                     progress_bar, tensors_digest)
from .data import ImageSet, load_signs, train_val_split
from .models import RoadSignCNN, road_sign_cnn

__all__ = [
    "TrainConfig",
    "VICTIM",
    "TrainResult",
    "train_classifier",
    "clip_parameters",
    "device_parameters",
    "load_or_train",
    "evaluate",
    "predict",
    "confusion_matrix",
    "most_confused",
    "cpu_supports_bf16",
    "use_bf16",
    "fixed_threads",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained victim (and hence its cache key).

    Attributes
    ----------
    epochs
        Number of passes over the training images (a fixed count, never a time budget).
    batch_size, lr
        Adam's mini-batch size and learning rate (paper: Adam, 10⁻³).
    seed
        Seeds the initial weights and the mini-batch order.
    clip_bound
        G of the defence: when set, θ_conv ← θ_conv / max(1, ‖θ_conv‖∞ / G) after every step.
    val_fraction
        Share of the training split held out for validation (deterministic, see
        :func:`coinfer.data.train_val_split`).
    data
        ``"gtsrb"``, ``"synthetic"`` or ``"auto"`` (see :func:`coinfer.data.load_signs`).
    mixed_precision
        ``"auto"`` (bf16 autocast + channels_last where the CPU has bf16 units, CUDA autocast on
        a GPU), ``"bf16"`` or ``"off"``.
    num_threads
        CPU threads used while training; fixed so that results are reproducible.
    hidden
        Width of the first fully connected layer.
    schedule
        ``"cosine"`` (learning rate annealed from ``lr`` to 0 over the run) or ``"constant"``.
    augment
        Random per-image affine warps and brightness/contrast changes (see ``_augment``).
    """

    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    clip_bound: float | None = None
    val_fraction: float = 0.1
    data: str = "gtsrb"
    mixed_precision: str = "auto"
    num_threads: int = 2
    hidden: int = 256
    schedule: str = "cosine"
    augment: bool = True

    def __post_init__(self):
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_float("lr", self.lr)
        check_positive_int("seed", self.seed, allow_zero=True)
        if self.clip_bound is not None:
            check_positive_float("clip_bound", self.clip_bound)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.data not in ("gtsrb", "synthetic", "auto"):
            raise ValueError(f"data must be 'gtsrb', 'synthetic' or 'auto', got {self.data!r}")
        if self.mixed_precision not in ("auto", "bf16", "off"):
            raise ValueError(
                f"mixed_precision must be 'auto', 'bf16' or 'off', got {self.mixed_precision!r}"
            )
        check_positive_int("num_threads", self.num_threads)
        check_positive_int("hidden", self.hidden)
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not isinstance(self.augment, bool):
            raise TypeError(f"augment must be a bool, got {self.augment!r}")


#: The victim every chapter shares: the paper's CNN on GTSRB, conv parameters clipped to G = 1 so
#: that the defence chapter can perturb the very model the attack chapter inverts.
VICTIM = TrainConfig(epochs=5, clip_bound=1.0)


class TrainResult(NamedTuple):
    """A trained model and how it got there."""

    model: RoadSignCNN
    config: TrainConfig
    history: list[dict]
    cache_hit: bool
    seconds: float


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(mixed_precision: str, device: torch.device) -> bool:
    """Resolve a ``mixed_precision`` setting (``"auto"``, ``"bf16"``, ``"off"``) for ``device``."""
    if mixed_precision == "off":
        return False
    if mixed_precision == "bf16":
        return True
    return device.type == "cuda" or cpu_supports_bf16()


def _use_bf16(config: TrainConfig, device: torch.device) -> bool:
    return use_bf16(config.mixed_precision, device)


@contextlib.contextmanager
def fixed_threads(n: int):
    """Run a block with ``torch.set_num_threads(n)`` and restore the previous count afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def device_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every convolution: the largest device part θ₁ of any split point."""
    return [p for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters()]


@torch.no_grad()
def clip_parameters(params: Iterable[torch.Tensor], *, bound: float) -> float:
    """θ ← θ / max(1, ‖θ‖∞ / G), in place, for the vector θ of all ``params``.

    The clipping step of Algorithm 2 of Wu et al. (2021): it bounds every coordinate by ``G``
    (so the per-coordinate sensitivity is 2G) while keeping the direction of θ.

    Returns
    -------
    float
        The scale factor ``max(1, ‖θ‖∞ / G)`` that was divided out (1.0 means nothing changed).
    """
    bound = check_positive_float("bound", bound)
    params = list(params)
    if not params:
        raise ValueError("params must contain at least one tensor")
    norm = max(float(p.detach().abs().max()) for p in params)
    factor = max(1.0, norm / bound)
    if factor > 1.0:
        for p in params:
            p.div_(factor)
    return factor


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
             generator: torch.Generator | None):
    n = labels.shape[0]
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield images[idx], labels[idx]


def _prepare(images_u8: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = images_u8.to(device, non_blocking=True).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random camera-like distortions, drawn per image from ``generator``.

    A small affine warp (rotation ±10°, scale ±10 %, shift ±2 px; border pixels repeated) and a
    brightness (×0.6…1.4) and contrast (×0.7…1.3) change.  GTSRB's training set consists of
    tracks of near-identical frames, so without such variation the network memorises the tracks
    and generalises worse to the test split.
    """
    n = x.shape[0]
    u = torch.rand(n, 6, generator=generator).to(x.device) * 2 - 1  # six U(-1, 1) draws per image
    angle = u[:, 0] * (10 * torch.pi / 180)
    scale = 1 + 0.1 * u[:, 1]
    shift = u[:, 2:4] * (2 / 16)  # 2 px in affine_grid's [-1, 1] coordinates of a 32-px image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    gain = (1 + 0.4 * u[:, 4]).view(n, 1, 1, 1).to(x.dtype)
    contrast = (1 + 0.3 * u[:, 5]).view(n, 1, 1, 1).to(x.dtype)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean).mul(gain).clamp_(0.0, 1.0)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Class logits for ``uint8`` images ``(n, 3, 32, 32)`` (or floats in [0, 1]), batched."""
    device = device or next(model.parameters()).device
    check_positive_int("batch_size", batch_size)
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size]
        x = _prepare(chunk, device, False) if chunk.dtype == torch.uint8 else chunk.to(device)
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model: nn.Module, data: ImageSet, *, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    if len(data) == 0:
        raise ValueError("data must contain at least one image")
    logits = predict(model, data.images, batch_size=batch_size)
    return float((logits.argmax(1) == data.labels).float().mean())


def confusion_matrix(model: nn.Module, data: ImageSet, *, num_classes: int = 43) -> np.ndarray:
    """``C[i, j]`` = number of images of true class ``i`` predicted as class ``j``.

    Replayed from the result cache (:func:`coinfer.config.cached_result`, keyed by the weights
    and the images) unless ``model`` holds a random stream of its own.
    """
    check_positive_int("num_classes", num_classes)
    if holds_random_state(model):
        return _confusion_matrix(model, data, num_classes)
    payload = {"model": module_digest(model), "data": tensors_digest([data.images, data.labels]),
               "shape": list(data.images.shape), "num_classes": num_classes,
               "device": next(model.parameters()).device.type}
    return cached_result("confusion", payload, lambda: _confusion_matrix(model, data, num_classes))


def _confusion_matrix(model: nn.Module, data: ImageSet, num_classes: int) -> np.ndarray:
    pred = predict(model, data.images).argmax(1).numpy()
    return np.bincount(data.labels.numpy() * num_classes + pred,
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


def most_confused(cm: np.ndarray, *, top: int = 5) -> list[tuple[int, int, int]]:
    """The ``top`` largest off-diagonal entries of a confusion matrix as ``(true, predicted, count)``."""
    check_positive_int("top", top)
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square matrix, got shape {cm.shape}")
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:top]
    return [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))
            if off[i, j] > 0]


def train_classifier(
    config: TrainConfig,
    *,
    train_set: ImageSet | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the paper's CNN with Adam (Sect. 6.1 of Wu et al. 2021) for ``config.epochs`` epochs.

    With ``config.clip_bound = G`` it applies :func:`clip_parameters` to the convolution
    parameters after every optimiser step (the clipping of Algorithm 2).  Given the same
    configuration, data, device and thread count it returns bit-identical weights.

    Parameters
    ----------
    config
        The :class:`TrainConfig`.
    train_set
        Training images; by default ``load_signs("train", source=config.data)``.  The validation
        part (``config.val_fraction``) is held out and scored after every epoch.
    device
        Defaults to :func:`coinfer.config.default_device`.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    device = device or default_device()
    if train_set is None:
        train_set = load_signs("train", source=config.data, progress=progress)
    tr_idx, val_idx = train_val_split(len(train_set), val_fraction=config.val_fraction,
                                      seed=config.seed)
    train_part, val_part = train_set.subset(tr_idx), train_set.subset(val_idx)
    bf16 = _use_bf16(config, device)
    channels_last = bf16 and device.type == "cpu"
    start = time.perf_counter()
    history: list[dict] = []
    with fixed_threads(config.num_threads):
        model = road_sign_cnn(seed=config.seed, hidden=config.hidden).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
        loss_fn = nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(config.seed)
        clipped = device_parameters(model)
        steps_per_epoch = -(-len(train_part) // config.batch_size)
        scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(
            optimiser, T_max=config.epochs * steps_per_epoch)
            if config.schedule == "cosine" else None)
        bar = progress_bar(total=config.epochs * steps_per_epoch, desc="training victim",
                           progress=progress, mininterval=1.0)
        for epoch in range(config.epochs):
            model.train()
            total, count = 0.0, 0
            for xb, yb in _batches(train_part.images, train_part.labels, config.batch_size,
                                   generator):
                x = _prepare(xb, device, channels_last)
                if config.augment:
                    x = _augment(x, generator)
                y = yb.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = loss_fn(model(x), y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if scheduler is not None:
                    scheduler.step()
                if config.clip_bound is not None:
                    clip_parameters(clipped, bound=config.clip_bound)
                total += float(loss.detach()) * len(yb)
                count += len(yb)
                bar.update(1)
            val_acc = evaluate(model, val_part)
            history.append({"epoch": epoch + 1, "train_loss": total / count, "val_acc": val_acc})
            bar.set_postfix(loss=f"{total / count:.3f}", val_acc=f"{val_acc:.3f}")
        bar.close()
    model = model.to(memory_format=torch.contiguous_format).eval()
    return TrainResult(model, config, history, False, time.perf_counter() - start)


def _fingerprint(data: ImageSet) -> str:
    """Hash of the images and labels themselves, so that the cache does not depend on paths."""
    digest = hashlib.sha256()
    digest.update(data.images.contiguous().numpy().tobytes())
    digest.update(data.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _cache_key(config: TrainConfig, data: ImageSet, device: torch.device) -> str:
    # bf16/device change the arithmetic, so they are part of what identifies the weights.
    payload = dataclasses.asdict(config) | {
        "data_fingerprint": _fingerprint(data),
        "device": device.type,
        "bf16": _use_bf16(config, device),
        "torch": torch.__version__.split("+")[0],
        "format": 2,  # bump whenever the training code changes its arithmetic
    }
    return payload_digest(payload)


def load_or_train(
    config: TrainConfig = VICTIM,
    *,
    train_set: ImageSet | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    retrain: bool = False,
) -> TrainResult:
    """The trained victim for ``config``: from the model cache when present, else trained and cached.

    The cache key covers the whole configuration, a hash of the training images and labels, the
    device type, bf16 use and the torch version.  Checkpoints are loaded with ``weights_only=True``; a corrupt checkpoint
    is retrained, not crashed on.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    device = device or default_device()
    if train_set is None:
        train_set = load_signs("train", source=config.data, progress=progress)
    path = cache_dir("models") / f"victim-{_cache_key(config, train_set, device)}.pt"
    # A lock per checkpoint: when two notebooks (or a notebook and a test) need the same victim at
    # once, the second waits for the first to finish training and then loads its checkpoint.
    with file_lock(path.with_suffix(".lock")):
        return _load_or_train_locked(path, config, train_set, device, progress, retrain)


def _load_or_train_locked(path, config, train_set, device, progress, retrain) -> TrainResult:
    if path.exists() and not retrain:
        try:
            blob = torch.load(path, map_location=device, weights_only=True)
            model = road_sign_cnn(seed=config.seed, hidden=config.hidden,
                                  num_classes=blob["num_classes"]).to(device)
            model.load_state_dict(blob["state_dict"])
            return TrainResult(model.eval(), config, blob["history"], True, 0.0)
        except Exception:
            path.unlink(missing_ok=True)
    result = train_classifier(config, train_set=train_set, device=device, progress=progress)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": result.model.state_dict(), "history": result.history,
                "num_classes": result.model.num_classes}, tmp)
    tmp.replace(path)
    return result
