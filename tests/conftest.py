"""Shared test fixtures and markers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ARTWORKS_MINI = (ROOT.parent / "shared" / "data" / "artworks-mini").resolve()


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Tiny tensors on a 2-core machine: two OpenMP threads spin against each other under load and made small
    convolutions up to ~50x slower (inception_v3 at 75 px: 6.5 s vs 0.12 s per batch of 2).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def artworks_mini() -> Path:
    """Path of ../shared/data/artworks-mini; skips the test when it is absent."""
    if not (ARTWORKS_MINI / "monet2photo" / "trainA").is_dir():
        pytest.skip(f"artworks-mini data set not found at {ARTWORKS_MINI} (see DEVELOPERS guide)")
    return ARTWORKS_MINI
