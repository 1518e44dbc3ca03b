"""The threat model of Sect. 2.1: query access only, the eavesdropper, and phase 1 (*observe*).

The attacker of Wu et al. (2021), Sect. 2.2, does not know the structure or the parameters of
:math:`f_{\\theta_1}` but can query it; an eavesdropper intercepts :math:`v_0 = f_{\\theta_1}(x_0)`.

* :class:`QueryAccess` enforces the threat model in code (calling the device model and nothing
  else; anything else raises :class:`BlackBoxAccessError`); :func:`split_oracle` builds one from
  a split of the victim;
* :func:`intercept` simulates the vehicles: the features the eavesdropper captures, per split;
* :func:`observe` — phase 1 of Algorithm 1: :math:`V = f_{\\theta_1}(X)` for the attacker's
  own images.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from ..config import check_positive_int, progress_bar
from ..models import split
from ..train import fixed_threads
from ._checks import _check_at, _image_tensor, _to_float

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
    bar = progress_bar(total=n, desc="observe", progress=progress, mininterval=1.0)
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

