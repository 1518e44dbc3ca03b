"""The honest-but-curious edge server's spear (Sect. 2.6): rMLE from the inverse network's output.

Link encryption stops an eavesdropper on the radio link, but not the party the features are
*meant* for.  The edge server (or the service provider that runs it) decrypts :math:`v_0` to
finish the inference, and it deployed :math:`f_{\\theta_1}` itself, so it knows :math:`\\theta_1`:
it can run the white-box attack of He et al. (2019).  This module runs that attack properly:

* :func:`search_tv_weight` — the TV weight :math:`\\lambda` of the rMLE objective chosen by a
  computed search on the server's *own* images (never the victims'), all candidates optimised
  together as one batch, a :class:`TVSearch`;
* :func:`curious_server_attack` — the rMLE of :func:`~coinfer.attack.white_box_attack` started
  from the black-box inverse network's reconstruction :math:`g_\\omega(v_0)` with the searched
  :math:`\\lambda`, optionally cached on disk, a :class:`ServerAttackResult`.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..config import cache_dir, check_positive_float, check_positive_int, file_lock, payload_digest
from ._checks import _check_at, _check_features, _image_tensor, _to_float
from .black_box import _tensor_digest, reconstruct
from .inverse import InverseResult
from .white_box import WhiteBoxResult, white_box_attack

__all__ = ["TV_SEARCH_GRID", "TVSearch", "search_tv_weight", "ServerAttackResult",
           "curious_server_attack"]

#: The TV weights λ searched by :func:`search_tv_weight` (0 = no prior: trust the start and the
#: data term alone).
TV_SEARCH_GRID: tuple[float, ...] = (0.0, 1e-3, 1e-2, 0.1, 1.0)

_CACHE_FORMAT = 1


class TVSearch(NamedTuple):
    """The outcome of :func:`search_tv_weight`.

    Attributes
    ----------
    tv_weight
        The chosen :math:`\\lambda` (highest mean PSNR; the smallest such λ on a tie).
    scores
        ``{λ: mean PSNR (dB)}`` of the rMLE on the server's own images.
    start_psnr
        Mean PSNR of the starting point :math:`g_\\omega(f_{\\theta_1}(x))` on those images (what
        the optimisation has to improve on).
    n_images
        Number of own images searched on.
    """

    tv_weight: float
    scores: dict[float, float]
    start_psnr: float
    n_images: int


def _psnr(original: torch.Tensor, reconstructed: torch.Tensor) -> np.ndarray:
    from ..metrics import psnr

    return psnr(original, reconstructed)


def _check_grid(grid) -> tuple[float, ...]:
    if not isinstance(grid, (tuple, list)) or not grid:
        raise ValueError(f"grid must be a non-empty tuple of TV weights >= 0, got {grid!r}")
    return tuple(check_positive_float("grid entries", w, allow_zero=True) for w in grid)


def search_tv_weight(
    device_model: nn.Module,
    images,
    *,
    at: int,
    inverse: InverseResult | nn.Module,
    grid: tuple[float, ...] = TV_SEARCH_GRID,
    steps: int = 300,
    lr: float = 0.05,
    progress: bool = False,
) -> TVSearch:
    """Choose the rMLE's TV weight :math:`\\lambda` on the server's own images (a held-out set).

    The server computes :math:`v = f_{\\theta_1}(x)` of images :math:`x` it owns, runs the rMLE
    (:func:`~coinfer.attack.white_box_attack`) from :math:`g_\\omega(v)` with every
    :math:`\\lambda` of ``grid`` — with the same ``steps`` and ``lr`` as the attack itself — and
    keeps the :math:`\\lambda` of the highest mean PSNR against :math:`x`.  The candidates run as
    one batch (one image per pair of own image and :math:`\\lambda`).

    Parameters
    ----------
    device_model
        :math:`f_{\\theta_1}` (white-box access).
    images
        The server's own images (``uint8`` or float in ``[0, 1]``, or an ImageSet), disjoint from
        the victims' images.
    at
        The split point.
    inverse
        The black-box inverse network :math:`g_\\omega` for split ``at`` (the starting point).
    grid, steps, lr
        Candidate weights, Adam steps and learning rate.
    """
    at = _check_at(at)
    grid = _check_grid(grid)
    check_positive_int("steps", steps)
    check_positive_float("lr", lr)
    x = _to_float(_image_tensor(images, "images"))
    params = next(iter(device_model.parameters()), None)
    with torch.no_grad():
        v = device_model(x.to(params.device if params is not None else "cpu")).float().cpu()
    _check_features(v, at, "device_model outputs")
    start = reconstruct(inverse, v)
    k, m = x.shape[0], len(grid)
    weights = torch.tensor(grid, dtype=torch.float32).repeat_interleave(k)
    result = white_box_attack(device_model, v.repeat(m, 1, 1, 1), at=at, tv_weight=weights,
                              steps=steps, lr=lr, batch_size=k * m, progress=progress,
                              init=start.repeat(m, 1, 1, 1))
    scores_all = _psnr(x.repeat(m, 1, 1, 1), result.reconstructions).reshape(m, k).mean(axis=1)
    scores = {w: float(p) for w, p in zip(grid, scores_all)}
    best = grid[int(np.argmax(scores_all))]
    return TVSearch(float(best), scores, float(_psnr(x, start).mean()), k)


class ServerAttackResult(NamedTuple):
    """The outcome of :func:`curious_server_attack`.

    Attributes
    ----------
    search
        The :class:`TVSearch` that chose :math:`\\lambda`.
    start
        The starting images :math:`g_\\omega(v_0)` (the black-box reconstructions).
    attack
        The :class:`~coinfer.attack.WhiteBoxResult` of the rMLE from ``start``; its history starts
        at step 0 (the objective at ``start``).
    cache_hit
        True when the result was loaded from the disk cache.
    """

    search: TVSearch
    start: torch.Tensor
    attack: WhiteBoxResult
    cache_hit: bool = False


def _module_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(_tensor_digest(t.float()).encode())
    return h.hexdigest()[:16]


def curious_server_attack(
    device_model: nn.Module,
    intercepted_features: torch.Tensor,
    *,
    at: int,
    inverse: InverseResult | nn.Module,
    own_images,
    grid: tuple[float, ...] = TV_SEARCH_GRID,
    steps: int = 300,
    lr: float = 0.05,
    log_every: int = 10,
    cache_key: str | None = None,
    progress: bool = False,
) -> ServerAttackResult:
    """The honest-but-curious edge server's white-box attack on the features it receives.

    1. choose :math:`\\lambda` by :func:`search_tv_weight` on ``own_images``;
    2. solve the rMLE objective of He et al. (2019) (:func:`~coinfer.attack.white_box_attack`),

       .. math:: x_0' = \\arg\\min_x \\tfrac1d \\lVert f_{\\theta_1}(x) - v_0 \\rVert_2^2
                 + \\lambda\\,\\mathrm{TV}(x),

       by ``steps`` Adam steps from :math:`x = g_\\omega(v_0)`, the black-box inverse network's
       reconstruction (the server can train :math:`g_\\omega` on its own images: it can
       compute :math:`f_{\\theta_1}`).

    With ``cache_key`` the result is stored in ``cache_dir("whitebox")`` keyed by every input
    (digests of the features, the own images and both networks' weights, the settings and the
    torch version), and loaded from there when present.
    """
    if not isinstance(device_model, nn.Module):
        raise TypeError(f"device_model must be an nn.Module (white-box access), got "
                        f"{type(device_model).__name__}")
    at = _check_at(at)
    intercepted_features = _check_features(intercepted_features, at, "intercepted_features")
    grid = _check_grid(grid)
    check_positive_int("steps", steps)
    check_positive_float("lr", lr)
    check_positive_int("log_every", log_every)
    own = _image_tensor(own_images, "own_images")
    inverse_model = inverse.model if isinstance(inverse, InverseResult) else inverse
    if not isinstance(inverse_model, nn.Module):
        raise TypeError(f"inverse must be an InverseResult or nn.Module, got "
                        f"{type(inverse).__name__}")

    def compute() -> ServerAttackResult:
        search = search_tv_weight(device_model, own, at=at, inverse=inverse_model, grid=grid,
                                  steps=steps, lr=lr, progress=progress)
        start = reconstruct(inverse_model, intercepted_features)
        result = white_box_attack(device_model, intercepted_features, at=at,
                                  tv_weight=search.tv_weight, steps=steps, lr=lr, init=start,
                                  log_every=log_every, progress=progress)
        return ServerAttackResult(search, start, result)

    if cache_key is None:
        return compute()
    if not isinstance(cache_key, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", cache_key):
        raise ValueError(
            f"cache_key must be 1-64 characters from letters, digits and '-_.', got {cache_key!r}"
        )
    payload = {"at": at, "grid": list(grid), "steps": steps, "lr": lr, "log_every": log_every,
               "features": _tensor_digest(intercepted_features.float()),
               "own": _tensor_digest(own), "device_model": _module_digest(device_model),
               "inverse": _module_digest(inverse_model),
               "torch": torch.__version__.split("+")[0], "format": _CACHE_FORMAT}
    digest = payload_digest(payload)
    path = cache_dir("whitebox") / f"{cache_key}-at{at}-{digest}.pt"
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                search = TVSearch(float(blob["tv_weight"]),
                                  {float(k): float(v) for k, v in blob["scores"]},
                                  float(blob["start_psnr"]), int(blob["n_images"]))
                attack = WhiteBoxResult(blob["reconstructions"], blob["feature_error"].numpy(),
                                        list(blob["history"]))
                return ServerAttackResult(search, blob["start"], attack, True)
            except Exception:  # a corrupt file is recomputed, not crashed on
                path.unlink(missing_ok=True)
        out = compute()
        tmp = path.with_suffix(".tmp")
        torch.save({"tv_weight": out.search.tv_weight,
                    "scores": [[k, v] for k, v in out.search.scores.items()],
                    "start_psnr": out.search.start_psnr, "n_images": out.search.n_images,
                    "reconstructions": out.attack.reconstructions,
                    "feature_error": torch.from_numpy(np.asarray(out.attack.feature_error)),
                    "history": [{k: (int(v) if k == "step" else float(v)) for k, v in h.items()}
                                for h in out.attack.history],
                    "start": out.start}, tmp)
        tmp.replace(path)
        return out
