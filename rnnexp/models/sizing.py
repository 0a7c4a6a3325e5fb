"""Models built from their config, and sized by parameter count (`model.params=N`).

Models that share a width do not share a size: at hidden 64 on delayed_recall the tanh RNN has
7,048 parameters and the LSTM 25,864, so a cell comparison at one width is confounded with size.
`model.params=N` solves for the hidden size (the MLP width of the baselines) that brings the
model, on the task at hand, closest to N trainable parameters, within `TOLERANCE`.
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rnnexp.config import ConfigError
from rnnexp.tasks.base import TaskIO

TOLERANCE = 0.03  # how far from N a sized model may be
LARGEST = 1 << 16  # the widest hidden size tried


def make_model(model: DictConfig, io: TaskIO, **sizes: Any) -> nn.Module:
    """The model `model` (the `model` config node) for a task's `io`, with `sizes` in place of the
    config's. `params` is a request to this module, not an argument of the model."""
    kwargs = {k: v for k, v in OmegaConf.to_container(model, resolve=True).items() if k != "params"}
    return instantiate({**kwargs, **sizes}, _partial_=True)(io=io)  # keeps TaskIO a dataclass


def count(model: DictConfig, io: TaskIO, hidden_size: int) -> int:
    """Trainable parameters at `hidden_size`, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        built = make_model(model, io, hidden_size=hidden_size)
    return sum(p.numel() for p in built.parameters() if p.requires_grad)


def solve_hidden_size(model: DictConfig, io: TaskIO, target: int) -> int:
    """The hidden size whose model is closest to `target` parameters; ConfigError naming the
    smallest possible count if `target` is below it, or the nearest counts if none is within
    `TOLERANCE` (a small model grows in steps larger than 3%)."""
    name = model._target_.rsplit(".", 1)[-1]
    smallest = count(model, io, 1)
    if target < smallest:
        raise ConfigError(
            "model.params",
            target,
            f"at least {smallest:,}: the smallest {name} for this task (hidden size 1) has that many parameters",
        )
    low, high = 1, 2
    while count(model, io, high) < target:  # bracket, then bisect: the count grows with the width
        low, high = high, high * 2
        if high > LARGEST:
            raise ConfigError(
                "model.params", target, f"at most {count(model, io, LARGEST):,} (hidden size {LARGEST:,})"
            )
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count(model, io, middle) < target else (low, middle)
    best = min((low, high), key=lambda h: abs(count(model, io, h) - target))
    if abs(count(model, io, best) - target) > TOLERANCE * target:
        raise ConfigError(
            "model.params",
            target,
            f"a count within {TOLERANCE:.0%} of what {name} can have here: "
            f"hidden sizes {low} and {high} give {count(model, io, low):,} and "
            f"{count(model, io, high):,} parameters",
        )
    return best
