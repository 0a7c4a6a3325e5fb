"""What every task shares: its data splits as a LightningDataModule, and how it is scored.

A task says what a model reads (token ids or real-valued features), what it writes (class logits
or one real value, at every step or once per sequence), its loss, its metric and the metric's
chance level: the score of the best predictor that ignores the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from rnnexp.config import SEQUENCE, STEP, ConfigError

IGNORE = -100  # target at a step with nothing to predict (cross-entropy's ignore_index)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TaskIO:
    """What a model must read and write to serve a task."""

    vocab_size: int | None  # inputs are token ids in [0, vocab_size); None: real-valued features
    n_features: int  # features per step when vocab_size is None
    n_classes: int | None  # outputs are class logits; None: one real value (regression)
    output: str  # STEP: an output at every step; SEQUENCE: one output at the end

    @property
    def n_outputs(self) -> int:
        return self.n_classes or 1


@dataclass(frozen=True)
class DataSource:
    """Where a real dataset comes from, for tracking: two runs on different data must never be
    compared by mistake."""

    name: str
    source: str  # a path, a hub name, a package function
    digest: str  # of the content
    rows: int


class Slices(TensorDataset):
    """A TensorDataset read a batch at a time: `__getitems__` (which DataLoader calls with a
    batch's indices) slices every tensor once, where `__getitem__` per sample and collation would
    index and stack again, costing as much as a small model's step."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(t[index] for t in self.tensors)


def as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function of `Slices`: its batches come whole."""
    return batch


class Task(pl.LightningDataModule):
    """A task: subclasses set `name`, `io`, `chance_level` and implement `make_splits`."""

    name: str
    io: TaskIO
    chance_level: float
    # where `chance_level` is measured on the run's own test split: the value the split is drawn around
    chance_level_population: float | None = None
    length: int | None = None  # steps per sequence (None: varies)
    distance: int | None = None  # how many steps back the evidence lies (None: no such knob)
    data_source: DataSource | None = None  # real data only

    def __init__(self, *, batch_size: int, eval_batch_size: int, seed: int = 0):
        # every config key a required keyword: its default is written once, in the task's schema
        # (rnnexp/config.py; `config.defaults(schema)` for one built outside a run)
        super().__init__()
        self.batch_size = batch_size
        # validation and test need no gradients and keep nothing between batches: a few large
        # batches cost a few forward calls instead of a Lightning iteration per 64 sequences
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.splits: dict[str, TensorDataset] = {}
        self.shuffle = torch.Generator().manual_seed(seed)  # the training batches' order, epoch by epoch

    def make_splits(self) -> dict[str, TensorDataset]:
        """The train, val and test datasets: (inputs, targets) or (inputs, targets, lengths)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.make_splits()

    # Lightning keeps these in every checkpoint: a resumed run draws the batches in the order the
    # uninterrupted run would have
    def state_dict(self) -> dict:
        return {"shuffle": self.shuffle.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.shuffle.set_state(state_dict["shuffle"])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """The split in batches taken as index slices of its tensors (`Slices`), not sample by
        sample and stacked again; in the order `DataLoader(shuffle=...)` draws, the same batches."""
        self.setup()
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        data = self.splits[split]
        order = RandomSampler(data, generator=self.shuffle) if shuffle else SequentialSampler(data)
        return DataLoader(  # the generator too: each epoch's iterator draws its base seed from it, as before
            Slices(*data.tensors),
            batch_sampler=BatchSampler(order, batch_size, drop_last=False),
            collate_fn=as_batch,
            generator=self.shuffle if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # --- scoring ------------------------------------------------------------------------------

    @property
    def metric_name(self) -> str:
        return "acc" if self.io.n_classes else "mse"

    @property
    def higher_is_better(self) -> bool:
        return self.io.n_classes is not None

    def flatten(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model outputs (..., n_outputs) and targets (...) as (N, C) logits or (N,) values, (N,)."""
        if self.io.n_classes:
            return out.reshape(-1, self.io.n_classes), y.reshape(-1)
        return out.reshape(-1), y.reshape(-1)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood: cross-entropy for classes, squared error for a value."""
        o, t = self.flatten(out, y)
        if self.io.n_classes:
            return F.cross_entropy(o, t, ignore_index=IGNORE)
        return F.mse_loss(o, t)

    def summed_loss(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | int]:
        """The loss summed over the scored steps in float64, and how many there are: the same
        whatever the batches (a mean per batch, summed, would move in its last bits)."""
        o, t = self.flatten(out, y)
        return summed_cross_entropy(o, t) if self.io.n_classes else summed_squared_error(o, t)

    def metric(self) -> Metric:
        """A fresh metric (accumulates over batches): accuracy over scored steps, or MSE."""
        if self.io.n_classes:
            # the inputs are ours, well formed: checking them would cost more than the update
            return MulticlassAccuracy(self.io.n_classes, average="micro", ignore_index=IGNORE, validate_args=False)
        return SquaredError()


class SyntheticTask(Task):
    """A task whose data are generated: subclasses implement `generate`.

    With `fresh`, the training set is drawn anew each epoch (as the papers these tasks come from
    draw every batch afresh), from the seed and the epoch alone, so a resumed run trains on the
    sequences the uninterrupted one would have; validation and test stay fixed, and no epoch's
    training set holds one of their sequences. Without it, one training set serves every epoch.
    """

    # fresh data need at least this share of sequences outside validation and test, checked once
    # before training on a probe: then MAX_DRAWS rounds fill an epoch's set but with probability
    # below 2^-MAX_DRAWS, and no run fails in its middle
    MIN_FRESH_SHARE = 0.5
    MAX_DRAWS = 40  # rounds of drawing that fill an epoch's training set with held-out sequences left out

    def __init__(
        self,
        *,
        train_size: int,
        val_size: int,
        test_size: int,
        fresh: bool,
        batch_size: int,
        eval_batch_size: int,
        seed: int = 0,
    ):
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.fresh = fresh
        self.epoch = 0  # the epoch whose training set `splits["train"]` holds

    def generate(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` examples (inputs, targets), drawn from `generator` only."""
        raise NotImplementedError

    def make_splits(self) -> dict[str, TensorDataset]:
        """Each split has its own stream, derived from the seed, so a split does not depend on
        the sizes of the others; validation and test keep only sequences that occur in no
        earlier split, so a score never rewards memorising training examples. With `fresh`,
        validation and test come first and each epoch's training set leaves their sequences out."""
        splits: dict[str, TensorDataset] = {}
        earlier: list[torch.Tensor] = []
        for i, split in enumerate(SPLITS):
            if split == "train" and self.fresh:
                continue
            g = torch.Generator().manual_seed(self.seed * len(SPLITS) + i)
            x, y = self.generate(self.sizes[split], g)
            if earlier:
                new = rows_not_in(x, earlier)
                if not new.any():
                    raise ConfigError(
                        f"task.{split}_size",
                        self.sizes[split],
                        f"a {split} split of sequences unseen in training, but {self.name} has "
                        "too few distinct sequences here (make them longer or task.train_size smaller)",
                    )
                x, y = x[new], y[new]
            earlier.append(x)
            splits[split] = TensorDataset(x, y)
        if self.fresh:
            self._check_fresh(earlier)
            splits["train"] = self.training_set(self.epoch, held_out=earlier)
        return splits

    def _check_fresh(self, held_out: list[torch.Tensor]) -> None:
        """Refuse fresh data, before any training, where too few of the task's sequences lie
        outside validation and test: a probe of its own stream, not luck in an epoch's draws."""
        state = np.random.SeedSequence([self.seed], spawn_key=(len(SPLITS) + 1,)).generate_state(1, np.uint64)
        x, _ = self.generate(max(self.sizes["train"], 1000), torch.Generator().manual_seed(int(state[0])))
        if float(rows_not_in(x, held_out).float().mean()) < self.MIN_FRESH_SHARE:
            raise ConfigError("task.fresh", "true", self._too_few())

    def _too_few(self) -> str:
        return (
            f"false on this task: fewer than {self.MIN_FRESH_SHARE:.0%} of {self.name}'s sequences lie outside "
            "validation and test, too few to draw a new training set each epoch (make the sequences longer, "
            "or task.val_size and task.test_size smaller)"
        )

    def training_set(self, epoch: int, held_out: list[torch.Tensor] | None = None) -> TensorDataset:
        """Epoch `epoch`'s training set under `fresh`: `train_size` sequences from a stream of
        the seed and the epoch, none of them in validation or test (`held_out`, their inputs)."""
        if held_out is None:
            held_out = [self.splits[split].tensors[0] for split in ("val", "test")]
        n = self.sizes["train"]
        # an independent stream per (seed, epoch), none of them one of the fixed splits' streams
        state = np.random.SeedSequence([self.seed, epoch], spawn_key=(len(SPLITS),)).generate_state(1, np.uint64)
        g = torch.Generator().manual_seed(int(state[0]))
        parts, kept = [], 0
        for _ in range(self.MAX_DRAWS):
            x, y = self.generate(n, g)
            new = rows_not_in(x, held_out)
            parts.append((x[new], y[new]))
            kept += int(new.sum())
            if kept >= n:
                return TensorDataset(*(torch.cat(t)[:n] for t in zip(*parts, strict=True)))
        raise ConfigError("task.fresh", "true", self._too_few())

    def seen_inputs(self, epochs: int) -> list[torch.Tensor]:
        """The inputs a model trained here for at most `epochs` epochs has seen: the training
        set (each epoch's, under `fresh`) and validation, which chose its checkpoint."""
        self.setup()
        train = (
            [self.training_set(e).tensors[0] for e in range(epochs)]
            if self.fresh
            else [self.splits["train"].tensors[0]]
        )
        return [*train, self.splits["val"].tensors[0]]

    def train_dataloader(self) -> DataLoader:
        if self.fresh:  # Lightning reloads it every epoch (the trainer's reload_dataloaders_every_n_epochs=1)
            self.setup()
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            if epoch != self.epoch:
                self.splits["train"], self.epoch = self.training_set(epoch), epoch
        return super().train_dataloader()


def rows_not_in(x: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """Mask (N,) of the rows of `x` that occur in none of `others` (rows compared whole).
    Real-valued inputs are taken as never repeating."""
    if x.is_floating_point():
        return torch.ones(len(x), dtype=torch.bool)
    ref = torch.cat(others)
    rows = torch.cat([ref, x]).reshape(len(ref) + len(x), -1)
    _, ids = torch.unique(rows, dim=0, return_inverse=True)
    return ~torch.isin(ids[len(ref) :], ids[: len(ref)])


def summed_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy summed over the scored steps in float64, and their count: the same whatever
    the batches (a mean per batch, summed, would move in its last bits)."""
    per_step = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="none")  # 0 where ignored
    return per_step.double().sum(), (target != IGNORE).sum()


def summed_squared_error(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Squared error summed in float64, and the count of values."""
    return (preds.float() - target.float()).square().double().sum(), target.numel()


class _MeanOverSteps(Metric):
    """A mean over the scored steps of a per-step loss, summed in float64 across batches: the same
    whatever the batches (torchmetrics' MeanSquaredError sums in float32, batch by batch)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).float()


class SquaredError(_MeanOverSteps):
    """Mean squared error over the scored values."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        total, count = summed_squared_error(preds, target)
        self.total, self.count = self.total + total, self.count + count


class CrossEntropy(_MeanOverSteps):
    """Mean cross-entropy in nats over the scored steps."""

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        total, count = summed_cross_entropy(logits, target)
        self.total, self.count = self.total + total, self.count + count


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, torch.Tensor]:
    """Disjoint random train/val/test indices into `n` examples, fixed by `seed`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = (max(1, round(n * f)) if f > 0 else 0 for f in (val_fraction, test_fraction))
    if n - n_val - n_test < 1:
        raise ConfigError("task.val_fraction", val_fraction, f"fractions that leave training data ({n} examples)")
    return {"train": order[n_val + n_test :], "val": order[:n_val], "test": order[n_val : n_val + n_test]}


__all__ = [
    "CrossEntropy",
    "DataSource",
    "SquaredError",
    "SyntheticTask",
    "rows_not_in",
    "split_indices",
    "IGNORE",
    "SEQUENCE",
    "STEP",
    "Task",
    "TaskIO",
]
