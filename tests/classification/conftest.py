"""Shared helpers of the classification tests: a tiny, fast CPU config."""

from __future__ import annotations

import pytest

from wct.classification.train import TrainConfig


@pytest.fixture
def tiny_config() -> TrainConfig:
    """Digits at 8x8, width-8 one-block-per-stage ResNet, one epoch of at most 2 steps, no output."""
    return TrainConfig.from_dict({
        "model": {"arch": "resnet18", "layers": [1, 1, 1, 1], "width": 8, "group_size": 4, "method": "taylor"},
        "data": {"name": "digits", "image_size": 8, "test_fraction": 0.5},
        "optim": {"epochs": 1, "batch_size": 64, "lr_step": 1},
        "device": "cpu", "tensorboard": False, "progress": False, "max_steps": 2,
    })


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every classification test module runs on one intra-op thread (see tests/conftest.py)."""
    yield
