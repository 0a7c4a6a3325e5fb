"""The tasks: labels checked by hand, determinism, and chance levels a trivial predictor scores."""

from __future__ import annotations

import torch

from rnnexp.tasks import IGNORE, Adding, DelayedRecall, RunningParity

SIZES = dict(train_size=64, val_size=32, test_size=32, batch_size=16)


def _generate(task, n=5, seed=0):
    return task.generate(n, torch.Generator().manual_seed(seed))


def test_delayed_recall_targets_are_the_symbol_distance_steps_back():
    task = DelayedRecall(length=6, distance=2, symbols=4, **SIZES)
    x, y = _generate(task)
    assert x.shape == y.shape == (5, 6)
    assert torch.all(y[:, :2] == IGNORE)
    assert torch.equal(y[:, 2:], x[:, :4])
    assert x.min() >= 0 and x.max() < 4


def test_running_parity_by_hand():
    task = RunningParity(length=6, **SIZES)
    x, y = _generate(task, n=200)
    # one row checked by hand: the parity flips on every 1
    row = x[0].tolist()
    expected, parity = [], 0
    for bit in row:
        parity ^= bit
        expected.append(parity)
    assert y[0].tolist() == expected
    assert torch.equal(y[:, 1:], y[:, :-1] ^ x[:, 1:])  # y(t) = y(t-1) XOR x(t)


def test_adding_marks_two_values_at_least_distance_apart_and_sums_them():
    task = Adding(length=12, distance=5, **SIZES)
    x, y = _generate(task, n=500)
    assert x.shape == (500, 12, 2) and y.shape == (500,)
    values, marks = x[..., 0], x[..., 1]
    assert torch.all(marks.sum(1) == 2)
    positions = marks.nonzero()[:, 1].view(500, 2)
    assert torch.all(positions[:, 1] - positions[:, 0] >= 5)
    torch.testing.assert_close(y, (values * marks).sum(1))
    assert values.min() >= 0 and values.max() <= 1
    # every admissible first position occurs: the marks are not at fixed places
    assert set(positions[:, 0].tolist()) == set(range(12 - 5))


def test_same_seed_same_data_and_splits_differ():
    a, b = DelayedRecall(seed=3, **SIZES), DelayedRecall(seed=3, **SIZES)
    a.setup(), b.setup()
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].tensors[0], b.splits[split].tensors[0])
    assert not torch.equal(a.splits["val"].tensors[0], a.splits["test"].tensors[0])
    c = DelayedRecall(seed=4, **SIZES)
    c.setup()
    assert not torch.equal(a.splits["train"].tensors[0], c.splits["train"].tensors[0])


def _score_constant(task, constant_output):
    """The task's own metric for a predictor that ignores the input."""
    x, y = _generate(task, n=20000, seed=1)
    metric = task.metric()
    out = constant_output.expand(*y.shape, -1) if task.io.n_classes else torch.full_like(y, constant_output)
    metric.update(*task.flatten(out, y))
    return float(metric.compute())


def test_chance_levels_are_what_an_input_blind_predictor_scores():
    recall = DelayedRecall(length=10, distance=3, symbols=8, **SIZES)
    always_0 = torch.nn.functional.one_hot(torch.tensor(0), 8).float()
    assert abs(_score_constant(recall, always_0) - recall.chance_level) < 0.01

    parity = RunningParity(length=10, **SIZES)
    assert abs(_score_constant(parity, torch.tensor([1.0, 0.0])) - parity.chance_level) < 0.01

    adding = Adding(length=20, distance=5, **SIZES)
    assert abs(_score_constant(adding, 1.0) - adding.chance_level) < 0.01
    assert _score_constant(adding, 0.8) > adding.chance_level  # 1 is the best constant


def test_loaders_batch_and_cover_the_split():
    task = RunningParity(length=5, **SIZES)
    batches = list(task.train_dataloader())
    assert len(batches) == 64 // 16
    assert batches[0][0].shape == (16, 5)
