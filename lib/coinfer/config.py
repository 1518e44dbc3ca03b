"""Where the course keeps its data and caches, which device it computes on, and how it seeds.

Every path the library touches is resolved here, in one order that a reader can predict:

1. an explicit argument,
2. an environment variable (``COINFER_DATA`` for the GTSRB root, ``COINFER_CACHE`` for caches),
3. the user's cache directory (``platformdirs.user_cache_dir("coinfer")``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from platformdirs import user_cache_dir

T = TypeVar("T")

__all__ = [
    "data_root",
    "cache_dir",
    "default_device",
    "seed_everything",
    "check_positive_int",
    "check_positive_float",
    "file_lock",
    "payload_digest",
    "tensors_digest",
    "module_digest",
    "holds_random_state",
    "library_digest",
    "cached_result",
    "RESULT_CACHE_ENV",
    "progress_bar",
]

DATA_ENV = "COINFER_DATA"
CACHE_ENV = "COINFER_CACHE"
#: ``COINFER_RESULT_CACHE=off`` recomputes every evaluation that :func:`cached_result` would replay.
RESULT_CACHE_ENV = "COINFER_RESULT_CACHE"


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


def module_digest(module: torch.nn.Module) -> str:
    """16 hex digits naming a module: its ``repr``, every layer's class and plain settings (a
    quantiser's bit width, a convolution's stride) and its weights and buffers (:func:`tensors_digest` of its ``state_dict`` with
    names, shapes and dtypes).  The module caches of the result cache are keyed by it."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    state = module.state_dict()
    # a layer's settings that are plain attributes (a quantiser's bits, a convolution's stride)
    settings = [[type(m).__qualname__, {k: repr(v) for k, v in sorted(vars(m).items())
                                        if not k.startswith("_") and k != "training" and
                                        isinstance(v, (bool, int, float, str, tuple, type(None)))}]
                for m in module.modules()]
    return payload_digest({"repr": repr(module), "settings": settings, "names": list(state),
                           "shapes": [list(t.shape) for t in state.values()],
                           "dtypes": [str(t.dtype) for t in state.values()],
                           "tensors": tensors_digest(state.values())})


def holds_random_state(module: torch.nn.Module) -> bool:
    """Whether a submodule of ``module`` draws from a random stream of its own (a
    ``torch.Generator``, directly or through a noise source's ``generator``): such a module's
    output depends on how often it ran before, so its results are never cached."""
    for m in module.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Generator) or isinstance(getattr(value, "generator", None),
                                                                torch.Generator):
                return True
    return False


@functools.lru_cache(maxsize=1)
def library_digest() -> str:
    """16 hex digits of SHA-256 over the source of every module of the ``coinfer`` package.

    :func:`cached_result` puts it into every key, so that an edited library never replays a result
    an older version computed.
    """
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_result(kind: str, payload: dict, compute: Callable[[], T]) -> T:
    """``compute()``, or the result it returned before for the same ``kind`` and ``payload``.

    The result cache of the evaluations (model caches hold trained weights; this one holds what
    the chapters compute from them).  The entry is named by :func:`payload_digest` of
    ``payload`` together with :func:`library_digest`, torch's version and whether the CPU
    computes in bf16, so it is replayed only where the same code on the same kind of arithmetic
    would compute it again; ``payload`` must name everything else the result depends on (model
    digests, data digests, settings, seeds).  Entries are pickles under ``cache_dir("results")``
    written by this user's own runs; a corrupt entry is recomputed.  With
    ``COINFER_RESULT_CACHE=off`` nothing is replayed or written.

    Raises
    ------
    ValueError
        When ``kind`` is not a non-empty name of letters, digits, ``-`` and ``_``, or when
        ``COINFER_RESULT_CACHE`` is set to something other than ``on`` or ``off``.
    """
    import pickle

    if not isinstance(kind, str) or not kind or not all(c.isalnum() or c in "-_" for c in kind):
        raise ValueError(f"kind must be a non-empty name of letters, digits, '-' and '_', "
                         f"got {kind!r}")
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    setting = os.environ.get(RESULT_CACHE_ENV, "on").strip().lower() or "on"
    if setting not in ("on", "off"):
        raise ValueError(f"{RESULT_CACHE_ENV} must be 'on' or 'off', got {setting!r}")
    if setting == "off":
        return compute()
    from .train import cpu_supports_bf16

    key = payload_digest({"kind": kind, "payload": payload, "library": library_digest(),
                          "torch": torch.__version__.split("+")[0],
                          "bf16": cpu_supports_bf16()})
    path = cache_dir("results") / f"{kind}-{key}.pkl"
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            try:
                with open(path, "rb") as handle:
                    return pickle.load(handle)
            except Exception:  # a truncated or unreadable entry: compute it again
                path.unlink(missing_ok=True)
        value = compute()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
        return value


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
