"""Configs: every valid model x task pair composes from the real YAML; everything else is
rejected before training, naming the key, the bad value and what is allowed."""

from __future__ import annotations

import itertools

import omegaconf
import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from rnnexp import config
from rnnexp.config import ConfigError
from rnnexp.train import build, describe
from tests.conftest import CONF

PAIRS = list(itertools.product(config.MODELS, config.TASKS))
VALID = [(m, t) for m, t in PAIRS if config.TASKS[t]().output in config.MODELS[m].outputs]
INVALID = [p for p in PAIRS if p not in VALID]


@pytest.fixture
def small(tmp_path):
    """small(task) -> overrides for a short version of `task`, on files written here."""
    text, reviews = tmp_path / "text.txt", tmp_path / "reviews.csv"
    text.write_text("the cat sat on the mat. " * 30, encoding="utf-8")
    reviews.write_text(
        "text,label\n" + "".join(f"review {i} was {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(40)),
        encoding="utf-8",
    )

    def _small(task: str) -> list[str]:
        knobs = config.TASKS[task].__dataclass_fields__
        overrides = [f"task={task}"]
        if task == "char_lm":
            overrides += [f"task.path={text}", "task.length=8"]
        elif task == "text":
            overrides += [f"task.path={reviews}", f"task.cache_dir={tmp_path / 'cache'}", "task.min_frequency=1"]
        elif "length" in knobs:
            overrides.append("task.length=6")
        if "distance" in knobs:
            overrides.append("task.distance=2")
        if "train_size" in knobs:
            overrides += ["task.train_size=64", "task.val_size=16", "task.test_size=16"]
        return overrides

    return _small


def test_the_option_files_are_the_schemas():
    from tests.conftest import CONF

    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(config.MODELS)
    assert {p.stem for p in (CONF / "task").glob("*.yaml")} == set(config.TASKS)
    per_sequence = {"adding", "pronoun_reference", "negated_sentiment", "digits", "text"}
    assert set(INVALID) == {
        *(("rnn_final", t) for t in set(config.TASKS) - per_sequence),
        *((m, t) for m in ("rnn_hidden", "rnn_output") for t in per_sequence),
    }


@pytest.mark.parametrize("model,task", VALID)
def test_valid_pair_composes_and_builds(compose_train, small, model, task):
    cfg = compose_train(f"model={model}", *small(task))
    spec = config.check(cfg)
    assert spec.model.name == model and spec.task.name == task
    built = build(cfg, spec)
    data, net = built.task, built.model
    x, y, *lengths = next(iter(data.train_dataloader()))
    assert net(x, lengths=lengths[0] if lengths else None).shape == (*y.shape, data.io.n_outputs)


@pytest.mark.parametrize("model,task", INVALID)
def test_invalid_pair_is_rejected_naming_both_and_the_models_that_fit(compose_train, small, model, task):
    cfg = compose_train(f"model={model}", *small(task))
    with pytest.raises(ConfigError) as err:
        config.check(cfg)
    message = describe(err.value)
    assert model in message and task in message and "models that fit" in message
    fit = [m for m, t in VALID if t == task]
    assert all(m in message for m in fit)


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("model.hidden_size=0", "model.hidden_size", ">= 1"),
        ("model.dropout=1.5", "model.dropout", "<= 0.9"),
        ("optim.lr=nan", "optim.lr", "a finite number"),
        ("trainer.early_stopping.min_delta=inf", "trainer.early_stopping.min_delta", "a finite number"),
        ("task.length=10", "task.distance", "task.length"),  # the default distance 15 does not fit
        ("trainer.accelerator=tpu9", "trainer.accelerator", "cpu"),
        ("tracking.uri=./mlruns", "tracking.uri", "sqlite:///"),
        ("tracking.uri=sqlite:////no/such/folder/mlflow.db", "tracking.uri", "existing folder"),
        ("seed=-1", "seed", ">= 0"),
        ("seed=4294967296", "seed", "<= 4294967295"),  # numpy's generator takes no more: a traceback, before
        ("threads=100000", "threads", "4 x this machine's"),  # torch crashed on it, with no message
        # a password holding an unencoded @ would be split at the first one, its tail taken for the host
        ("tracking.uri=http://alice:S3c@Rt9xq@127.0.0.1:5999", "tracking.uri", "percent-encoded"),
        # a config names no code to run: not on the command line, not in a logged config replayed
        ("model._target_=os.system", "model._target_", "rnnexp.models.recurrent.RNNHidden"),
        ("task._target_=subprocess.run", "task._target_", "rnnexp.tasks.synthetic.DelayedRecall"),
        ("trainer._target_=builtins.exec", "trainer._target_", "pytorch_lightning.Trainer"),
        ("trainer.strategy=ddp", "trainer.strategy", "auto, ddp_spawn"),
        ("model.forget_bias=2.0", "model.forget_bias", "only an LSTM has a forget gate"),  # the default cell is tanh
        ("model.forget_bias=nan", "model.forget_bias", "a finite number"),  # a traceback in training, before
        ("model.forget_bias=1e+39", "model.forget_bias", "<= 20.0"),  # overflowed float32: a traceback, before
    ],
)
def test_out_of_range_values_fail_naming_the_key(compose_train, override, key, allowed):
    cfg = compose_train(override)
    with pytest.raises(ConfigError) as err:
        config.check(cfg)
    message = describe(err.value)
    value = override.split("=", 1)[1]
    assert message.startswith(key) and (value in message or "Rt9xq" in value) and allowed in message
    assert "\n" not in message and "S3c" not in message  # a password is never shown, nor any part of it


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model.hiden_size=3", ["model.hiden_size", "allowed keys", "hidden_size"]),
        ("model.cell=tanh", ["model.cell", "'tanh'", "rnn, gru, lstm"]),
        ("trainer.max_epochs=ten", ["trainer.max_epochs", "'ten'", "Integer"]),
        ("task.symbols=2.5", ["task.symbols", "2.5"]),
    ],
)
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
    from rnnexp.models.sizing import make_model

    net = make_model(cfg.model, instantiate(cfg.task, seed=0).io)
    assert isinstance(net.recurrence, torch.nn.LSTM)


EXPERIMENT_CONFIGS = sorted(
    str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").rglob("*.yaml")
)


@pytest.mark.parametrize("option", EXPERIMENT_CONFIGS)
def test_each_experiment_composes_and_tracks_under_its_own_name(compose_train, option):
    cfg = compose_train(f"experiment={option}")
    config.check(cfg)
    name = option.split("/")[0]  # conf/experiment/NAME.yaml, or one sweep of several: NAME/PART.yaml
    assert cfg.tracking.experiment == name
    assert (CONF.parent / "experiments" / name / "README.md").exists()


@pytest.mark.parametrize("task", ["delayed_recall", "pronoun_reference"])  # one output per step, one per sequence
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_model_params_sizes_every_model_to_n_within_3_percent(compose_train, task, cell):
    from rnnexp.models.sizing import count

    for name, model_config in config.MODELS.items():
        if instantiate(compose_train(f"task={task}").task, seed=0).io.output not in model_config.outputs:
            continue  # a pair that does not fit
        for n in (5_000, 20_000, 100_000):
            overrides = [f"task={task}", f"model={name}", f"model.params={n}"]
            if hasattr(model_config, "cell"):
                overrides.append(f"model.cell={cell}")
            cfg = compose_train(*overrides)
            built = build(cfg, config.check(cfg))
            trained = sum(p.numel() for p in built.model.parameters() if p.requires_grad)
            assert abs(trained - n) <= 0.03 * n, (name, n, trained)
            # the resolved config and the spec hold the solved size, the same
            assert built.spec.model.hidden_size == built.cfg.model.hidden_size
            assert count(built.cfg.model, built.task.io, built.spec.model.hidden_size) == trained


def test_model_params_with_a_hidden_size_of_its_own_is_refused(compose_train):
    with pytest.raises(ConfigError, match=r"model.hidden_size=8 is not allowed: left at 64 with model.params=20000"):
        config.check(compose_train("model.params=20000", "model.hidden_size=8"))


def test_model_params_below_the_smallest_model_names_the_smallest(compose_train):
    cfg = compose_train("model=rnn_hidden", "model.params=10")
    with pytest.raises(ConfigError, match=r"model.params=10 .*at least [\d,]+: the smallest RNNHidden"):
        build(cfg, config.check(cfg))


def test_a_sized_run_keeps_its_identity_when_its_hidden_size_is_solved(compose_train):
    """resume= and a resumed sweep find a run by the hash of its config as composed from its
    overrides, before model.params is solved into model.hidden_size."""
    from rnnexp.tracking import config_hash

    cfg = compose_train("model.params=20000")
    before = config_hash(cfg)
    built = build(cfg, config.check(cfg))
    assert built.cfg.model.hidden_size != 64 and config_hash(built.cfg) == before
    assert cfg.model.hidden_size == 64  # the composed config is not changed: the resolved one is a copy
    with pytest.raises(omegaconf.errors.ReadonlyConfigError):  # and it is final
        built.cfg.model.hidden_size = 8
    assert config_hash(compose_train("model.params=30000")) != before  # the request itself is the identity


def test_a_run_name_says_the_cell_the_distance_the_size_and_every_key_set(compose_train):
    from dataclasses import replace

    from omegaconf import OmegaConf

    from rnnexp.train import Built, run_name

    def named(cfg, overrides: list[str], seed: int = 0, swept: tuple[str, ...] = (), **optim) -> str:
        spec = config.check(cfg)
        spec = replace(spec, optim=replace(spec.optim, **optim))  # as `resolve` leaves it
        built = Built(cfg, spec, instantiate(cfg.task, seed=seed), None, None)
        return run_name(built, OmegaConf.create(overrides), swept)

    given = [
        "model.cell=gru",
        "task.distance=16",
        "optim.lr=0.03",
        "tracking.uri=sqlite:///x.db",
        "seed=3",
        "optim.lr=0.01",
    ]  # a key given twice: its last value, once
    assert named(compose_train(*given), given, seed=3) == "rnn_hidden-gru-delayed_recall-d16-h64-lr0.01-s3"
    chosen = ["optim.lr_from=recall_lr"]  # the rate as the selection chose it
    assert named(compose_train(*chosen), chosen, lr=0.003) == "rnn_hidden-tanh-delayed_recall-d15-h64-lr0.003-s0"
    tanh = compose_train("model=rnn_final", "task=pronoun_reference")
    assert named(tanh, []) == "rnn_final-tanh-pronoun_reference-d4-h64-s0"
    # a sweep's job leads with what the sweep varies, in the sweep's order, and says each part once
    swept = ("task.distance", "seed", "optim.lr")
    assert named(compose_train(*given), given, seed=3, swept=swept) == "d16-s3-lr0.01-rnn_hidden-gru-delayed_recall-h64"
    # what names no run (a sweep's resume, where it is tracked) is left out; a secret is masked
    extra = ["resume_sweep=0123abcd", "task.where=https://alice:s3cret@example.org/x"]
    named_extra = named(compose_train(*given), [*given, *extra], seed=3)
    assert "resume_sweep" not in named_extra and "s3cret" not in named_extra and "***" in named_extra
    sized = ["model.params=20000", "model=rnn_hidden", "model.cell=lstm"]
    assert named(compose_train(*sized), sized, swept=("model.cell", "model.params")).startswith("lstm-p20000-h")


def test_each_default_is_written_once_in_its_schema_not_in_the_yaml_or_the_constructor():
    import inspect

    import yaml
    from hydra.utils import get_class

    for group, schemas in (("model", config.MODELS), ("task", config.TASKS)):
        for name, schema in schemas.items():
            written = yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}
            fields = set(config.defaults(schema))
            assert not fields & (set(written) - {"defaults"}), (group, name, "a YAML restates a schema default")
            signature = inspect.signature(get_class(schema._target_).__init__)
            with_default = {k for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
            assert not fields & with_default, (group, name, "a constructor restates a schema default")
    for path in (CONF / "trainer" / "default.yaml", CONF / "tracking" / "local.yaml"):
        written = yaml.safe_load(path.read_text()) or {}
        assert set(written) <= {"log_model"}, path  # log_model: read from the environment, for the tests


@pytest.mark.parametrize("kind", [config.ConfigError, config.MismatchError])
def test_a_config_error_survives_pickling_as_a_joblib_workers_error_must(kind):
    import pickle

    err = kind("optim.lr_from", "memory_span_rates", "an experiment whose rates differ")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is kind and str(back) == str(err)
    assert (back.key, back.value, back.allowed) == (err.key, err.value, err.allowed)
