"""Shared fixtures: a tiny synthetic data set and a data-root helper for the real GTSRB."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coinfer.config import data_root


def gtsrb_root() -> Path | None:
    """The real GTSRB root when one is configured (COINFER_DATA or ../shared/data), else None."""
    candidates = []
    if os.environ.get("COINFER_DATA"):
        candidates.append(data_root())
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for root in candidates:
        if (root / "gtsrb" / "GTSRB" / "Training").is_dir():
            return root
    return None


@pytest.fixture(scope="session")
def real_gtsrb_root() -> Path:
    root = gtsrb_root()
    if root is None:
        pytest.skip("the real GTSRB is not available (set COINFER_DATA)")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, request):
    """Unit tests write caches to a temporary folder, never to the user's cache."""
    if request.node.get_closest_marker("user_cache"):
        return
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path_factory.getbasetemp() / "coinfer-cache"))
