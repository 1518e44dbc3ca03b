"""Road-sign images: the real GTSRB benchmark and a procedurally generated stand-in.

The paper's experiments (Wu et al. 2021, Sect. 6.1) use GTSRB, the German Traffic Sign
Recognition Benchmark (Stallkamp et al. 2012): 39,209 training and 12,630 test images of 43
classes.  :func:`load_gtsrb` reads it through :class:`torchvision.datasets.GTSRB`, resizes every
image to 32×32 and decodes the whole split **once** into a ``uint8`` tensor that is cached on disk,
so later loads take well under a second.

:func:`synthetic_signs` draws a seeded, procedurally generated set of road signs (shapes, colours,
glyphs and cluttered backgrounds) that needs no download: unit tests use it, and so can a reader
who is offline.  :func:`load_signs` picks GTSRB when it can and says so when it cannot.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from .config import cache_dir, check_positive_int, data_root, file_lock, progress_bar

__all__ = [
    "GTSRB_CLASSES",
    "ImageSet",
    "load_gtsrb",
    "synthetic_signs",
    "load_signs",
    "train_val_split",
    "to_float",
    "GTSRBNotFoundError",
]

IMAGE_SIZE = 32
NUM_CLASSES = 43

#: Human-readable names of the 43 GTSRB classes, indexed by class id.
GTSRB_CLASSES: tuple[str, ...] = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)",
    "Speed limit (60km/h)", "Speed limit (70km/h)", "Speed limit (80km/h)",
    "End of speed limit (80km/h)", "Speed limit (100km/h)", "Speed limit (120km/h)",
    "No passing", "No passing for vehicles over 3.5 t", "Right-of-way at the next intersection",
    "Priority road", "Yield", "Stop", "No vehicles", "Vehicles over 3.5 t prohibited",
    "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road",
    "Road narrows on the right", "Road work", "Traffic signals", "Pedestrians",
    "Children crossing", "Bicycles crossing", "Beware of ice/snow", "Wild animals crossing",
    "End of all speed and passing limits", "Turn right ahead", "Turn left ahead",
    "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left",
    "Roundabout mandatory", "End of no passing", "End of no passing by vehicles over 3.5 t",
)


class GTSRBNotFoundError(FileNotFoundError):
    """GTSRB is neither on disk nor downloadable (no network)."""


class ImageSet(NamedTuple):
    """A labelled set of images.

    Attributes
    ----------
    images
        ``uint8`` tensor of shape ``(n, 3, 32, 32)`` (convert with :func:`to_float`).
    labels
        ``int64`` tensor of shape ``(n,)`` with class ids in ``0 … 42``.
    source
        Where the images came from, e.g. ``"GTSRB test (/data/gtsrb)"`` or
        ``"synthetic signs (seed 0)"`` — chapters print it next to every number.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index) -> "ImageSet":
        """The images at ``index`` (an index tensor, array or slice)."""
        return ImageSet(self.images[index], self.labels[index], self.source)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Map ``uint8`` images in ``0 … 255`` to ``float32`` in ``[0, 1]`` (the range of every metric)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be a uint8 tensor, got dtype {images.dtype}")
    return images.float().div_(255.0)


# --------------------------------------------------------------------------------------------
# GTSRB
# --------------------------------------------------------------------------------------------

def _split_folder(root: Path, split: str) -> Path:
    base = root / "gtsrb" / "GTSRB"
    return base / ("Training" if split == "train" else "Final_Test/Images")


def _source_key(root: Path, split: str) -> str:
    """A key that changes when the source folder changes (path, entries, modification times)."""
    folder = _split_folder(root, split)
    parts = [str(folder.resolve()), split, str(IMAGE_SIZE)]
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for entry in entries:
        stat = entry.stat()
        parts.append(f"{entry.name}:{stat.st_mtime_ns}:{stat.st_size}")
        if entry.is_dir():
            parts.append(str(sum(1 for _ in os.scandir(entry.path))))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _network_available(host: str = "sid.erda.dk", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _decode(dataset, desc: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.transforms.v2 import functional as F

    n = len(dataset)
    images = torch.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    for i in progress_bar(range(n), desc=desc, progress=progress, mininterval=1.0):
        path, label = dataset._samples[i]
        with Image.open(path) as img:
            tensor = F.pil_to_tensor(img.convert("RGB"))
        if tensor.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            # The original benchmark has 15×15 … 250×250 images; the paper's CNN takes 32×32.
            tensor = F.resize(tensor, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
        images[i] = tensor
        labels[i] = label
    return images, labels


def load_gtsrb(
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    cache: bool = True,
    progress: bool = True,
) -> ImageSet:
    """Load a GTSRB split as 32×32 ``uint8`` images, decoding it once and caching the tensors.

    Parameters
    ----------
    split
        ``"train"`` (39,209 images) or ``"test"`` (12,630 images).
    root
        Folder that holds ``gtsrb/`` in the layout of :class:`torchvision.datasets.GTSRB`.
        Defaults to ``COINFER_DATA``, then the user cache dir (see :func:`coinfer.config.data_root`).
    download
        ``True`` downloads when the split is missing, ``False`` never downloads, ``None`` (default)
        downloads only when nothing is found locally and the download server is reachable.
    cache
        Store/reuse the decoded tensors in ``coinfer.config.cache_dir("gtsrb")``.
    progress
        Show a tqdm progress bar while decoding.

    Raises
    ------
    GTSRBNotFoundError
        When the split is not on disk and cannot be downloaded; the message says what to set.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if download not in (None, True, False):
        raise TypeError(f"download must be True, False or None, got {download!r}")
    root_path = data_root(root)
    folder = _split_folder(root_path, split)
    if not folder.is_dir():
        if download is False or (download is None and not _network_available()):
            raise GTSRBNotFoundError(
                f"GTSRB ({split}) was not found under {root_path} (looked for {folder}) and "
                "cannot be downloaded (download=False or no network). Point the environment "
                "variable COINFER_DATA (or the `root` argument) at a folder that contains "
                "gtsrb/GTSRB/..., or connect to the internet and call "
                f"load_gtsrb({split!r}, download=True). Offline, "
                "coinfer.data.synthetic_signs() gives a procedurally generated stand-in."
            )
        from torchvision.datasets import GTSRB

        GTSRB(root=str(root_path), split=split, download=True)

    from torchvision.datasets import GTSRB

    source = f"GTSRB {split} ({root_path / 'gtsrb'})"
    if not cache:
        dataset = GTSRB(root=str(root_path), split=split, download=False)
        return ImageSet(*_decode(dataset, f"decoding GTSRB {split}", progress), source)
    cache_file = cache_dir("gtsrb") / f"{split}-{_source_key(root_path, split)}.pt"
    # Notebooks executed side by side decode GTSRB at the same moment: the lock makes the second
    # wait for the first's cache instead of decoding again and racing it for the same file.
    with file_lock(cache_file.with_suffix(".lock")):
        if cache_file.exists():
            try:
                blob = torch.load(cache_file, weights_only=True)
                return ImageSet(blob["images"], blob["labels"], source)
            except Exception:  # a truncated or corrupt cache is rebuilt, not crashed on
                cache_file.unlink(missing_ok=True)
        dataset = GTSRB(root=str(root_path), split=split, download=False)
        images, labels = _decode(dataset, f"decoding GTSRB {split}", progress)
        tmp = cache_file.with_suffix(".tmp")
        torch.save({"images": images, "labels": labels}, tmp)
        tmp.replace(cache_file)  # atomic: a crash never leaves a half-written cache behind
    return ImageSet(images, labels, source)


# --------------------------------------------------------------------------------------------
# Synthetic road signs
# --------------------------------------------------------------------------------------------

_SHAPES = ("circle", "triangle", "inverted_triangle", "octagon", "diamond", "square")
_PALETTE = {
    "red": (200, 30, 35), "blue": (30, 80, 190), "yellow": (240, 200, 30),
    "white": (240, 240, 240), "black": (25, 25, 25), "green": (40, 150, 60),
    "orange": (240, 120, 20),
}
_GLYPHS = ("20", "30", "50", "60", "70", "80", "100", "120", "!", "X", "<", ">", "^", "v", "=",
           "|", "/", "o", "+", "S", "T")


def _class_designs(num_classes: int) -> list[tuple[str, tuple, tuple, str, tuple]]:
    """A fixed design (shape, border, fill, glyph, glyph colour) for each class id."""
    rng = np.random.default_rng(20210114)  # fixed: the class designs are part of the data set
    colours = list(_PALETTE.values())
    designs = []
    for k in range(num_classes):
        shape = _SHAPES[k % len(_SHAPES)]
        border = colours[(k // len(_SHAPES)) % len(colours)]
        fill = colours[(k * 3 + 1) % len(colours)]
        if fill == border:
            fill = _PALETTE["white"]
        glyph = _GLYPHS[k % len(_GLYPHS)]
        ink = _PALETTE["black"] if sum(fill) > 400 else _PALETTE["white"]
        designs.append((shape, border, fill, glyph, ink))
        rng.random()  # keep the stream stable if designs gain random features later
    return designs


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        angles = np.deg2rad([-90, 30, 150])
    elif shape == "inverted_triangle":
        angles = np.deg2rad([90, 210, 330])
    elif shape == "octagon":
        angles = np.deg2rad(np.arange(8) * 45 + 22.5)
    elif shape == "diamond":
        angles = np.deg2rad([0, 90, 180, 270])
    else:  # square
        angles = np.deg2rad([45, 135, 225, 315])
    return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]


def _draw_sign(design, rng: np.random.Generator, size: int) -> np.ndarray:
    shape, border, fill, glyph, ink = design
    scale = 4  # draw at 4× and downsample: anti-aliased edges like a camera's
    big = size * scale
    # Background: a random two-colour gradient with noise (road, sky, foliage).
    top = rng.integers(0, 256, 3)
    bottom = rng.integers(0, 256, 3)
    t = np.linspace(0, 1, big)[:, None, None]
    background = (1 - t) * top + t * bottom + rng.normal(0, 12, (big, big, 3))
    img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8).repeat(1, axis=1))
    draw = ImageDraw.Draw(img)
    r = big * rng.uniform(0.30, 0.44)
    cx = big / 2 + rng.uniform(-0.08, 0.08) * big
    cy = big / 2 + rng.uniform(-0.08, 0.08) * big
    width = max(2, int(r * 0.18))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=border)
        ri = r - width
        draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=border)
        draw.polygon(_polygon(shape, cx, cy, r - width * 1.6), fill=fill)
    font_size = int(r * (0.9 if len(glyph) == 1 else 0.7))
    try:
        from PIL import ImageFont

        font = ImageFont.load_default(size=max(8, font_size))
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = None
    draw.text((cx, cy + r * 0.05), glyph, fill=ink, font=font, anchor="mm")
    img = img.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR, center=(cx, cy))
    img = img.resize((size, size), Image.BILINEAR)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 0.9)))
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.5, 1.2)  # illumination
    return np.clip(arr, 0, 255).astype(np.uint8)


def synthetic_signs(
    n: int,
    *,
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
    image_size: int = IMAGE_SIZE,
) -> ImageSet:
    """Procedurally generated road signs: an offline, seeded stand-in for GTSRB.

    Each class has a fixed design (one of six sign shapes, a border and fill colour and a glyph);
    each image draws the sign at a random size, position, rotation and illumination over a noisy
    gradient background, sometimes blurred.  Labels cycle through the classes so that every class
    is equally represented.

    Parameters
    ----------
    n
        Number of images (``>= 1``).
    seed
        Seed of the ``numpy.random.Generator`` that draws every random choice.
    num_classes
        Number of classes (``1 … 43``).
    image_size
        Side length in pixels (``>= 8``).
    """
    check_positive_int("n", n)
    check_positive_int("seed", seed, allow_zero=True)
    check_positive_int("num_classes", num_classes)
    check_positive_int("image_size", image_size)
    if num_classes > NUM_CLASSES:
        raise ValueError(f"num_classes must be <= {NUM_CLASSES}, got {num_classes}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    rng = np.random.default_rng(seed)
    designs = _class_designs(num_classes)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = np.stack([_draw_sign(designs[k], rng, image_size) for k in labels])
    return ImageSet(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels.astype(np.int64)),
        f"synthetic signs (seed {seed})",
    )


def load_signs(
    split: str = "train",
    *,
    source: str = "auto",
    root: str | os.PathLike | None = None,
    synthetic_size: int | None = None,
    progress: bool = True,
) -> ImageSet:
    """GTSRB when it is available, otherwise synthetic signs — and say which.

    Parameters
    ----------
    split
        ``"train"`` or ``"test"``.
    source
        ``"gtsrb"`` (fail when GTSRB cannot be had), ``"synthetic"``, or ``"auto"`` (GTSRB if it
        is on disk or downloadable, else synthetic signs with a printed notice).
    synthetic_size
        Number of synthetic images; defaults to 12,900 for train and 4,300 for test.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source not in ("auto", "gtsrb", "synthetic"):
        raise ValueError(f"source must be 'auto', 'gtsrb' or 'synthetic', got {source!r}")
    if source in ("auto", "gtsrb"):
        try:
            return load_gtsrb(split, root=root, progress=progress)
        except GTSRBNotFoundError as err:
            if source == "gtsrb":
                raise
            print(f"GTSRB unavailable, using synthetic signs instead: {err}")
    size = synthetic_size or (12_900 if split == "train" else 4_300)
    return synthetic_signs(size, seed=0 if split == "train" else 1)


def train_val_split(
    n: int, *, val_fraction: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic random split of ``range(n)`` into training and validation indices.

    The permutation comes from a ``torch.Generator`` seeded with ``seed``, so the same call
    always returns the same split.  (GTSRB's training images come in tracks of 30 frames of the
    same physical sign, so a random split makes the validation score optimistic; the course
    reports accuracy on the official test split.)
    """
    check_positive_int("n", n)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values
