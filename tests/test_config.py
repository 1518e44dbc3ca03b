import math
import os

import numpy as np
import pytest
import torch

from coinfer import config


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("COINFER_DATA", str(tmp_path / "env"))
    assert config.data_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert config.data_root() == (tmp_path / "env").resolve()
    monkeypatch.delenv("COINFER_DATA")
    assert config.data_root().name == "data" and "coinfer" in str(config.data_root())


def test_cache_dir_is_created(monkeypatch, tmp_path):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path / "c"))
    path = config.cache_dir("models")
    assert path.is_dir() and path == tmp_path / "c" / "models"


def test_default_device_matches_cuda():
    assert config.default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_seed_everything_is_reproducible():
    g1 = config.seed_everything(3)
    a = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g1).item())
    g2 = config.seed_everything(3)
    b = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g2).item())
    assert a == b


@pytest.mark.parametrize("bad, err", [(1.5, TypeError), (True, TypeError), (0, ValueError), (-2, ValueError)])
def test_check_positive_int_rejects(bad, err):
    with pytest.raises(err, match="epochs"):
        config.check_positive_int("epochs", bad)


@pytest.mark.parametrize("bad, err", [("1", TypeError), (math.nan, ValueError), (math.inf, ValueError),
                                      (0.0, ValueError), (-1.0, ValueError)])
def test_check_positive_float_rejects(bad, err):
    with pytest.raises(err, match="epsilon"):
        config.check_positive_float("epsilon", bad)


def test_check_positive_float_allow_zero():
    assert config.check_positive_float("x", 0, allow_zero=True) == 0.0
    assert config.check_positive_int("seed", 0, allow_zero=True) == 0


def test_file_lock_excludes_other_processes(tmp_path):
    import subprocess
    import sys

    lock = tmp_path / "x.lock"
    probe = ("import fcntl, sys; h = open(sys.argv[1], 'w')\n"
             "try:\n    fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")
    with config.file_lock(lock):
        inside = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True)
    after = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True)
    assert inside.stdout.strip() == "held" and after.stdout.strip() == "free"


def test_progress_bar_is_off_when_asked_or_when_tqdm_disable_is_set(monkeypatch):
    from coinfer.config import progress_bar

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_bar(range(3), progress=False).disable
    assert not progress_bar(range(3), progress=True, file=open(os.devnull, "w")).disable
    # tqdm's notebook bar shows its widget unless disabled at creation, whatever TQDM_DISABLE says
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_bar(range(3), progress=True).disable
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not progress_bar(range(3), progress=True, file=open(os.devnull, "w")).disable
