"""The three RNN design patterns of Goodfellow, Bengio & Courville, *Deep Learning* (2016), §10.2.

Notation is the book's: x(t) input, h(t) hidden units, o(t) output (logits), y(t) target,
U input-to-hidden, W recurrent, V hidden-to-output weights, b and c biases. Here x(t) is the
task's input after the input layer (an embedding of token ids, or a linear map of features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rnnexp.config import Cell
from rnnexp.models.layers import input_layer
from rnnexp.tasks.base import SEQUENCE, STEP, TaskIO

_FUSED = {Cell.rnn: nn.RNN, Cell.gru: nn.GRU, Cell.lstm: nn.LSTM}


def fused_recurrence(
    cell: str, n_in: int, hidden: int, layers: int, dropout: float, forget_bias: float | None = None
) -> nn.RNNBase:
    """PyTorch's fused recurrent module for `cell` (one C++ kernel over time, not a Python loop).
    `dropout` applies between stacked layers, so only when there are several.

    `forget_bias` (LSTM only): the forget gate's initial bias b_f in every layer,
    f(t) = sigmoid(b_f + U_f x(t) + W_f h(t-1)) (eq. 10.40). At 1 the cell starts out keeping its
    state (Gers, Schmidhuber & Cummins 2000; Jozefowicz, Zaremba & Sutskever 2015). None keeps
    PyTorch's initialisation, uniform around 0, which halves the state at every step at first."""
    module = _FUSED[Cell(cell)](
        n_in, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0, batch_first=True
    )
    if forget_bias is not None and Cell(cell) == Cell.lstm:
        with torch.no_grad():
            for layer in range(layers):
                # PyTorch adds two biases, each laid out (input, forget, cell, output) gates
                getattr(module, f"bias_ih_l{layer}")[hidden : 2 * hidden].fill_(forget_bias)
                getattr(module, f"bias_hh_l{layer}")[hidden : 2 * hidden].zero_()
    return module


def _require(io: TaskIO, output: str, model: str) -> None:
    if io.output != output:
        raise ValueError(
            f"{model} produces {'one output per step' if output == STEP else 'one output per sequence'}; "
            f"this task wants {io.output} outputs"
        )


class RNNHidden(nn.Module):
    """Design pattern 1 (fig. 10.3): an output at every time step, recurrence hidden -> hidden.

        a(t) = b + W h(t-1) + U x(t)          (10.8)
        h(t) = tanh(a(t))                     (10.9)
        o(t) = c + V h(t)                     (10.10)
        ŷ(t) = softmax(o(t))                  (10.11, inside the cross-entropy loss)

    With `cell="gru"` or `"lstm"`, eqs. 10.8-10.9 become that cell's gated update (§10.10);
    `layers` stacks recurrences; `forget_bias` sets the LSTM's initial forget-gate bias
    (`fused_recurrence`). h(-1) = 0.

    Shapes: x (B, T) token ids or (B, T, F) features -> o (B, T, C).
    """

    def __init__(
        self,
        io: TaskIO,
        *,
        cell: str,
        embed_dim: int,
        hidden_size: int,
        layers: int,
        dropout: float,
        forget_bias: float | None,
    ):
        super().__init__()
        _require(io, STEP, "rnn_hidden")
        self.embed = input_layer(io, embed_dim)
        self.recurrence = fused_recurrence(cell, embed_dim, hidden_size, layers, dropout, forget_bias)  # U, W, b
        self.dropout = nn.Dropout(dropout)
        self.V = nn.Linear(hidden_size, io.n_outputs)  # V, c

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # causal: padding after a sequence's end changes none of its outputs (lengths unused)
        h, _ = self.recurrence(self.embed(x))  # (B, T, H)
        return self.V(self.dropout(h))  # (B, T, C)


class RNNOutput(nn.Module):
    """Design pattern 2 (fig. 10.4): an output at every time step; the only recurrence is from
    the output at t-1 to the hidden units at t (there are no hidden -> hidden weights).

        h(t) = tanh(b + W y(t-1) + U x(t))
        o(t) = c + V h(t)

    y(t-1) is what is fed back, y(-1) = 0. Under teacher forcing (training, §10.2.1, eqs.
    10.15-10.16) it is the true target: a one-hot vector for classes (zero where a step has no
    target), the value itself for regression. The time steps then decouple and all T hidden
    states are computed at once, with no loop over time. Running free (evaluation) it is the
    model's own previous output, one-hot of argmax o(t-1) (or o(t-1) for a value), which needs
    the loop. The book's point: o(t-1) is all the past the model keeps, so it is strictly less
    powerful than pattern 1 unless the output describes what the future needs.

    Shapes: x (B, T) token ids or (B, T, F) features, y (B, T) targets -> o (B, T, C).
    """

    teacher_forced = True  # the training module passes the targets in `forward(x, y)`

    def __init__(self, io: TaskIO, *, embed_dim: int, hidden_size: int):
        super().__init__()
        _require(io, STEP, "rnn_output")
        self.io = io
        self.embed = input_layer(io, embed_dim)
        self.U = nn.Linear(embed_dim, hidden_size)  # U and b
        self.W = nn.Linear(io.n_outputs, hidden_size, bias=False)  # output(t-1) -> hidden(t)
        self.V = nn.Linear(hidden_size, io.n_outputs)  # V and c

    def fed_back(self, y: torch.Tensor) -> torch.Tensor:
        """Targets (B, T) as the vectors fed back (B, T, C)."""
        if self.io.n_classes is None:
            return y.unsqueeze(-1).float()
        scored = (y >= 0).unsqueeze(-1)
        return F.one_hot(y.clamp(min=0), self.io.n_classes).float() * scored

    def step(self, x: torch.Tensor, y_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h(t), o(t) from the embedded x(t) (..., E) and the fed-back y(t-1) (..., C).
        Any leading shape: (B,) for one step, (B, T) for all steps at once."""
        h = torch.tanh(self.U(x) + self.W(y_prev))  # (..., H)
        return h, self.V(h)  # (..., H), (..., C)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced on targets `y` when given, else running free. Causal, so `lengths`
        (of padded sequences) changes nothing."""
        e = self.embed(x)  # (B, T, E)
        if y is not None:
            y_prev = F.pad(self.fed_back(y), (0, 0, 1, 0))[:, :-1]  # (B, T, C): y(t-1), y(-1) = 0
            return self.step(e, y_prev)[1]  # (B, T, C)
        B, T, _ = e.shape
        y_prev = e.new_zeros(B, self.io.n_outputs)  # (B, C)
        outputs = []
        for t in range(T):
            _, o = self.step(e[:, t], y_prev)  # (B, C)
            outputs.append(o)
            if self.io.n_classes is None:
                y_prev = o
            else:
                y_prev = F.one_hot(o.argmax(-1), self.io.n_classes).to(o.dtype)
        return torch.stack(outputs, dim=1)  # (B, T, C)


class RNNFinal(nn.Module):
    """Design pattern 3 (fig. 10.5): recurrence hidden -> hidden over the whole sequence, then a
    single output from the last hidden state (e.g. a class, with cross-entropy loss).

        h(t) = tanh(b + W h(t-1) + U x(t)),   t = 0 .. T-1,   h(-1) = 0
        o    = c + V h(T-1)

    The same cells as pattern 1 (`cell`, `layers`), in PyTorch's fused modules. For padded
    sequences, T-1 is each sequence's own last step (`lengths` - 1): the recurrence runs over
    the padding too, but nothing after a sequence's end reaches its output.

    Shapes: x (B, T) token ids or (B, T, F) features, lengths (B,) -> o (B, C).
    """

    def __init__(
        self,
        io: TaskIO,
        *,
        cell: str,
        embed_dim: int,
        hidden_size: int,
        layers: int,
        dropout: float,
        forget_bias: float | None,
    ):
        super().__init__()
        _require(io, SEQUENCE, "rnn_final")
        self.embed = input_layer(io, embed_dim)
        self.recurrence = fused_recurrence(cell, embed_dim, hidden_size, layers, dropout, forget_bias)
        self.dropout = nn.Dropout(dropout)
        self.V = nn.Linear(hidden_size, io.n_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h, _ = self.recurrence(self.embed(x))  # (B, T, H)
        if lengths is None:
            last = h[:, -1]  # (B, H)
        else:  # indices on h's device, wherever the lengths come from
            last = h[torch.arange(len(h), device=h.device), lengths.to(h.device) - 1]  # (B, H)
        return self.V(self.dropout(last))  # (B, C)
