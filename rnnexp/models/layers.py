"""Building blocks shared by the models: the input layer and a plain MLP."""

from __future__ import annotations

from torch import nn

from rnnexp.tasks.base import TaskIO


def input_layer(io: TaskIO, dim: int) -> nn.Module:
    """x(t) as a `dim`-vector: an embedding of token ids, or a linear map of real features."""
    if io.vocab_size is not None:
        return nn.Embedding(io.vocab_size, dim)
    return nn.Linear(io.n_features, dim)


def mlp(n_in: int, hidden: int, n_out: int, layers: int, dropout: float) -> nn.Sequential:
    """`layers` hidden ReLU layers of width `hidden`, then a linear output layer."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
    blocks.append(nn.Linear(hidden if layers else n_in, n_out))
    return nn.Sequential(*blocks)
