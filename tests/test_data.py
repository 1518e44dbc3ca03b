import numpy as np
import pytest
import torch
from PIL import Image

from coinfer import data
from coinfer.data import GTSRBNotFoundError, load_gtsrb, synthetic_signs, train_val_split


def _write_fake_gtsrb(root, sizes=((32, 32), (45, 50), (20, 17))):
    """A miniature GTSRB in torchvision's layout: 3 classes × 2 train images, 4 test images."""
    rng = np.random.default_rng(0)
    base = root / "gtsrb" / "GTSRB"
    pixels = {}
    for cls in range(3):
        folder = base / "Training" / f"{cls:05d}"
        folder.mkdir(parents=True)
        for j in range(2):
            w, h = sizes[(cls + j) % len(sizes)]
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"00000_{j:05d}.ppm")
            pixels[(cls, j)] = arr
    test_dir = base / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, cls in enumerate([2, 0, 1, 2]):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(test_dir / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;32;32;0;0;31;31;{cls}")
    (root / "gtsrb" / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return pixels


def test_load_fake_gtsrb_and_cache(tmp_path):
    pixels = _write_fake_gtsrb(tmp_path)
    train = load_gtsrb("train", root=tmp_path, download=False, progress=False)
    assert train.images.shape == (6, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # a 32×32 source image is kept exactly; others are resized to 32×32
    assert torch.equal(train.images[0], torch.from_numpy(pixels[(0, 0)]).permute(2, 0, 1))
    test = load_gtsrb("test", root=tmp_path, download=False, progress=False)
    assert test.labels.tolist() == [2, 0, 1, 2]
    cached = list((data.cache_dir("gtsrb")).glob("train-*.pt"))
    assert cached, "the decoded tensor must be cached"
    again = load_gtsrb("train", root=tmp_path, download=False, progress=False)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def _load_in_subprocess(root, cache, barrier, queue):
    import os
    import threading

    os.environ["COINFER_CACHE"] = str(cache)
    decode = data._decode

    def decode_together(*args, **kwargs):
        # Without the lock all three loads get here before any has written its cache; with it only
        # one does, and the barrier merely times out.
        try:
            barrier.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass
        return decode(*args, **kwargs)

    data._decode = decode_together
    images = load_gtsrb("train", root=root, download=False, progress=False).images
    queue.put(int(images.sum()))


def test_concurrent_first_loads_share_one_decode(tmp_path):
    # Two notebooks executed side by side load GTSRB for the first time at the same moment; before
    # the lock both decoded and raced for one temporary file, and one of them crashed.
    import multiprocessing as mp

    _write_fake_gtsrb(tmp_path)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_load_in_subprocess, args=(tmp_path, tmp_path / "cache", barrier, queue))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    sums = {queue.get(timeout=5) for _ in procs}
    assert len(sums) == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_corrupt_cache_is_rebuilt(tmp_path):
    _write_fake_gtsrb(tmp_path)
    first = load_gtsrb("test", root=tmp_path, download=False, progress=False)
    for f in data.cache_dir("gtsrb").glob("test-*.pt"):
        f.write_bytes(b"not a checkpoint")
    second = load_gtsrb("test", root=tmp_path, download=False, progress=False)
    assert torch.equal(first.images, second.images)


def test_cache_key_changes_with_source(tmp_path):
    _write_fake_gtsrb(tmp_path)
    first = load_gtsrb("test", root=tmp_path, download=False, progress=False)
    csv = tmp_path / "gtsrb" / "GTSRB" / "Final_Test" / "Images"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(csv / "00000.ppm")
    second = load_gtsrb("test", root=tmp_path, download=False, progress=False)
    assert not torch.equal(first.images[0], second.images[0])


def test_missing_data_offline_says_what_to_set(tmp_path):
    with pytest.raises(GTSRBNotFoundError, match="COINFER_DATA"):
        load_gtsrb("train", root=tmp_path, download=False)


def test_missing_data_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_network_available", lambda *a, **k: False)
    with pytest.raises(GTSRBNotFoundError, match="download"):
        load_gtsrb("test", root=tmp_path)


def test_load_signs_auto_falls_back_to_synthetic(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "_network_available", lambda *a, **k: False)
    signs = data.load_signs("test", root=tmp_path, synthetic_size=50)
    assert signs.source.startswith("synthetic") and len(signs) == 50
    assert "synthetic" in capsys.readouterr().out
    with pytest.raises(GTSRBNotFoundError):
        data.load_signs("test", source="gtsrb", root=tmp_path)


@pytest.mark.parametrize("kwargs, err", [({"split": "val"}, ValueError), ({"download": "yes"}, TypeError)])
def test_load_gtsrb_bad_arguments(tmp_path, kwargs, err):
    with pytest.raises(err):
        load_gtsrb(root=tmp_path, **kwargs)


@pytest.mark.gtsrb
@pytest.mark.user_cache  # reuse the decoded tensors the book already cached
def test_real_gtsrb(real_gtsrb_root):
    test = load_gtsrb("test", root=real_gtsrb_root, progress=False)
    assert len(test) == 12_630 and test.images.shape[1:] == (3, 32, 32)
    assert set(test.labels.unique().tolist()) == set(range(43))
    train = load_gtsrb("train", root=real_gtsrb_root, progress=False)
    assert len(train) == 39_209
    assert len(data.GTSRB_CLASSES) == 43


def test_synthetic_is_seeded_and_balanced():
    a = synthetic_signs(86, seed=5)
    b = synthetic_signs(86, seed=5)
    c = synthetic_signs(86, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert torch.bincount(a.labels, minlength=43).tolist() == [2] * 43
    assert a.images.dtype == torch.uint8 and a.images.shape == (86, 3, 32, 32)
    # images are not blank: every image has real contrast
    assert (a.images.float().flatten(1).std(1) > 5).all()


def test_synthetic_classes_are_distinguishable():
    """A nearest-class-mean classifier beats chance by far: the classes carry signal."""
    train, test = synthetic_signs(43 * 20, seed=0, num_classes=43), synthetic_signs(430, seed=1)
    means = torch.stack([train.images[train.labels == k].float().mean(0) for k in range(43)])
    dist = ((test.images.float()[:, None] - means[None]) ** 2).flatten(2).sum(2)
    acc = (dist.argmin(1) == test.labels).float().mean().item()
    assert acc > 5 / 43


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 5, "num_classes": 44}, {"n": 5, "image_size": 4},
                                    {"n": 2.5}])
def test_synthetic_bad_arguments(kwargs):
    with pytest.raises((ValueError, TypeError)):
        synthetic_signs(**kwargs)


def test_train_val_split():
    tr, val = train_val_split(1000, val_fraction=0.2, seed=1)
    assert len(val) == 200 and len(tr) == 800
    assert set(tr.tolist()).isdisjoint(val.tolist()) and len(set(tr.tolist()) | set(val.tolist())) == 1000
    tr2, val2 = train_val_split(1000, val_fraction=0.2, seed=1)
    assert torch.equal(tr, tr2) and torch.equal(val, val2)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(10, val_fraction=1.0)


def test_to_float():
    x = torch.tensor([[0, 255]], dtype=torch.uint8)
    assert torch.equal(data.to_float(x), torch.tensor([[0.0, 1.0]]))
    with pytest.raises(TypeError, match="uint8"):
        data.to_float(x.float())
