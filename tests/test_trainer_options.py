"""The learning-rate schedule, precision and gradient accumulation each change what they say."""

from __future__ import annotations

import math

import pytest
import torch

from rnnexp import config
from rnnexp.train import build, make_trainer

TINY = [
    "task.length=10",
    "task.distance=3",
    "task.train_size=512",
    "task.val_size=64",
    "task.test_size=64",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]


class _Rates:
    """The learning rate each epoch trains at, read from the optimizer."""

    def __init__(self):
        self.seen: list[float] = []

    def __call__(self):
        import pytorch_lightning as pl

        rates = self.seen

        class Record(pl.Callback):
            def on_train_epoch_start(self, trainer, module):
                rates.append(trainer.optimizers[0].param_groups[0]["lr"])

        return Record()


def _fit(compose_train, tmp_path, *overrides: str):
    """Trained as a run trains (make_trainer), with a logger that keeps what it is given."""
    from pytorch_lightning.loggers import CSVLogger

    cfg = compose_train(*TINY, *overrides)
    built = build(cfg, config.check(cfg))
    rates = _Rates()
    logger = CSVLogger(tmp_path)
    trainer, _ = make_trainer(built.cfg, built.task, logger, tmp_path / "checkpoints", tmp_path, [rates()])
    trainer.fit(built.module, datamodule=built.task)
    return trainer, built.module, rates.seen


def _logged(trainer, key: str) -> list[float]:
    """Each value of `key` the logger was given, from its file."""
    return [float(row[key]) for row in _rows(trainer) if row.get(key)]


def _rows(trainer) -> list[dict]:
    import csv
    from pathlib import Path

    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_cosine_anneals_from_lr_to_min_lr_over_max_epochs(compose_train, tmp_path):
    trainer, _, rates = _fit(
        compose_train, tmp_path, "trainer.max_epochs=4", "optim.scheduler=cosine", "optim.lr=0.01", "optim.min_lr=0.001"
    )
    expected = [0.001 + 0.009 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(4)]
    assert rates == pytest.approx(expected) and rates[-1] == pytest.approx(0.001)
    assert _logged(trainer, "lr") == pytest.approx(expected)  # each epoch's rate, logged as it starts


def test_plateau_cuts_the_rate_by_its_factor_on_the_checkpoints_quantity(compose_train, tmp_path):
    trainer, module, rates = _fit(
        compose_train,
        tmp_path,
        "trainer.max_epochs=3",
        "optim.scheduler=plateau",
        "optim.lr_patience=0",
        "optim.lr_factor=0.1",
        "trainer.select_on=loss",
    )
    (config_,) = trainer.lr_scheduler_configs
    scheduler = config_.scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert config_.monitor == "val/loss" and scheduler.mode == "min" and scheduler.factor == pytest.approx(0.1)
    # every rate is the first times a power of the factor, cut only after an epoch that did not improve
    assert all(math.isclose(math.log10(r / rates[0]), round(math.log10(r / rates[0]))) for r in rates)
    assert rates[0] == pytest.approx(0.003) and len(rates) == 3


def test_no_scheduler_keeps_the_rate(compose_train, tmp_path):
    trainer, _, rates = _fit(compose_train, tmp_path, "trainer.max_epochs=2")
    assert rates == [0.003, 0.003] and not trainer.lr_scheduler_configs
    assert not [k for k in _rows(trainer)[0] if k.startswith("lr")]  # no rate logged (LearningRateMonitor: lr-Adam)


def test_accumulating_gradients_steps_the_optimizer_every_n_batches(compose_train, tmp_path):
    one, _, _ = _fit(compose_train, tmp_path / "one", "trainer.max_epochs=1")
    four, _, _ = _fit(compose_train, tmp_path / "four", "trainer.max_epochs=1", "trainer.accumulate_grad_batches=4")
    assert one.global_step == 512 // 64 and four.global_step == 512 // 64 // 4


def test_bf16_mixed_precision_trains_on_cpu(compose_train, tmp_path):
    trainer, module, _ = _fit(compose_train, tmp_path, "trainer.max_epochs=1", "trainer.precision=bf16-mixed")
    assert trainer.precision == "bf16-mixed" and math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert next(module.parameters()).dtype == torch.float32  # mixed: the weights stay float32


@pytest.mark.parametrize(
    "override,expected",
    [
        (
            "trainer.precision=16-mixed",
            "trainer.precision='16-mixed' is not allowed: one of 32-true, 64-true, bf16-mixed "
            "with trainer.accelerator=cpu",
        ),
        ("optim.scheduler=step", "optim.scheduler"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is not allowed: >= 1"),
        ("optim.lr_factor=1.5", "optim.lr_factor=1.5 is not allowed: >= 0.01 and <= 0.99"),
    ],
)
def test_a_bad_trainer_option_is_refused_naming_it(compose_train, override, expected):
    from rnnexp.train import describe

    with pytest.raises(Exception) as err:
        config.check(compose_train(override, "optim.scheduler=cosine" if "min_lr" in override else "seed=0"))
    assert expected in describe(err.value)
