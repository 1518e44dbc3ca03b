"""Checkers of assignment 2, the spear (chapter 2): PSNR and the three phases of the black-box
reconstruction attack (observe, train the inverse model, reconstruct).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from .base import TaskResult, _as_array, _checker_model, _close, _fmt, _raises, call, run_checks

__all__ = [
    "check_psnr",
    "check_observe",
    "check_train_inverse",
    "check_reconstruct",
]


def _image_pairs(seed: int = 21) -> tuple[torch.Tensor, torch.Tensor]:
    """Five images in [0, 1] and five noisy versions with very different noise levels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((5, 3, 32, 32), generator=g, dtype=torch.float64)
    levels = torch.tensor([0.01, 0.05, 0.1, 0.2, 0.4], dtype=torch.float64).view(5, 1, 1, 1)
    y = (x + levels * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.float(), y.float()


def check_psnr(psnr: Callable, *, task: str = "2.1", quiet: bool = False) -> TaskResult:
    """Check ``psnr(original, reconstructed) -> array (n,)`` against :func:`coinfer.metrics.psnr`
    (images in [0, 1], one value per image, ``inf`` for a perfect copy)."""
    from ... import metrics

    x, y = _image_pairs()

    def values(a, b, what):
        return _as_array(call(psnr, a, b), (a.shape[0],), f"psnr({what})", allow_inf=True)

    def compare(a, b, what):
        got = values(a, b, what)
        if isinstance(got, str):
            return got
        ref = metrics.psnr(a, b)
        if np.allclose(got, ref, rtol=1e-5, atol=1e-4, equal_nan=False):
            return None
        with np.errstate(invalid="ignore"):
            offset = got - ref
        if np.all(np.isfinite(offset)) and np.allclose(offset, offset[0], atol=1e-3):
            if abs(offset[0] - 20 * math.log10(255)) < 1e-2:
                return (f"values are 48.1 dB too high for {what}: the peak of images in [0, 1] "
                        "is 1, not 255")
            return f"values are off by a constant {_fmt(float(offset[0]))} dB for {what}"
        return f"wrong PSNR for {what} (got {', '.join(_fmt(float(v)) for v in got[:3])}, …)"

    def per_image():
        got = values(x, y, "five images")
        if isinstance(got, str):
            return got
        if np.ptp(got) < 1e-6:
            return "every image gets the same value: compute the MSE per image"
        return compare(x, y, "five images with different noise levels")

    def identical():
        a = torch.cat([x[:2], x[2:3]])
        b = torch.cat([x[:2], y[2:3]])
        got = values(a, b, "identical images")
        if isinstance(got, str):
            return got
        if not (math.isinf(got[0]) and got[0] > 0 and math.isinf(got[1])):
            return f"psnr(x, x) should be +inf for a perfect copy, got {_fmt(float(got[0]))}"
        if not math.isfinite(got[2]):
            return "one perfect copy in the batch made the other values infinite"
        return compare(a, b, "a batch with perfect copies")

    def single():
        return compare(x[:1], y[:1], "a single image")

    def grey():
        a = torch.full((2, 3, 32, 32), 0.5)
        b = a.clone()
        b[0, :, :16] = 0.25
        b[1] = 0.75
        return compare(a, b, "flat grey images")

    def mismatch():
        problem = _raises(psnr, ValueError, x, y[:, :, :16])
        return f"images of different shapes: psnr {problem}" if problem else None

    checks = [
        ("noisy images", lambda: compare(x, y, "noisy images")),
        ("one value per image", per_image),
        ("perfect copy", identical),
        ("single image", single),
        ("flat images", grey),
        ("shape mismatch", mismatch),
    ]
    return run_checks(task, "PSNR", psnr, checks, quiet=quiet)


def _attack_problem(n: int, seed: int = 31):
    """A victim CNN (fixed seed) and ``n`` synthetic ``uint8`` road signs."""
    from ...data import synthetic_signs

    return _checker_model(seed=seed), synthetic_signs(n, seed=seed).images


class _RecordingOracle:
    """Black-box access that records the batches it is sent (sizes, dtypes, ranges)."""

    def __init__(self, device_model):
        from ...attack import QueryAccess

        self._oracle = QueryAccess(device_model)
        self.sizes: list[int] = []
        self.bad_inputs: list[str] = []

    def __call__(self, images):
        if not isinstance(images, torch.Tensor):
            self.bad_inputs.append(f"a {type(images).__name__}")
        elif not images.is_floating_point():
            self.bad_inputs.append(f"a {images.dtype} tensor")
        elif images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            self.bad_inputs.append("floats outside [0, 1]")
        else:
            self.sizes.append(int(images.shape[0]))
        return self._oracle(images)


def check_observe(observe: Callable, *, task: str = "2.2", quiet: bool = False) -> TaskResult:
    """Check ``observe(oracle, images, *, batch_size) -> features`` (phase 1 of Algorithm 1)
    against :func:`coinfer.attack.observe`."""
    from ... import attack
    from ...models import split

    model, images = _attack_problem(n=40)
    device = split(model, at=1).device

    def run(batch_size, imgs=images):
        oracle = _RecordingOracle(device)
        out = call(observe, oracle, imgs, batch_size=batch_size)
        return oracle, out

    def compare(batch_size):
        oracle, got = run(batch_size)
        if oracle.bad_inputs:
            return (f"the oracle was sent {oracle.bad_inputs[0]}: convert the uint8 images "
                    "with to_float")
        if not isinstance(got, torch.Tensor):
            return f"should return a torch.Tensor, got {type(got).__name__}"
        ref = attack.observe(attack.QueryAccess(device), images)
        if tuple(got.shape) != tuple(ref.shape):
            return f"features have shape {tuple(got.shape)} for {images.shape[0]} images"
        if not torch.allclose(got.float(), ref, rtol=1e-5, atol=1e-6):
            return f"wrong features (batch_size={batch_size})"
        return None

    def batches():
        oracle, _ = run(16)
        if oracle.bad_inputs:
            return f"the oracle was sent {oracle.bad_inputs[0]}"
        if max(oracle.sizes, default=0) > 16:
            return f"sent {max(oracle.sizes)} images in one query with batch_size=16"
        if sum(oracle.sizes) != images.shape[0]:
            return (f"sent {sum(oracle.sizes)} images in all for {images.shape[0]} images: "
                    "query each image exactly once")
        return None

    def detached():
        _, got = run(32)
        if not isinstance(got, torch.Tensor):
            return f"should return a torch.Tensor, got {type(got).__name__}"
        if got.requires_grad:
            return "the features still track gradients (query under torch.no_grad())"
        if got.dtype != torch.float32 or got.device.type != "cpu":
            return f"features should be float32 on the CPU, got {got.dtype} on {got.device}"
        return None

    def invalid():
        problem = _raises(observe, ValueError, _RecordingOracle(device), images, batch_size=0)
        return f"batch_size=0 {problem}" if problem else None

    checks = [
        ("one batch", lambda: compare(128)),
        ("several batches", lambda: compare(32)),
        ("uneven last batch", lambda: compare(24)),
        ("batch sizes", batches),
        ("plain tensor", detached),
        ("invalid batch size", invalid),
    ]
    return run_checks(task, "observe", observe, checks, quiet=quiet)


def _inverse_problem():
    """96 synthetic signs, feature maps of the shape of split 5 and a small inverse network.

    The features are a cheap fixed encoder (4×4 average pooling, a seeded 1×1 convolution to 64
    channels, ReLU) rather than the victim's: checking a training loop needs a learnable inverse
    problem of the right shape, not the victim's cost.
    """
    from ...attack import InverseConfig, inverse_network
    from ...data import synthetic_signs

    images = synthetic_signs(96, seed=32).images
    g = torch.Generator().manual_seed(33)
    weight = torch.randn((64, 3, 1, 1), generator=g)
    bias = 0.1 * torch.randn(64, generator=g)
    with torch.no_grad():
        pooled = torch.nn.functional.avg_pool2d(_float_images(images), 4)
        features = torch.relu(torch.nn.functional.conv2d(pooled, weight, bias))
    make = lambda seed=3: inverse_network(5, InverseConfig(width=8, seed=seed))  # noqa: E731
    return features, images, make


def _float_images(images: torch.Tensor) -> torch.Tensor:
    from ...data import to_float

    return to_float(images)


def _mse_of(model: nn.Module, features: torch.Tensor, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model.eval()(features),
                                                  _float_images(images)))


def check_train_inverse(train_inverse: Callable, *, task: str = "2.3", quiet: bool = False
                        ) -> TaskResult:
    """Check ``train_inverse(inverse, features, images, *, epochs, batch_size, lr, seed)`` — the
    learning phase of Algorithm 1 — against :func:`coinfer.attack.learn`.

    The student's loop must minimise the paper's loss (the per-pixel MSE) with Adam on seeded
    random mini-batches, return one mean training loss per epoch, be reproducible, and reach
    (on the training pairs) an error no worse than 1.3 times that of the library's
    :func:`~coinfer.attack.learn` run for as many epochs.
    """
    from ...attack import InverseConfig, learn

    features, images, make = _inverse_problem()
    f_copy, i_copy = features.clone(), images.clone()
    kw = dict(epochs=6, batch_size=16, lr=1e-2)
    runs: dict[int, tuple[nn.Module, object]] = {}

    def trained(seed: int = 0):
        if seed not in runs:
            inverse = make()
            losses = call(train_inverse, inverse, features, images, seed=seed, **kw)
            runs[seed] = (inverse, losses)
        return runs[seed]

    def losses_ok():
        _, losses = trained()
        try:
            losses = [float(v) for v in losses]
        except (TypeError, ValueError):
            return f"should return a list of floats (one per epoch), got {type(losses).__name__}"
        if len(losses) != kw["epochs"]:
            return f"returned {len(losses)} losses for {kw['epochs']} epochs"
        if not all(math.isfinite(v) for v in losses):
            return "the losses contain nan or inf"
        if not losses[-1] < losses[0]:
            return "the training loss does not decrease"
        return None

    def learns():
        inverse, _ = trained()
        before = _mse_of(make(), features, images)
        after = _mse_of(inverse, features, images)
        if not after < 0.8 * before:
            return "the inverse network hardly improves: are its parameters being updated?"
        ref = learn(features, images, at=5, progress=False,
                    config=InverseConfig(width=8, seed=3, max_epochs=kw["epochs"],
                                         patience=kw["epochs"] + 1, batch_size=kw["batch_size"],
                                         lr=kw["lr"], lr_drops=0, mixed_precision="off"))
        reference = _mse_of(ref.model, features, images)
        if after > 1.3 * reference + 1e-4:
            return (f"after training the error is {_fmt(after)}, much worse than the library's "
                    "learn() reaches with the same budget")
        return None

    def paper_loss():
        inverse = make()
        expected = _mse_of(inverse, features, images)
        losses = call(train_inverse, inverse, features, images, epochs=1, batch_size=96,
                      lr=1e-12, seed=0)
        try:
            first = float(list(losses)[0])
        except (TypeError, ValueError, IndexError):
            return "should return a list of floats (one per epoch)"
        if not _close(first, expected, rtol=1e-3):
            return (f"for one full batch the reported loss is {_fmt(first)}: report the mean "
                    "per-pixel squared error of the paper's loss")
        return None

    def reproducible():
        inverse, _ = trained()
        again = make()
        call(train_inverse, again, features, images, seed=0, **kw)
        same = all(torch.equal(p, q) for p, q in zip(inverse.parameters(), again.parameters()))
        return None if same else "two runs with the same seed give different weights"

    def seeded():
        inverse, _ = trained(0)
        other, _ = trained(1)
        same = all(torch.equal(p, q) for p, q in zip(inverse.parameters(), other.parameters()))
        return ("seed 0 and seed 1 give the same weights: shuffle the mini-batches with a "
                "torch.Generator seeded with seed") if same else None

    def untouched():
        trained()
        if not (torch.equal(features, f_copy) and torch.equal(images, i_copy)):
            return "the function modified the features or the images"
        return None

    checks = [
        ("losses", losses_ok),
        ("learning", learns),
        ("the paper's loss", paper_loss),
        ("reproducible", reproducible),
        ("seeded shuffling", seeded),
        ("inputs unchanged", untouched),
    ]
    return run_checks(task, "training the inverse model", train_inverse, checks, quiet=quiet)


def check_reconstruct(reconstruct: Callable, *, task: str = "2.4", quiet: bool = False
                      ) -> TaskResult:
    """Check ``reconstruct(inverse, features, *, batch_size) -> images`` (phase 3 of
    Algorithm 1) against :func:`coinfer.attack.reconstruct`."""
    from ... import attack

    features, images, make = _inverse_problem()
    inverse = make(seed=4)

    def compare(batch_size, n=features.shape[0]):
        got = call(reconstruct, inverse, features[:n], batch_size=batch_size)
        if not isinstance(got, torch.Tensor):
            return f"should return a torch.Tensor, got {type(got).__name__}"
        ref = attack.reconstruct(inverse, features[:n])
        if tuple(got.shape) != tuple(ref.shape):
            return f"returned shape {tuple(got.shape)} for {n} feature maps"
        if not torch.allclose(got.float(), ref, rtol=1e-5, atol=1e-6):
            return f"wrong images (batch_size={batch_size})"
        return None

    def batches():
        sizes: list[int] = []
        hook = inverse.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
        try:
            call(reconstruct, inverse, features, batch_size=20)
        finally:
            hook.remove()
        if not sizes or max(sizes) > 20:
            return f"ran {max(sizes, default=0)} feature maps at once with batch_size=20"
        return None

    def no_grad():
        got = call(reconstruct, inverse, features[:8], batch_size=8)
        if isinstance(got, torch.Tensor) and got.requires_grad:
            return "the images still track gradients (reconstruct under torch.no_grad())"
        return None

    def eval_mode():
        noisy = nn.Sequential(*inverse, nn.Dropout(0.5)).train()
        got = call(reconstruct, noisy, features[:8], batch_size=8)
        ref = attack.reconstruct(noisy, features[:8])
        if not isinstance(got, torch.Tensor) or not torch.allclose(got.float(), ref):
            return "a network with dropout gives random images: switch to eval mode"
        return None

    checks = [
        ("one batch", lambda: compare(128)),
        ("uneven batches", lambda: compare(25)),
        ("single feature map", lambda: compare(4, n=1)),
        ("batch sizes", batches),
        ("no gradients", no_grad),
        ("eval mode", eval_mode),
    ]
    return run_checks(task, "reconstruct", reconstruct, checks, quiet=quiet)
