"""Compressing the features a vehicle sends: quantisation curves and a learned bottleneck.

Chapter 1, Sect. 1.7.  Two ways to send fewer bytes at a split:

* **uniform quantisation** of the features (:func:`coinfer.costs.quantize_features`), measured
  here for several bit widths at once with :func:`quantized_accuracies`, which runs the device
  part of the network over the test images only once;
* a **learned bottleneck** (:class:`Bottleneck`): a 1×1 convolution on the vehicle maps the
  :math:`C` feature channels at the split to :math:`c \\ll C` code channels, the code is quantised
  and sent, and a 1×1 convolution (followed by a ReLU) on the edge server maps it back to
  :math:`C` channels before the rest of the *unchanged* victim runs.  It starts from principal
  component analysis of the features (:func:`pca_bottleneck`) and is then trained with the
  classification loss while every victim parameter stays frozen (:func:`train_bottleneck`);
  :func:`load_or_train_bottleneck` caches it on disk keyed by everything that determines it.

:func:`bottleneck_costs` counts what the bottleneck split costs, in the rows that
:func:`coinfer.costs.bandwidth_window` and :func:`coinfer.costs.latency` take.

Neither idea is new: successors of Neurosurgeon such as BottleNet (Eshratifar, Esmaili & Pedram
2019) train such bottlenecks end to end; the point of Chapter 1 is to measure what they change in
the latency model on the paper's own network and data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .config import (cache_dir, cached_result, check_positive_float, check_positive_int, file_lock,
                     holds_random_state, module_digest, payload_digest, tensors_digest)
from .costs import RAW_IMAGE_BYTES, FeatureQuantizer, SplitCost, count_flops, quantize_features
from .data import ImageSet
from .models import IMAGE_SHAPE

__all__ = ["run_layers", "quantized_accuracies", "Bottleneck", "BottleneckConfig", "pca_bottleneck",
           "train_bottleneck", "load_or_train_bottleneck", "bottleneck_accuracy", "bottleneck_costs",
           "code_bytes"]


def _check_model(model) -> list[nn.Module]:
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be a flat nn.Sequential (e.g. RoadSignCNN), got "
                        f"{type(model).__name__}")
    return list(model)


def _check_boundary(layers: list[nn.Module], boundary, *, name: str = "boundary") -> int:
    if isinstance(boundary, bool) or not isinstance(boundary, (int, np.integer)) \
            or not 1 <= int(boundary) < len(layers):
        raise ValueError(f"{name} must be an int in 1..{len(layers) - 1} (layers run on the "
                         f"device), got {boundary!r}")
    return int(boundary)


@torch.no_grad()
def run_layers(
    model: nn.Sequential, x: torch.Tensor, *, start: int = 0, stop: int, batch_size: int = 512
) -> torch.Tensor:
    """Output of layers ``start … stop-1`` of a flat network on ``x``, in batches, without gradients.

    ``uint8`` images are first mapped to ``[0, 1]``, as :func:`coinfer.train.predict` does.  With
    ``start=0, stop=k`` this is the device part of a split after ``k`` layers (the features sent);
    a later call with ``start=k`` continues from them, so nested boundaries share one pass.
    """
    layers = _check_model(model)
    check_positive_int("batch_size", batch_size)
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < len(layers):
        raise ValueError(f"start must be an int in 0..{len(layers) - 1}, got {start!r}")
    if isinstance(stop, bool) or not isinstance(stop, int) or not start < stop <= len(layers):
        raise ValueError(f"stop must be an int in {start + 1}..{len(layers)}, got {stop!r}")
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise TypeError("x must be a torch.Tensor of shape (batch, ...)")
    part = nn.Sequential(*layers[start:stop]).eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        chunk = x[i:i + batch_size]
        out.append(part(chunk.float().div_(255.0) if chunk.dtype == torch.uint8 else chunk))
    return torch.cat(out)


def _accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor,
              batch_size: int = 1024, *, data_key: str | None = None) -> float:
    """Top-1 accuracy of ``head`` on ``features``; replayed from the result cache
    (:func:`coinfer.config.cached_result`) when ``data_key`` names ``features`` and ``labels``
    and ``head`` holds no random stream."""
    if data_key is None or holds_random_state(head):
        return _head_accuracy(head, features, labels, batch_size)
    payload = {"head": module_digest(head), "data": data_key, "shape": list(features.shape),
               "batch_size": batch_size, "device": features.device.type}
    return cached_result("head-accuracy", payload,
                         lambda: _head_accuracy(head, features, labels, batch_size))


def _head_accuracy(head, features, labels, batch_size) -> float:
    head.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, features.shape[0], batch_size):
            correct += int((head(features[i:i + batch_size]).argmax(1)
                            == labels[i:i + batch_size]).sum())
    return correct / features.shape[0]


def _check_features(features, labels) -> None:
    if not isinstance(features, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("features and labels must be torch.Tensors")
    if features.shape[0] != labels.shape[0] or features.shape[0] == 0:
        raise ValueError(f"features ({features.shape[0]}) and labels ({labels.shape[0]}) must "
                         f"hold the same, positive number of samples")


def quantized_accuracies(
    model: nn.Sequential, features: torch.Tensor, labels: torch.Tensor, *, boundary: int,
    bits: Sequence[int],
) -> dict[int, float]:
    """Accuracy when the ``features`` after layer ``boundary`` are sent with each of ``bits``.

    The same measurement as :func:`coinfer.costs.compressed_accuracy` (features quantised by
    :func:`coinfer.costs.quantize_features`, then ``layers[boundary:]``), but from features computed
    once with :func:`run_layers`, so a whole curve costs one pass of the device part.

    Returns
    -------
    dict
        ``bits -> accuracy`` in the order of ``bits``.
    """
    layers = _check_model(model)
    boundary = _check_boundary(layers, boundary)
    _check_features(features, labels)
    if not bits:
        raise ValueError("bits must name at least one bit width")
    key = tensors_digest([features, labels])
    return {b: _accuracy(nn.Sequential(FeatureQuantizer(b), *layers[boundary:]), features, labels,
                         data_key=key)
            for b in bits}


# ----------------------------------------------------------------------------------------------
# the learned bottleneck
# ----------------------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    """A 1×1-convolution encoder (on the vehicle) and decoder (on the edge) around a split.

    ``encoder``: :math:`C \\to c` channels, linear; ``decoder``: :math:`c \\to C` channels followed by
    a ReLU, because the victim's features after a ReLU or a max-pool are non-negative.
    """

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("channels", channels)
        if channels > in_channels:
            raise ValueError(f"channels must be at most in_channels = {in_channels} (a bottleneck "
                             f"compresses), got {channels}")
        self.encoder = nn.Conv2d(in_channels, channels, kernel_size=1)
        self.decoder = nn.Sequential(nn.Conv2d(channels, in_channels, kernel_size=1), nn.ReLU())

    def forward(self, features: torch.Tensor, *, bits: int = 32) -> torch.Tensor:  # noqa: D401
        """Decoded features after sending the code with ``bits`` bits per value."""
        return self.decoder(quantize_features(self.encoder(features), bits=bits))


@dataclass(frozen=True)
class BottleneckConfig:
    """Everything that determines a trained :class:`Bottleneck` (and hence its cache key).

    Attributes
    ----------
    channels
        Code channels c sent per spatial position.
    steps, batch_size, lr
        Adam steps (a fixed count), mini-batch size and learning rate of the fine-tuning.
    train_images
        Number of GTSRB training images (drawn with ``seed``) whose features train it.
    seed
        Seeds the image draw and the mini-batch order.
    num_threads
        CPU threads while training (fixed, so that results are reproducible).
    """

    channels: int
    steps: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    train_images: int = 3000
    seed: int = 0
    num_threads: int = 2

    def __post_init__(self):
        check_positive_int("channels", self.channels)
        check_positive_int("steps", self.steps, allow_zero=True)
        check_positive_int("batch_size", self.batch_size)
        check_positive_float("lr", self.lr)
        check_positive_int("train_images", self.train_images)
        check_positive_int("seed", self.seed, allow_zero=True)
        check_positive_int("num_threads", self.num_threads)


@torch.no_grad()
def pca_bottleneck(features: torch.Tensor, *, channels: int) -> Bottleneck:
    """The linear bottleneck of principal component analysis over the channel dimension.

    Treating the feature vector :math:`v \\in \\mathbb{R}^C` at every spatial position of every
    image as a sample with mean :math:`\\mu` and covariance :math:`\\Sigma = U\\Lambda U^\\top`
    (eigenvalues in decreasing order), the encoder is :math:`z = U_c^\\top (v - \\mu)` and the
    decoder :math:`\\hat v = \\mathrm{ReLU}(U_c z + \\mu)` — without the ReLU, the rank-c
    reconstruction of least mean squared error (Eckart–Young).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        raise TypeError("features must be a torch.Tensor of shape (n, C, H, W)")
    in_channels = features.shape[1]
    bottleneck = Bottleneck(in_channels, channels)
    samples = features.permute(0, 2, 3, 1).reshape(-1, in_channels).double()
    mean = samples.mean(0)
    cov = torch.cov((samples - mean).T)
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    top = vectors[:, -channels:].flip(1)  # (C, c), largest first
    # fix each eigenvector's sign (eigh's is arbitrary): largest-magnitude entry positive
    top = top * torch.sign(top.gather(0, top.abs().argmax(0, keepdim=True)))
    bottleneck.encoder.weight.copy_(top.T.float().view(channels, in_channels, 1, 1))
    bottleneck.encoder.bias.copy_(-(top.T @ mean).float())
    bottleneck.decoder[0].weight.copy_(top.float().view(in_channels, channels, 1, 1))
    bottleneck.decoder[0].bias.copy_(mean.float())
    return bottleneck


def train_bottleneck(
    model: nn.Sequential, features: torch.Tensor, labels: torch.Tensor, *, boundary: int,
    config: BottleneckConfig,
) -> Bottleneck:
    """Fit a :class:`Bottleneck` at ``boundary``: PCA start, then Adam on the classification loss.

    The loss is the cross-entropy of ``layers[boundary:](decoder(encoder(v)))`` on ``labels``; only
    the encoder and decoder are trained, every parameter of ``model`` stays as it is.  The code is
    not quantised while training (the quantiser has no useful gradient); the chapter measures the
    accuracy at each bit width afterwards.  Bit-identical for the same inputs, configuration and
    thread count.

    Parameters
    ----------
    model
        The trained flat network (e.g. the victim).
    features, labels
        Features after layer ``boundary`` of training images (:func:`run_layers`) and their labels.
    boundary
        Number of layers run on the device before the encoder.
    config
        The :class:`BottleneckConfig`.
    """
    from .train import fixed_threads

    layers = _check_model(model)
    boundary = _check_boundary(layers, boundary)
    _check_features(features, labels)
    if not isinstance(config, BottleneckConfig):
        raise TypeError(f"config must be a BottleneckConfig, got {type(config).__name__}")
    head = nn.Sequential(*layers[boundary:])
    frozen = [(p, p.requires_grad) for p in head.parameters()]
    with fixed_threads(config.num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        bottleneck = pca_bottleneck(features, channels=config.channels)
        optimiser = torch.optim.Adam(bottleneck.parameters(), lr=config.lr)
        generator = torch.Generator().manual_seed(config.seed)
        head.eval()
        for p, _ in frozen:
            p.requires_grad_(False)
        try:
            n = features.shape[0]
            order = torch.randperm(n, generator=generator)
            position = 0
            for _ in range(config.steps):
                if position + config.batch_size > n:
                    order, position = torch.randperm(n, generator=generator), 0
                idx = order[position:position + config.batch_size]
                position += config.batch_size
                loss = nn.functional.cross_entropy(head(bottleneck(features[idx])), labels[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
    return bottleneck.eval()


_FEATURES: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def load_or_train_bottleneck(
    model: nn.Sequential, train_set: ImageSet, *, boundary: int, config: BottleneckConfig
) -> Bottleneck:
    """:func:`train_bottleneck` on ``config.train_images`` images of ``train_set``, cached on disk.

    The cache key covers the model's parameters, the training images and labels, ``boundary``,
    the whole ``config`` and the torch version.  The device-part features of the drawn training
    images are computed once per process and shared by configurations that differ only in the
    code size or the optimiser.
    """
    layers = _check_model(model)
    boundary = _check_boundary(layers, boundary)
    if not isinstance(config, BottleneckConfig):
        raise TypeError(f"config must be a BottleneckConfig, got {type(config).__name__}")
    if config.train_images > len(train_set):
        raise ValueError(f"config.train_images = {config.train_images} exceeds the "
                         f"{len(train_set)} images of train_set")
    model_hash = tensors_digest(model.state_dict().values())
    data_hash = tensors_digest([train_set.images, train_set.labels])
    payload = dataclasses.asdict(config) | {"model": model_hash, "data": data_hash,
                                            "boundary": boundary,
                                            "torch": torch.__version__.split("+")[0], "format": 1}
    key = payload_digest(payload)
    path = cache_dir("bottlenecks") / f"bottleneck-{key}.pt"
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            try:
                bottleneck = Bottleneck(_channels_at(model, boundary), config.channels)
                bottleneck.load_state_dict(torch.load(path, weights_only=True))
                return bottleneck.eval()
            except Exception:
                path.unlink(missing_ok=True)
        feature_key = f"{model_hash}-{data_hash}-{boundary}-{config.train_images}-{config.seed}"
        if feature_key not in _FEATURES:
            index = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
                config.seed))[:config.train_images].sort().values
            _FEATURES.clear()  # keep one set of features in memory
            _FEATURES[feature_key] = (run_layers(model, train_set.images[index], stop=boundary),
                                      train_set.labels[index])
        features, labels = _FEATURES[feature_key]
        bottleneck = train_bottleneck(model, features, labels, boundary=boundary, config=config)
        tmp = path.with_suffix(".tmp")
        torch.save(bottleneck.state_dict(), tmp)
        tmp.replace(path)
        return bottleneck


def _channels_at(model: nn.Sequential, boundary: int) -> int:
    with torch.no_grad():
        out = nn.Sequential(*list(model)[:boundary])(
            torch.zeros((1, *IMAGE_SHAPE), device=next(model.parameters()).device))
    if out.dim() != 4:
        raise ValueError(f"the output after layer {boundary} is not a feature map (shape "
                         f"{tuple(out.shape)}); a 1×1 bottleneck needs (C, H, W) features")
    return int(out.shape[1])


def bottleneck_accuracy(
    model: nn.Sequential, bottleneck: Bottleneck, features: torch.Tensor, labels: torch.Tensor, *,
    boundary: int, bits: Sequence[int],
) -> dict[int, float]:
    """Accuracy of device part → encoder → ``bits``-bit code → decoder → edge part, per bit width.

    ``features`` are the device part's outputs (:func:`run_layers` with ``stop=boundary``).
    """
    layers = _check_model(model)
    boundary = _check_boundary(layers, boundary)
    _check_features(features, labels)
    if not isinstance(bottleneck, Bottleneck):
        raise TypeError(f"bottleneck must be a Bottleneck, got {type(bottleneck).__name__}")
    if not bits:
        raise ValueError("bits must name at least one bit width")
    key = tensors_digest([features, labels])
    return {b: _accuracy(nn.Sequential(bottleneck.encoder, FeatureQuantizer(b), bottleneck.decoder,
                                       *layers[boundary:]), features, labels, data_key=key)
            for b in bits}


def code_bytes(values: int, *, bits: int) -> int:
    """Bytes to send ``values`` numbers with ``bits`` bits each: ⌈values·bits/8⌉, plus 8 bytes
    (the float32 minimum and maximum of :func:`coinfer.costs.quantize_features`) below 32 bits."""
    check_positive_int("values", values)
    quantize_features(torch.zeros(1, 1), bits=bits)  # validates bits
    return -(-values * bits // 8) + (8 if bits < 32 else 0)


def bottleneck_costs(
    model: nn.Sequential, bottleneck: Bottleneck, *, boundary: int, bits: int
) -> list[SplitCost]:
    """Per-image costs of edge-only, of the bottleneck split, and of device-only inference.

    The bottleneck row counts the device part plus the encoder on the vehicle, the decoder plus
    the edge part on the server, and :func:`code_bytes` of the code.  Edge-only and device-only
    run the original network (no bottleneck); so, unlike the rows of
    :func:`coinfer.costs.boundary_costs`, the bottleneck row's two FLOP counts add up to slightly
    more than the network's (by the encoder's and decoder's FLOPs).
    """
    layers = _check_model(model)
    boundary = _check_boundary(layers, boundary)
    if not isinstance(bottleneck, Bottleneck):
        raise TypeError(f"bottleneck must be a Bottleneck, got {type(bottleneck).__name__}")
    x = torch.zeros((1, *IMAGE_SHAPE), device=next(model.parameters()).device)
    total = count_flops(model, x)
    device_part = nn.Sequential(*layers[:boundary], bottleneck.encoder)
    device = count_flops(device_part, x)
    with torch.no_grad():
        code = device_part(x)
    edge = count_flops(nn.Sequential(bottleneck.decoder, *layers[boundary:]), code)
    label = f"bottleneck m={bottleneck.encoder.out_channels}, {bits} bit"
    return [SplitCost(0, "edge-only", 0, total, RAW_IMAGE_BYTES),
            SplitCost(boundary, label, device, edge, code_bytes(int(code.numel()), bits=bits)),
            SplitCost(len(layers), "device-only", total, 0, 1)]
