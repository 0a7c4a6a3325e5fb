"""Shared helpers: compose the project's real configs, and the I/O signatures of tasks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rnnexp import config
from rnnexp.tasks.base import SEQUENCE, STEP, TaskIO

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

config.register()
# tracking.log_model's default: off in the runs the tests start (about 5 s each), on where a test
# says tracking.log_model=true (tests/test_evaluation.py checks the logged model)
os.environ.setdefault("RNNEXP_LOG_MODEL", "false")


@pytest.fixture
def compose_train():
    """compose_train("model=mlp_bag", ...) -> the composed `train` config, as the CLI builds it."""

    def _compose(*overrides: str):
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose("train", overrides=list(overrides))

    return _compose


def make_task(task_class: type, **changes):
    """A task built outside a run: its schema's defaults (rnnexp/config.py), with `changes`."""
    return task_class(**config.task_defaults(task_class, **changes))


def token_io(output: str = STEP, vocab: int = 5, classes: int | None = 5) -> TaskIO:
    return TaskIO(vocab_size=vocab, n_features=1, n_classes=classes, output=output)


def feature_io(output: str = STEP, features: int = 3, classes: int | None = 4) -> TaskIO:
    return TaskIO(vocab_size=None, n_features=features, n_classes=classes, output=output)


__all__ = ["CONF", "ROOT", "SEQUENCE", "STEP", "feature_io", "make_task", "token_io"]
