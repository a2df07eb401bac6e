"""Shared helpers of the classification tests: a tiny, fast CPU config."""

from __future__ import annotations

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core machine, OpenMP threads spin against each other."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
