"""Handwritten digits read as a sequence: the small offline cousin of sequential MNIST."""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import TensorDataset

from rnnexp.tasks.base import SEQUENCE, DataSource, Task, TaskIO, split_indices


class Digits(Task):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, no download),
    classified after reading the image as a sequence: row by row (`read="rows"`, 8 steps of 8
    pixels) or pixel by pixel (`read="pixels"`, 64 steps of 1 pixel), after sequential MNIST
    (Le, Jaitly & Hinton 2015). Pixels are scaled to [0, 1].

    Chance level: the test accuracy of always naming the most common training digit (about 0.10).

    x: (N, 8, 8) or (N, 64, 1) features; y: (N,) digits.
    """

    name = "digits"

    def __init__(
        self,
        *,
        read: str,
        val_fraction: float,
        test_fraction: float,
        batch_size: int,
        eval_batch_size: int,
        seed: int = 0,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
        self.read = str(getattr(read, "value", read))
        self.fractions = (val_fraction, test_fraction)
        self.length = 8 if self.read == "rows" else 64
        self.io = TaskIO(vocab_size=None, n_features=8 if self.read == "rows" else 1, n_classes=10, output=SEQUENCE)
        self.chance_level = 0.1  # measured on the test split once the data are loaded

    def make_splits(self) -> dict[str, TensorDataset]:
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)  # (1797, 64) in 0..16, (1797,)
        x = torch.tensor(images, dtype=torch.float32) / 16.0
        x = x.view(-1, 8, 8) if self.read == "rows" else x.view(-1, 64, 1)
        y = torch.tensor(labels, dtype=torch.long)
        digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
        self.data_source = DataSource("sklearn-digits", "sklearn.datasets.load_digits", digest, len(y))
        index = split_indices(len(y), *self.fractions, seed=self.seed)
        majority = torch.bincount(y[index["train"]]).argmax()
        self.chance_level = float((y[index["test"]] == majority).float().mean())
        return {split: TensorDataset(x[i], y[i]) for split, i in index.items()}
