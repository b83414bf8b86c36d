"""Helpers shared by the training tests: a tiny model with zero gates and quick training configs."""

from __future__ import annotations

import pytest
import torch

from m2ugen.train.config import TrainConfig


def tiny(seed: int = 0):
    """The tiny model with every attention gate zeroed (the official init), whatever the preset's default."""
    from m2ugen.train.run import load_model

    model, base = load_model(preset="tiny", seed=seed, zero_gates=True)
    return model


def quick(stage: int, **changes) -> TrainConfig:
    return TrainConfig.preset(f"tiny-stage{stage}").replace(log_with="jsonl", progress_bar=False, **changes)


def trained_tensors(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def gates(model) -> torch.Tensor:
    return torch.stack([layer.attention.gate.detach().flatten() for layer in model.llama.layers])


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared, oversubscribed CPU this makes tiny steps ~40x faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
