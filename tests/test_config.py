"""Configs: every valid model x task pair composes from the real YAML; everything else is
rejected before training, naming the key, the bad value and what is allowed."""

from __future__ import annotations

import itertools

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from rnnexp import config
from rnnexp.config import ConfigError
from rnnexp.train import describe

PAIRS = list(itertools.product(config.MODELS, config.TASKS))
VALID = [(m, t) for m, t in PAIRS if config.TASKS[t]().output in config.MODELS[m].outputs]
INVALID = [p for p in PAIRS if p not in VALID]


def _small(task: str) -> list[str]:
    """Overrides for a short version of `task` (only the knobs it has)."""
    knobs = config.TASKS[task].__dataclass_fields__
    return ([f"task={task}"] + (["task.length=6"] if "length" in knobs else [])
            + (["task.distance=2"] if "distance" in knobs else []))


def test_the_option_files_are_the_schemas():
    from tests.conftest import CONF

    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(config.MODELS)
    assert {p.stem for p in (CONF / "task").glob("*.yaml")} == set(config.TASKS)
    assert set(VALID) >= {("rnn_hidden", "delayed_recall"), ("rnn_output", "running_parity"),
                          ("rnn_final", "adding"), ("mlp_window", "adding"), ("mlp_bag", "delayed_recall")}
    assert set(INVALID) == {
        ("rnn_final", "delayed_recall"), ("rnn_final", "running_parity"), ("rnn_final", "copy_memory"),
        *((m, t) for m in ("rnn_hidden", "rnn_output") for t in ("adding", "pronoun_reference", "negated_sentiment")),
    }


@pytest.mark.parametrize("model,task", VALID)
def test_valid_pair_composes_and_builds(compose_train, model, task):
    cfg = compose_train(f"model={model}", *_small(task))
    spec = config.check(cfg)
    assert spec.model.name == model and spec.task.name == task
    data = instantiate(cfg.task, seed=0)
    net = instantiate(cfg.model, _partial_=True)(io=data.io)
    x, y = data.generate(4, torch.Generator().manual_seed(0))
    assert net(x).shape == (*y.shape, data.io.n_outputs)


@pytest.mark.parametrize("model,task", INVALID)
def test_invalid_pair_is_rejected_naming_both_and_the_models_that_fit(compose_train, model, task):
    cfg = compose_train(f"model={model}", *_small(task))
    with pytest.raises(ConfigError) as err:
        config.check(cfg)
    message = describe(err.value)
    assert model in message and task in message and "models that fit" in message
    fit = [m for m, t in VALID if t == task]
    assert all(m in message for m in fit)


@pytest.mark.parametrize("override,key,allowed", [
    ("model.hidden_size=0", "model.hidden_size", ">= 1"),
    ("model.dropout=1.5", "model.dropout", "<= 0.9"),
    ("optim.lr=nan", "optim.lr", "not NaN"),
    ("task.distance=40", "task.distance", "task.length"),
    ("trainer.accelerator=tpu9", "trainer.accelerator", "cpu"),
    ("tracking.uri=./mlruns", "tracking.uri", "sqlite:///"),
    ("tracking.uri=sqlite:////no/such/folder/mlflow.db", "tracking.uri", "existing folder"),
    ("seed=-1", "seed", ">= 0"),
])
def test_out_of_range_values_fail_naming_the_key(compose_train, override, key, allowed):
    cfg = compose_train(override)
    with pytest.raises(ConfigError) as err:
        config.check(cfg)
    message = describe(err.value)
    assert message.startswith(key) and override.split("=")[1] in message and allowed in message
    assert "\n" not in message


@pytest.mark.parametrize("override,expected", [
    ("model.hiden_size=3", ["model.hiden_size", "allowed keys", "hidden_size"]),
    ("model.cell=tanh", ["model.cell", "'tanh'", "rnn, gru, lstm"]),
    ("trainer.max_epochs=ten", ["trainer.max_epochs", "'ten'", "Integer"]),
    ("task.symbols=2.5", ["task.symbols", "2.5"]),
])
def test_misspelled_keys_and_wrong_types_fail_at_compose_time(compose_train, override, expected):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train(override)
    message = describe(err.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


def test_pronoun_reference_per_step_needs_a_per_step_model(compose_train):
    config.check(compose_train("model=rnn_hidden", "task=pronoun_reference", "task.per_step=true"))
    with pytest.raises(ConfigError, match="rnn_final"):
        config.check(compose_train("model=rnn_hidden", "task=pronoun_reference"))


def test_the_cell_is_an_enum_and_reaches_the_fused_module(compose_train):
    cfg = compose_train("model.cell=lstm")
    spec = config.check(cfg)
    assert spec.model.cell is config.Cell.lstm
    net = instantiate(cfg.model, _partial_=True)(io=instantiate(cfg.task, seed=0).io)
    assert isinstance(net.recurrence, torch.nn.LSTM)
