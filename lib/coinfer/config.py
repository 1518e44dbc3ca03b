"""Where the course keeps its data and caches, which device it computes on, and how it seeds.

Every path the library touches is resolved here, in one order that a reader can predict:

1. an explicit argument,
2. an environment variable (``COINFER_DATA`` for the GTSRB root, ``COINFER_CACHE`` for caches),
3. the user's cache directory (``platformdirs.user_cache_dir("coinfer")``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from platformdirs import user_cache_dir

__all__ = [
    "data_root",
    "cache_dir",
    "default_device",
    "seed_everything",
    "check_positive_int",
    "check_positive_float",
    "file_lock",
    "payload_digest",
    "progress_bar",
]

DATA_ENV = "COINFER_DATA"
CACHE_ENV = "COINFER_CACHE"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) ``gtsrb/`` in torchvision's layout.

    Parameters
    ----------
    root
        Explicit folder. When ``None`` the environment variable ``COINFER_DATA`` is used, and
        when that is unset, ``<user cache>/coinfer/data``.
    """
    if root is None:
        root = os.environ.get(DATA_ENV) or Path(user_cache_dir("coinfer")) / "data"
    return Path(root).expanduser().resolve()


def cache_dir(sub: str | None = None) -> Path:
    """The course's cache folder (``COINFER_CACHE`` or the user cache dir), created on demand.

    Decoded image tensors and trained models are stored here, keyed by their full configuration,
    so that chapters share one trained victim.
    """
    base = Path(os.environ.get(CACHE_ENV) or user_cache_dir("coinfer")).expanduser()
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``. Nothing in the course requires a GPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch's global generators and return a fresh ``torch.Generator``.

    The library itself never relies on global state (every random step takes a generator);
    this helper exists for notebooks that call third-party code.
    """
    check_positive_int("seed", seed, allow_zero=True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def check_positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    """Validate an integer parameter and return it; raise a ``TypeError``/``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    low = 0 if allow_zero else 1
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def check_positive_float(name: str, value, *, allow_zero: bool = False) -> float:
    """Validate a finite positive real parameter and return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def payload_digest(payload: dict) -> str:
    """The 16-hex-digit key of a disk cache entry: SHA-256 of ``payload`` as sorted JSON.

    Every model cache (victim, attackers, judges, bottlenecks, clipped victims, DP-SGD runs) names
    its file by the digest of everything that determines the cached result, so a change of any
    setting, of the data or of torch's version trains afresh instead of loading a stale entry.
    """
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def tensors_digest(tensors) -> str:
    """16 hex digits of SHA-256 over the bytes of ``tensors`` in order (e.g. a model's
    ``state_dict().values()``): the fingerprint of a model's weights in the cache keys."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
    """Hold an exclusive inter-process lock on ``path`` for the duration of the block.

    The model caches use it so that two notebooks needing the same model at once train it once:
    the second waits for the first and then loads its checkpoint.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no inter-process lock
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def progress_bar(iterable=None, *, progress: bool, **kwargs):
    """A ``tqdm.auto`` progress bar that is off unless ``progress`` and ``TQDM_DISABLE`` is unset.

    tqdm's notebook bar displays its widget unless ``disable`` is true when it is created, and the
    ``TQDM_DISABLE`` variable does not stop that; the book and nbval set ``TQDM_DISABLE=1`` so that
    no widget ends up in a cell's output, whichever chapter happens to train a model first.
    """
    from tqdm.auto import tqdm

    off = not progress or os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
    return tqdm(iterable, disable=off, **kwargs)
