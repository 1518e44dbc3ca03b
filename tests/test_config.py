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


# ----------------------------------------------------------------------------------------------
# the result cache
# ----------------------------------------------------------------------------------------------

def test_cached_result_replays_per_payload_and_recomputes_a_corrupt_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    calls = []

    def compute(value):
        calls.append(value)
        return {"value": value, "tensor": torch.arange(3) * value}

    first = config.cached_result("unit", {"x": 1}, lambda: compute(1))
    again = config.cached_result("unit", {"x": 1}, lambda: compute(99))  # replayed, not computed
    other = config.cached_result("unit", {"x": 2}, lambda: compute(2))
    assert calls == [1, 2]
    assert again["value"] == 1 and torch.equal(again["tensor"], first["tensor"])
    assert other["value"] == 2
    entries = sorted((tmp_path / "results").glob("unit-*.pkl"))
    assert len(entries) == 2
    for entry in entries:
        entry.write_bytes(b"not a pickle")
    assert config.cached_result("unit", {"x": 1}, lambda: compute(3))["value"] == 3
    assert calls == [1, 2, 3]


def test_cached_result_is_keyed_by_the_library_source(monkeypatch, tmp_path):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    assert config.cached_result("unit", {}, lambda: "old code") == "old code"
    monkeypatch.setattr(config, "library_digest", lambda: "0123456789abcdef")
    assert config.cached_result("unit", {}, lambda: "new code") == "new code"


def test_cached_result_off_and_bad_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    monkeypatch.setenv(config.RESULT_CACHE_ENV, "off")
    calls = []
    for _ in range(2):
        config.cached_result("unit", {}, lambda: calls.append(1))
    assert len(calls) == 2 and not list(tmp_path.rglob("*.pkl"))
    monkeypatch.setenv(config.RESULT_CACHE_ENV, "sometimes")
    with pytest.raises(ValueError, match="COINFER_RESULT_CACHE.*'sometimes'"):
        config.cached_result("unit", {}, lambda: None)
    monkeypatch.delenv(config.RESULT_CACHE_ENV)
    with pytest.raises(ValueError, match="kind"):
        config.cached_result("a/b", {}, lambda: None)
    with pytest.raises(TypeError, match="payload"):
        config.cached_result("unit", [1], lambda: None)


def test_holds_random_state_finds_noise_sources():
    from coinfer.defense import OutputNoise, ParameterNoise, apply_shield
    from coinfer.models import road_sign_cnn

    model = road_sign_cnn(seed=0).eval()
    assert not config.holds_random_state(model)
    assert not config.holds_random_state(apply_shield(model, ParameterNoise(5.0, 1.0), seed=0).device)
    for shield in (ParameterNoise(5.0, 1.0, "fresh"), OutputNoise(0.1)):
        assert config.holds_random_state(apply_shield(model, shield, seed=0).device)


def test_module_digest_names_the_weights():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    with torch.no_grad():
        b.load_state_dict(a.state_dict())
    assert config.module_digest(a) == config.module_digest(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert config.module_digest(a) != config.module_digest(b)
    assert config.module_digest(a) != config.module_digest(torch.nn.Sequential(a))
    from coinfer.costs import FeatureQuantizer

    # a setting that is neither a weight nor in the repr still tells two modules apart
    assert config.module_digest(FeatureQuantizer(4)) != config.module_digest(FeatureQuantizer(8))
    with pytest.raises(TypeError, match="module"):
        config.module_digest("weights")
