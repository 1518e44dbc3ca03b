"""The black-box spear of Sect. 2.2: phase 3 (*reconstruct*), Algorithm 1 end to end, the cache.

* :func:`reconstruct` — phase 3 of Algorithm 1: :math:`x_0' = g_\\omega(v_0)`;
* :func:`black_box_attack` — observe → learn → reconstruct, returning an :class:`AttackResult`;
* :func:`load_or_train_attacker` — the trained :math:`g_\\omega` (phases 1–2) from the disk cache
  ``coinfer.config.cache_dir("attackers")``, or trained anew and saved there;
* :func:`adaptive_attack` — Algorithm 1 against a *defended* device part (Chapter 3's adaptive
  attacker), its inverse cached like any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Callable, NamedTuple

import torch
from torch import nn

from ..config import cache_dir, check_positive_int, file_lock, payload_digest
from ..models import IMAGE_SHAPE
from ._checks import _check_at, _check_features, _image_tensor
from .inverse import InverseConfig, InverseNetwork, InverseResult, _use_bf16, inverse_network, learn
from .threat import QueryAccess, _check_oracle, observe

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
    digest = payload_digest(payload)
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


def adaptive_attack(
    device_model: nn.Module,
    attacker_images,
    intercepted_features: torch.Tensor,
    *,
    at: int,
    config: InverseConfig,
    cache_key: str = "adaptive",
    progress: bool = False,
) -> AttackResult:
    r"""Algorithm 1 against a *defended* device part: the adaptive attacker of Chapter 3.

    The attacker queries the deployed device part (noise and all) through :class:`QueryAccess`
    and trains its inverse on those answers, as in :func:`black_box_attack`, with one change: it
    divides every feature by one global scale :math:`s`, the standard deviation of the features
    it intercepted, and scales its own queries' answers alike (parameter noise can inflate the
    activations by orders of magnitude, which would otherwise stall Adam).  It returns
    :math:`g_\omega(v_0 / s)`.

    The trained inverse is cached by :func:`load_or_train_attacker` under ``cache_key``: the key
    holds the black-box fingerprint of the *scaled, defended* oracle, so every deployment (shield,
    strength, seed) gets its own attacker, and a re-run of the same deployment loads it.
    """
    if not isinstance(device_model, nn.Module):
        raise TypeError(f"device_model must be an nn.Module, got {type(device_model).__name__}")
    if not isinstance(config, InverseConfig):
        raise TypeError(f"config must be an InverseConfig, got {type(config).__name__}")
    at = _check_at(at)
    intercepted_features = _check_features(intercepted_features, at, "intercepted_features")
    oracle = QueryAccess(device_model, num_threads=config.num_threads)
    scale = float(intercepted_features.float().std()) or 1.0
    inverse = load_or_train_attacker(lambda images: oracle(images) / scale, attacker_images,
                                     at=at, config=config, cache_key=cache_key, progress=progress)
    return AttackResult(reconstruct(inverse.model, intercepted_features / scale), inverse,
                        inverse.history)
