"""Synthetic diagnostics: tasks whose answer depends on evidence a known number of steps back.

Each is generated from a seed, vectorised over the whole split (no Python loop per example).
"""

from __future__ import annotations

import math

import torch

from rnnexp.tasks.base import IGNORE, SEQUENCE, STEP, CrossEntropy, SyntheticTask, TaskIO


class DelayedRecall(SyntheticTask):
    """At every step output the symbol seen `distance` steps earlier: y(t) = x(t - distance).

    The simplest probe of how far back a model keeps context (cf. the delayed-recall tasks of
    Hochreiter & Schmidhuber 1997). Steps t < distance have nothing to recall and are not scored.
    `length` defaults to distance + 25, so every distance has 25 scored steps per sequence.
    Chance accuracy: 1 / symbols.

    x: (N, length) symbol ids; y: (N, length) symbol ids, IGNORE for t < distance.
    """

    name = "delayed_recall"

    SCORED = 25  # steps with a target, per sequence, when the length is left to follow the distance

    def __init__(self, *, length: int | None, distance: int, symbols: int, **sizes):
        super().__init__(**sizes)
        self.length = distance + self.SCORED if length is None else length
        self.distance, self.symbols = distance, symbols
        self.io = TaskIO(vocab_size=symbols, n_features=1, n_classes=symbols, output=STEP)
        self.chance_level = 1.0 / symbols

    def generate(self, n, generator):
        x = torch.randint(self.symbols, (n, self.length), generator=generator)
        y = torch.full_like(x, IGNORE)
        y[:, self.distance :] = x[:, : self.length - self.distance]
        return x, y


class RunningParity(SyntheticTask):
    """At every step output the parity of all bits so far: y(t) = (x(0) + ... + x(t)) mod 2.

    Its context is the whole prefix, yet the previous answer is a sufficient summary of it:
    y(t) = y(t-1) XOR x(t). So pattern 2, whose only memory is its previous output, can solve it,
    while a window baseline cannot beyond its window (Deletang et al. 2023). Chance accuracy: 0.5.

    x: (N, length) bits; y: (N, length) bits.
    """

    name = "running_parity"

    def __init__(self, *, length: int, **sizes):
        super().__init__(**sizes)
        self.length = length
        self.io = TaskIO(vocab_size=2, n_features=1, n_classes=2, output=STEP)
        self.chance_level = 0.5

    def generate(self, n, generator):
        x = torch.randint(2, (n, self.length), generator=generator)
        return x, x.cumsum(dim=1) % 2


class CopyMemory(SyntheticTask):
    """The copy memory problem (Arjovsky, Shah & Bengio 2016): 10 symbols from an alphabet of 8,
    then T-1 blanks, a delimiter, then 10 blanks during which the model must reproduce the 10
    symbols in order; T = `distance`, so the sequence is T + 20 steps and each symbol is recalled
    T + 10 steps after it was seen. The target is blank everywhere before the recall.

    Scored, as in the paper, by the cross-entropy over all steps (`xent`, nats, lower is better).
    Chance level: the memoryless baseline that predicts blanks, then uniform symbols, scores
    10 log 8 / (T + 20) (0.173 at T = 100).

    x: (N, T+20) ids (symbols 0-7, blank 8, delimiter 9); y: (N, T+20) ids (symbols 0-7, blank 8).
    """

    name = "copy_memory"
    metric_name = "xent"
    higher_is_better = False
    SYMBOLS, RECALL = 8, 10
    BLANK, DELIMITER = 8, 9

    def __init__(self, *, distance: int, **sizes):
        super().__init__(**sizes)
        self.distance = distance
        self.length = distance + 2 * self.RECALL
        self.io = TaskIO(vocab_size=self.SYMBOLS + 2, n_features=1, n_classes=self.SYMBOLS + 1, output=STEP)
        self.chance_level = self.RECALL * math.log(self.SYMBOLS) / self.length

    def generate(self, n, generator):
        R, T = self.RECALL, self.distance
        symbols = torch.randint(self.SYMBOLS, (n, R), generator=generator)
        x = torch.full((n, self.length), self.BLANK)
        x[:, :R] = symbols
        x[:, R + T - 1] = self.DELIMITER
        y = torch.full_like(x, self.BLANK)
        y[:, -R:] = symbols
        return x, y

    def metric(self):
        return CrossEntropy()


class Adding(SyntheticTask):
    """The adding problem (Hochreiter & Schmidhuber 1997, §5.4): a sequence of (value, marker)
    pairs, values ~ U[0, 1]; exactly two steps are marked, at least `distance` steps apart; at
    the end output the sum of the two marked values. Regression, scored by MSE. `distance=None`
    places the marks as Arjovsky et al. (2016) do, for their published numbers: one uniform in
    each half of the sequence.

    Chance level: always predicting 1, the mean of the sum (the baseline of Arjovsky et al.
    2016), scored on the run's own test split, so that a model exactly as good scores exactly
    chance; over the population it scores the sum's variance 2/12 = 1/6
    (`chance_level_population`). "Solved" is an MSE well below 0.01.

    x: (N, length, 2) features (value, marker); y: (N,) sums.
    """

    name = "adding"

    def __init__(self, *, length: int, distance: int | None, **sizes):
        super().__init__(**sizes)
        self.length, self.distance = length, distance
        self.io = TaskIO(vocab_size=None, n_features=2, n_classes=None, output=SEQUENCE)
        self.chance_level = self.chance_level_population = 1.0 / 6.0  # until the splits are drawn

    def make_splits(self):
        splits = super().make_splits()
        y = splits["test"].tensors[1]
        # always 1, scored by the metric that scores a model: 0.182 on seed 0's 512 sequences
        self.chance_level = float(self.metric()(torch.ones_like(y), y))
        return splits

    def generate(self, n, generator):
        T, d = self.length, self.distance
        values = torch.rand(n, T, generator=generator)
        if d is None:  # first uniform on [0, T/2), second on [T/2, T)
            half = T // 2
            first = (torch.rand(n, generator=generator) * half).long()
            second = half + (torch.rand(n, generator=generator) * (T - half)).long()
        else:  # first uniform on [0, T-d-1], second uniform on [first+d, T-1]
            first = (torch.rand(n, generator=generator) * (T - d)).long()
            second = first + d + (torch.rand(n, generator=generator) * (T - d - first)).long()
        marks = torch.zeros(n, T)
        rows = torch.arange(n)
        marks[rows, first] = 1.0
        marks[rows, second] = 1.0
        y = values[rows, first] + values[rows, second]
        return torch.stack([values, marks], dim=-1), y
