"""Feed-forward baselines: what recurrence has to beat.

Neither has any state carried across steps. `MLPWindow` sees a fixed window of recent steps,
so it can use context only up to `window - 1` steps back; `MLPBag` sees the mean of all inputs
so far, so it can use context at any distance but not its order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnnexp.models.layers import input_layer, mlp
from rnnexp.tasks.base import SEQUENCE, TaskIO


class MLPWindow(nn.Module):
    """An MLP over the last `window` steps, causal (zeros stand in before the sequence starts).

        o(t) = MLP([x(t-w+1); ...; x(t)])     per step
        o    = MLP([x(T-w); ...; x(T-1)])     once per sequence (T: each sequence's length)

    Shapes: x (B, T) token ids or (B, T, F) features, lengths (B,) -> o (B, T, C), or (B, C)
    once per sequence.
    """

    def __init__(self, io: TaskIO, *, window: int, embed_dim: int, hidden_size: int, layers: int, dropout: float):
        super().__init__()
        self.window, self.per_sequence = window, io.output == SEQUENCE
        self.embed = input_layer(io, embed_dim)
        self.mlp = mlp(window * embed_dim, hidden_size, io.n_outputs, layers, dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(x)  # (B, T, E)
        B, T, E = e.shape
        w = self.window
        e = F.pad(e, (0, 0, w - 1, 0))  # (B, T+w-1, E)
        if self.per_sequence:
            # every index on the inputs' device, wherever the lengths come from
            ends = torch.full((B,), T, device=e.device) if lengths is None else lengths.to(e.device)  # (B,)
            # original step t sits at t + w - 1 after padding: the last w steps are ends-1 .. ends+w-2
            steps = ends[:, None] - 1 + torch.arange(w, device=e.device)  # (B, w)
            return self.mlp(e[torch.arange(B, device=e.device)[:, None], steps].reshape(B, w * E))  # (B, C)
        windows = e.unfold(1, w, 1).transpose(2, 3)  # (B, T, w, E): window t ends at step t
        return self.mlp(windows.reshape(B, T, w * E))  # (B, T, C)


class MLPBag(nn.Module):
    """An MLP over the mean of the embedded inputs: order-free, a bag of embeddings.

        o(t) = MLP(mean(x(0), ..., x(t)))     per step (the running mean of the prefix)
        o    = MLP(mean(x(0), ..., x(T-1)))   once per sequence (T: each sequence's length)

    Shapes: x (B, T) token ids or (B, T, F) features, lengths (B,) -> o (B, T, C), or (B, C)
    once per sequence.
    """

    def __init__(self, io: TaskIO, *, embed_dim: int, hidden_size: int, layers: int, dropout: float):
        super().__init__()
        self.per_sequence = io.output == SEQUENCE
        self.embed = input_layer(io, embed_dim)
        self.mlp = mlp(embed_dim, hidden_size, io.n_outputs, layers, dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(x)  # (B, T, E)
        if self.per_sequence:
            if lengths is None:
                return self.mlp(e.mean(dim=1))  # (B, C)
            lengths = lengths.to(e.device)
            inside = (torch.arange(e.shape[1], device=e.device) < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
            return self.mlp((e * inside).sum(dim=1) / lengths[:, None])  # (B, C)
        steps = torch.arange(1, e.shape[1] + 1, dtype=e.dtype, device=e.device)  # (T,)
        return self.mlp(e.cumsum(dim=1) / steps[:, None])  # (B, T, C)
