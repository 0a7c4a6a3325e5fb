"""Typed schemas for the config groups: what a run is made of.

`conf/train.yaml` composes the groups `model`, `task`, `trainer` and `tracking` plus `optim` and
`seed`. Each group is typed by a dataclass below, registered in Hydra's ConfigStore (the pattern of
Hydra's "structured config schema" tutorial), so a misspelled key or a wrong type fails at compose
time naming its full key, and choices such as the cell type are enums. `model` and `task` hold a
different dataclass per option: each option's YAML extends `/schema_<group>_<option>`.

What composition cannot check (ranges, a distance that must fit the length, a model that cannot
serve a task) is checked by `check()`, still before torch is imported, so `--help` and config
errors answer fast. Every error names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from rnnexp.store import DEFAULT_URI, MASK, NOT_IDENTITY, Store, masked_uri

STEP, SEQUENCE = "step", "sequence"  # a task's output kind: one per step, or one per sequence


class ConfigError(ValueError):
    """A config value that composes but is not allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")

    def __reduce__(self):  # rebuilt from its three fields: a joblib worker's error reaches the sweep whole
        return type(self), (self.key, self.value, self.allowed)


class MismatchError(ConfigError):
    """A model that cannot serve the task: a sweep over models x tasks skips such a pair."""


def _range(default: Any, low: float | None = None, high: float | None = None) -> Any:
    """A numeric field whose allowed range `check()` enforces (inclusive bounds)."""
    return field(default=default, metadata={"low": low, "high": high})


class Cell(str, Enum):
    """The recurrent cell of patterns 1 and 3 (PyTorch's fused modules)."""

    rnn = "rnn"  # tanh, the book's eq. 10.9
    gru = "gru"
    lstm = "lstm"


class Selection(str, Enum):
    """The validation quantity that picks the checkpoint tested (and, with early stopping, ends
    training): the task's metric, or the loss (smoother, and lower is better on every task)."""

    metric = "metric"
    loss = "loss"


class Scheduler(str, Enum):
    """The learning-rate schedule: none, cosine annealing over `trainer.max_epochs` down to
    `optim.min_lr`, or cut by `optim.lr_factor` when the validation quantity that picks the
    checkpoint has not improved in `optim.lr_patience` epochs (PyTorch's ReduceLROnPlateau)."""

    none = "none"
    cosine = "cosine"
    plateau = "plateau"


class Optimizer(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


# --- model ------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Base of every model option. `pattern` is the design pattern of Goodfellow et al. (2016,
    §10.2), 1 to 3, or "baseline"; `outputs` the output kinds the model can produce."""

    name: ClassVar[str]
    pattern: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    _target_: str = MISSING
    embed_dim: int = _range(32, low=1)
    hidden_size: int = _range(64, low=1)
    # size the model to this many trainable parameters (within 3%) by solving for hidden_size,
    # which is then logged as solved; None: hidden_size as given (rnnexp/models/sizing.py)
    params: int | None = _range(None, low=1)

    def check(self) -> None:
        if self.params is not None and self.hidden_size != ModelConfig.hidden_size:
            raise ConfigError(
                "model.hidden_size",
                self.hidden_size,
                f"left at {ModelConfig.hidden_size} with model.params={self.params}: the hidden size "
                "is solved from model.params",
            )


@dataclass
class FusedRecurrenceConfig(ModelConfig):
    """Patterns 1 and 3: a hidden -> hidden recurrence in one of PyTorch's fused cells."""

    cell: Cell = Cell.rnn  # rnn (tanh) | gru | lstm
    layers: int = _range(1, low=1)  # stacked recurrences
    dropout: float = _range(0.0, low=0.0, high=0.9)  # between stacked layers and before the output layer
    # the LSTM's initial forget-gate bias (an LSTM's only: other cells have no forget gate); null:
    # PyTorch's initialisation, about 0. 1 by a measurement (experiments/forget_bias/README.md);
    # beyond ±20 the gate's sigmoid is 0 or 1 in float32 and never moves
    forget_bias: float | None = _range(1.0, low=-20.0, high=20.0)

    def check(self) -> None:
        super().check()
        if self.forget_bias != FusedRecurrenceConfig.forget_bias and self.cell != Cell.lstm:
            raise ConfigError(
                "model.forget_bias",
                self.forget_bias,
                f"left at {FusedRecurrenceConfig.forget_bias} with model.cell={self.cell.value}: "
                "only an LSTM has a forget gate",
            )


@dataclass
class RNNHiddenConfig(FusedRecurrenceConfig):
    name: ClassVar[str] = "rnn_hidden"
    pattern: ClassVar[str] = "1"
    outputs: ClassVar[tuple[str, ...]] = (STEP,)
    _target_: str = "rnnexp.models.recurrent.RNNHidden"


@dataclass
class RNNOutputConfig(ModelConfig):
    name: ClassVar[str] = "rnn_output"
    pattern: ClassVar[str] = "2"
    outputs: ClassVar[tuple[str, ...]] = (STEP,)
    _target_: str = "rnnexp.models.recurrent.RNNOutput"


@dataclass
class RNNFinalConfig(FusedRecurrenceConfig):
    name: ClassVar[str] = "rnn_final"
    pattern: ClassVar[str] = "3"
    outputs: ClassVar[tuple[str, ...]] = (SEQUENCE,)
    _target_: str = "rnnexp.models.recurrent.RNNFinal"


@dataclass
class MLPWindowConfig(ModelConfig):
    name: ClassVar[str] = "mlp_window"
    pattern: ClassVar[str] = "baseline"
    outputs: ClassVar[tuple[str, ...]] = (STEP, SEQUENCE)
    _target_: str = "rnnexp.models.baselines.MLPWindow"
    window: int = _range(8, low=1)  # the steps it sees, the last one included
    layers: int = _range(2, low=1)  # hidden layers
    dropout: float = _range(0.0, low=0.0, high=0.9)


@dataclass
class MLPBagConfig(ModelConfig):
    name: ClassVar[str] = "mlp_bag"
    pattern: ClassVar[str] = "baseline"
    outputs: ClassVar[tuple[str, ...]] = (STEP, SEQUENCE)
    _target_: str = "rnnexp.models.baselines.MLPBag"
    layers: int = _range(2, low=1)  # hidden layers
    dropout: float = _range(0.0, low=0.0, high=0.9)


MODELS: dict[str, type[ModelConfig]] = {
    m.name: m for m in (RNNHiddenConfig, RNNOutputConfig, RNNFinalConfig, MLPWindowConfig, MLPBagConfig)
}


def defaults(schema: type, **changes: Any) -> dict[str, Any]:
    """The keyword arguments of the class a model or task schema builds, at the schema's defaults,
    with `changes`: for building one outside a run (a test, a benchmark). A run builds it from its
    config. (`params` is a request to the sizing, not an argument.)"""
    kwargs = {f.name: f.default for f in fields(schema) if not f.name.startswith("_") and f.name != "params"}
    return {k: v.value if isinstance(v, Enum) else v for k, v in {**kwargs, **changes}.items()}


def model_defaults(name: str, **changes: Any) -> dict[str, Any]:
    """Model `name`'s keyword arguments at its schema's defaults, with `changes`."""
    return defaults(MODELS[name], **changes)


# --- task -------------------------------------------------------------------------------------


@dataclass
class TaskConfig:
    """Base of every task option. `output` is the task's output kind (one per step or one per
    sequence); `name` the option's name."""

    name: ClassVar[str]
    output: ClassVar[str]
    _target_: str = MISSING
    batch_size: int = _range(64, low=1)
    # validation and test batches: as large as memory allows, so a pass is a few forward calls.
    # Accuracies do not depend on it; a loss, summed in another order, moves in its last bits
    eval_batch_size: int = _range(1024, low=1)

    def check(self) -> None:
        """Checks between fields; ranges of single fields are in their metadata."""


@dataclass
class SyntheticTaskConfig(TaskConfig):
    """A generated task: how many sequences each split holds."""

    train_size: int = _range(4096, low=1)
    val_size: int = _range(512, low=1)
    test_size: int = _range(512, low=1)
    # draw a new training set each epoch, from the seed and the epoch; validation and test stay
    # fixed and apart from every epoch's (rnnexp/tasks/base.py). False: one training set throughout
    fresh: bool = False


@dataclass
class DataTaskConfig(TaskConfig):
    """A task on real data: validation and test are fractions of it, drawn by the seed (a
    dataset that comes with its own test split keeps it)."""

    val_fraction: float = _range(0.1, low=0.01, high=0.4)
    test_fraction: float = _range(0.1, low=0.01, high=0.4)


def _check_distance(distance: int, length: int, low: int) -> None:
    if distance >= length:
        raise ConfigError("task.distance", distance, f"{low} <= distance < task.length ({length})")


def _check_file(key: str, path: str, suffixes: tuple[str, ...] | None = None) -> None:
    if not os.path.isfile(path):
        raise ConfigError(key, path, "an existing file")
    if suffixes and not path.lower().endswith(suffixes):
        raise ConfigError(key, path, "a file ending in " + ", ".join(suffixes))


@dataclass
class DelayedRecallConfig(SyntheticTaskConfig):
    name: ClassVar[str] = "delayed_recall"
    output: ClassVar[str] = STEP
    _target_: str = "rnnexp.tasks.synthetic.DelayedRecall"
    length: int | None = _range(None, low=1)  # None: distance + 25, so 25 steps are scored at any distance
    distance: int = _range(15, low=0)
    symbols: int = _range(8, low=2)

    def check(self) -> None:
        if self.length is not None:
            _check_distance(self.distance, self.length, low=0)


@dataclass
class RunningParityConfig(SyntheticTaskConfig):
    name: ClassVar[str] = "running_parity"
    output: ClassVar[str] = STEP
    _target_: str = "rnnexp.tasks.synthetic.RunningParity"
    length: int = _range(20, low=1)


@dataclass
class AddingConfig(SyntheticTaskConfig):
    name: ClassVar[str] = "adding"
    output: ClassVar[str] = SEQUENCE
    _target_: str = "rnnexp.tasks.synthetic.Adding"
    length: int = _range(50, low=2)
    distance: int | None = _range(25, low=1)  # None: one mark in each half (Arjovsky et al. 2016)

    def check(self) -> None:
        if self.distance is not None:
            _check_distance(self.distance, self.length, low=1)


@dataclass
class CopyMemoryConfig(SyntheticTaskConfig):
    name: ClassVar[str] = "copy_memory"
    output: ClassVar[str] = STEP
    _target_: str = "rnnexp.tasks.synthetic.CopyMemory"
    distance: int = _range(20, low=1)  # Arjovsky et al.'s T: the sequence is T + 20 steps


@dataclass
class PronounReferenceConfig(SyntheticTaskConfig):
    name: ClassVar[str] = "pronoun_reference"
    _target_: str = "rnnexp.tasks.grammar.PronounReference"
    distance: int = _range(4, low=0)  # filler words between the bindings and the pronoun
    per_step: bool = False  # True: an output at every step, the label due at the pronoun

    @property
    def output(self) -> str:  # type: ignore[override]
        return STEP if self.per_step else SEQUENCE


@dataclass
class NegatedSentimentConfig(SyntheticTaskConfig):
    name: ClassVar[str] = "negated_sentiment"
    output: ClassVar[str] = SEQUENCE
    _target_: str = "rnnexp.tasks.grammar.NegatedSentiment"
    length: int = _range(16, low=2)
    distance: int = _range(4, low=1)  # words from the first of the pair (negation or sentiment) to the second

    def check(self) -> None:
        _check_distance(self.distance, self.length, low=1)


class DigitsRead(str, Enum):
    rows = "rows"  # 8 steps of 8 pixels
    pixels = "pixels"  # 64 steps of 1 pixel


@dataclass
class DigitsConfig(DataTaskConfig):
    name: ClassVar[str] = "digits"
    output: ClassVar[str] = SEQUENCE
    _target_: str = "rnnexp.tasks.digits.Digits"
    read: DigitsRead = DigitsRead.rows


@dataclass
class CharLMConfig(DataTaskConfig):
    name: ClassVar[str] = "char_lm"
    output: ClassVar[str] = STEP
    _target_: str = "rnnexp.tasks.text.CharLM"
    path: str = MISSING  # any UTF-8 text file
    length: int = _range(64, low=2)  # characters per window

    def check(self) -> None:
        _check_file("task.path", self.path)


class TokenizerKind(str, Enum):
    word = "word"  # a word-level vocabulary
    bpe = "bpe"  # byte-pair encoding subwords


TEXT_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


@dataclass
class TextConfig(DataTaskConfig):
    name: ClassVar[str] = "text"
    output: ClassVar[str] = SEQUENCE
    _target_: str = "rnnexp.tasks.text.TextClassification"
    dataset: str | None = None  # a Hugging Face hub name, e.g. imdb, sst2, ag_news
    path: str | None = None  # or a local file: .csv, .tsv, .json, .jsonl, .parquet
    text_column: str = "text"
    label_column: str = "label"
    tokenizer: TokenizerKind = TokenizerKind.word
    vocab_size: int = _range(20000, low=10)
    min_frequency: int = _range(2, low=1)
    max_length: int = _range(256, low=1)  # tokens kept from the start of each text
    cache_dir: str = ".cache/rnnexp"  # tokenised datasets, keyed by content and settings
    where: str | None = None  # COLUMN:VALUE: only the rows with that value, e.g. source:imdb

    def check(self) -> None:
        if (self.dataset is None) == (self.path is None):
            raise ConfigError(
                "task.dataset", self.dataset, "exactly one of task.dataset (a hub name) and task.path (a local file)"
            )
        if self.path is not None:
            _check_file("task.path", self.path, TEXT_SUFFIXES)
        if self.where is not None and not re.fullmatch(r"[^:]+:.*", self.where):
            raise ConfigError("task.where", self.where, "COLUMN:VALUE, e.g. source:imdb")


TASKS: dict[str, type[TaskConfig]] = {
    t.name: t
    for t in (
        DelayedRecallConfig,
        RunningParityConfig,
        CopyMemoryConfig,
        AddingConfig,
        PronounReferenceConfig,
        NegatedSentimentConfig,
        DigitsConfig,
        CharLMConfig,
        TextConfig,
    )
}


def task_defaults(task_class: type, **changes: Any) -> dict[str, Any]:
    """Task class `task_class`'s keyword arguments at its schema's defaults, with `changes`."""
    schema = schema_of("task", f"{task_class.__module__}.{task_class.__name__}")
    if schema is None:
        raise ValueError(f"{task_class.__name__} has no schema among rnnexp's tasks")
    return defaults(schema, **changes)


def schema_of(group: str, target: Any) -> type | None:
    """The schema of group "model" or "task" whose `_target_` is `target`; None for any other
    (a config read from a file names only rnnexp's own classes)."""
    schemas = MODELS if group == "model" else TASKS
    return next((schema for schema in schemas.values() if schema._target_ == target), None)


# --- training and tracking --------------------------------------------------------------------


@dataclass
class EarlyStoppingConfig:
    """Lightning's EarlyStopping on the quantity `trainer.select_on` names: training ends when it
    has not improved by more than `min_delta` (absolute) in `patience` validation epochs, a
    plateau; else at `trainer.max_epochs`, the budget."""

    patience: int | None = _range(None, low=1)  # None: no early stopping, train for max_epochs
    min_delta: float = _range(1e-4, low=0.0)


# the keys of `trainer` that are rnnexp's, not arguments of Lightning's Trainer
TRAINER_OWN_KEYS = ("select_on", "early_stopping")


@dataclass
class TrainerConfig:
    """Keyword arguments of Lightning's Trainer (the names are Lightning's), and how the run picks
    its checkpoint and when it stops (`TRAINER_OWN_KEYS`, rnnexp's)."""

    _target_: str = "pytorch_lightning.Trainer"
    max_epochs: int = _range(40, low=1)
    limit_train_batches: int | None = _range(None, low=1)  # None: every batch
    limit_val_batches: int | None = _range(None, low=1)
    limit_test_batches: int | None = _range(None, low=1)
    num_sanity_val_steps: int = _range(2, low=0)
    gradient_clip_val: float | None = _range(1.0, low=0.0)  # recurrent nets need it (Pascanu et al. 2013); None: off
    accelerator: str = "cpu"
    devices: int = _range(1, low=1)
    # "ddp_spawn": one process per device, started by the trainer; the run's process keeps
    # the MLflow run (rank 0 logs into it). Plain "ddp" would start each rank as a new command.
    strategy: str = "auto"
    deterministic: bool = True  # same seed, same numbers (on CPU)
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    log_every_n_steps: int = _range(50, low=1)
    precision: str = "32-true"  # Lightning's: 32-true | 64-true | bf16-mixed (CPU or GPU) | 16-mixed (GPU)
    accumulate_grad_batches: int = _range(1, low=1)  # an optimizer step every N batches
    select_on: Selection = Selection.metric
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def check(self) -> None:
        allowed = ("cpu", "gpu", "cuda", "mps", "auto")
        if self.accelerator not in allowed:
            raise ConfigError("trainer.accelerator", self.accelerator, "one of " + ", ".join(allowed))
        if self.accelerator in ("gpu", "cuda", "mps"):
            check_devices(self.accelerator, self.devices)
        strategies = ("auto", "ddp_spawn")
        if self.strategy not in strategies:
            raise ConfigError("trainer.strategy", self.strategy, "one of " + ", ".join(strategies))
        precisions = ("32-true", "64-true", "bf16-mixed") + (() if self.accelerator == "cpu" else ("16-mixed",))
        if self.precision not in precisions:
            raise ConfigError(
                "trainer.precision",
                self.precision,
                f"one of {', '.join(precisions)} with trainer.accelerator={self.accelerator}",
            )


def check_devices(accelerator: str, devices: int) -> None:
    """ConfigError, before any run is tracked, for a device this machine does not have (Lightning
    would raise in the middle of the run). torch is imported only for such a request."""
    import torch

    kind = "MPS device" if accelerator == "mps" else "CUDA GPU"
    found = int(torch.backends.mps.is_available()) if accelerator == "mps" else torch.cuda.device_count()
    if found == 0:
        raise ConfigError("trainer.accelerator", accelerator, f"cpu (or auto): torch sees no {kind} on this machine")
    if devices > found:
        raise ConfigError("trainer.devices", devices, f"at most {found}: the {kind}s torch sees on this machine")


@dataclass
class TrackingConfig:
    """Where runs are tracked. MLflow 3.13+ refuses the old `./mlruns` file store, so the store
    is always a database (SQLite by default) or a tracking server."""

    uri: str = DEFAULT_URI  # an SQLite file relative to where the command runs, or a server's URL
    experiment: str | None = None  # None: the task's name
    artifacts: str = "mlartifacts"  # where a new experiment keeps its artifacts (local store only)
    log_checkpoint: bool = True  # log the best checkpoint as an artifact
    # log the best model through mlflow.pytorch.log_model ("Logged models" in the UI), for
    # mlflow.pytorch.load_model (its cost a run: experiments/throughput/)
    log_model: bool = True
    step_metrics: bool = False  # also log the training loss every `trainer.log_every_n_steps` steps

    def __post_init__(self) -> None:
        """`uri` as `Store.parse` leaves it: its credentials split out, into `store`, for the
        command to hand over to MLflow (`Store.hand_over_credentials`)."""
        self.store = Store.parse(self.uri)
        self.uri = self.store.uri

    def check(self) -> None:
        self.store.check()


# a key whose value is a secret: a word of its name (between `_`, `-` or its ends), so that
# `hf_token` is one and `tokenizer` or `max_tokens` is not
SECRET_KEY = re.compile(
    r"(?:^|[_-])(?:token|passw(?:or)?d|secret|api_?key|credentials?|private_?key)(?:$|[_-])", re.IGNORECASE
)


@dataclass
class OptimConfig:
    optimizer: Optimizer = Optimizer.adam  # adam | adamw | sgd
    lr: float = _range(3e-3, low=1e-8, high=10.0)
    weight_decay: float = _range(0.0, low=0.0)
    # an MLflow experiment of learning-rate selection runs (stage 1, `make tune-lr`): the run takes
    # the lr chosen there on validation for its config (rnnexp/tuning.py), logged as optim.lr
    lr_from: str | None = None
    # config keys one chosen lr is shared over (e.g. [task.distance]): stage 1 ran at one value of
    # each, and a run at any value takes that choice
    lr_shared_over: list[str] = field(default_factory=list)
    # none | cosine (over trainer.max_epochs, to min_lr) | plateau (on the checkpoint's quantity)
    scheduler: Scheduler = Scheduler.none
    min_lr: float = _range(0.0, low=0.0)  # cosine: the lr it ends at; plateau: the lowest it cuts to
    lr_factor: float = _range(0.5, low=0.01, high=0.99)  # plateau: the lr is multiplied by this at each cut
    lr_patience: int = _range(5, low=0)  # plateau: epochs without improvement before a cut

    def check(self) -> None:
        if len(set(self.lr_shared_over)) != len(self.lr_shared_over):
            raise ConfigError("optim.lr_shared_over", list(self.lr_shared_over), "each key once")
        if self.scheduler != Scheduler.none and self.min_lr >= self.lr and self.lr_from is None:
            raise ConfigError(
                "optim.min_lr", self.min_lr, f"below optim.lr ({self.lr}) with optim.scheduler={self.scheduler.value}"
            )


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = _range(0, low=0, high=2**32 - 1)  # what every generator takes (numpy's at most 2**32 - 1)
    # torch's threads per run. One by default: alone, a second thread made an epoch 0.85-1.11x as
    # fast in the runs measured; beside one busy process, a 2-thread run was 6.6-45x slower
    # (experiments/throughput). Sweeps fill the cores with jobs instead (hydra/launcher=joblib).
    # None: one per core (shared out among a joblib sweep's jobs).
    threads: int | None = _range(1, low=1)
    # the id of a KILLED or FAILED run, continued from its last checkpoint (rnnexp/resume.py)
    resume: str | None = None
    # with -m: the parent run id of a stopped sweep, whose FINISHED jobs are skipped (rnnexp/sweep.py)
    resume_sweep: str | None = None

    def check(self) -> None:
        cores = os.cpu_count() or 1
        if self.threads is not None and self.threads > 4 * cores:  # torch crashes on 100000 (a segfault)
            raise ConfigError(
                "threads", self.threads, f"<= {4 * cores} (4 x this machine's {cores} cores), or null for one per core"
            )


def typed_overrides(overrides: Any) -> list[str]:
    """Hydra's `overrides.task` as typed on the command line: a `${oc.env:...}` in one is left as
    written (iterating the node would resolve it, and a secret would be logged)."""
    return [str(o) for o in OmegaConf.to_container(overrides, resolve=False)]  # type: ignore[union-attr]


def identity_overrides(overrides: list[str]) -> list[str]:
    """The command-line overrides that make a run what it is (not where it is tracked)."""
    pattern = re.compile(r"^[+~]*(" + "|".join(NOT_IDENTITY) + r")([./=]|$)")
    return [o for o in overrides if not pattern.match(o)]


def _check_fields(node: Any, prefix: str) -> None:
    for f in fields(node):
        value = getattr(node, f.name)
        if f.name == "_target_" and value != f.default:
            # what gets instantiated is the option's own class, whatever a command line or a
            # logged config (replayed by resume and reproduce-run) says: a config never runs code
            raise ConfigError(f"{prefix}{f.name}", value, f"{f.default} (the option's own class)")
        if value is None or isinstance(value, (bool, str, Enum)) or not f.metadata:
            continue
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if value != value or value in (float("inf"), float("-inf")):  # NaN passes every comparison
            raise ConfigError(f"{prefix}{f.name}", value, "a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "")
            raise ConfigError(f"{prefix}{f.name}", value, " and ".join(b for b in bounds if b))
    if hasattr(node, "check"):
        node.check()


def _check_keys(node: DictConfig, prefix: str) -> None:
    """A key that `+key=value` added to a typed node is misspelt like any unknown key."""
    schema = OmegaConf.get_type(node)
    if schema is None or not hasattr(schema, "__dataclass_fields__"):
        return
    known = [f.name for f in fields(schema) if not f.name.startswith("_")]
    for key in node.keys():
        if key != "hydra" and key not in known and not str(key).startswith("_"):
            value = OmegaConf.to_container(node, resolve=False)[key]  # unresolved: a secret stays a ${...}
            raise ConfigError(
                f"{prefix}{key}",
                MASK if SECRET_KEY.search(str(key)) else value,
                f"a key of the config; allowed keys{' of ' + prefix[:-1] if prefix else ''}: " + ", ".join(known),
            )
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _check_keys(child, f"{prefix}{key}.")


def check(cfg: DictConfig) -> TrainConfig:
    """Validate a composed config beyond what its types say; return it as dataclasses."""
    _check_keys(cfg, "")
    experiment = cfg.tracking._get_node("experiment")._value()  # as written
    if isinstance(experiment, str) and masked_uri(experiment) != experiment:
        raise ConfigError(
            "tracking.experiment",
            masked_uri(experiment),
            "a name with no URI credentials in it: an experiment's name is stored and shown in plain text",
        )
    if isinstance(experiment, str) and "oc.env" in experiment:
        raise ConfigError(
            "tracking.experiment",
            experiment,
            "a name written out, not read from the environment "
            "(which holds secrets): an experiment's name is stored and shown in plain text",
        )
    obj: TrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    _check_fields(obj, "")
    for group in ("model", "task", "trainer", "tracking", "optim"):
        _check_fields(getattr(obj, group), f"{group}.")
    _check_fields(obj.trainer.early_stopping, "trainer.early_stopping.")
    model, task = obj.model, obj.task
    if task.output not in model.outputs:
        fit = [name for name, m in MODELS.items() if task.output in m.outputs]
        what = "an output at every step" if task.output == STEP else "one output per sequence"
        raise MismatchError("model", model.name, f"task={task.name} needs {what}; models that fit: {', '.join(fit)}")
    return obj


def check_plain(tree: Any, where: str) -> None:
    """A config read from a file (a checkpoint's, resolved when it was saved) holds values, not
    interpolations: a `${...}` there could call a resolver. ConfigError naming the first."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if isinstance(value, (dict, list)):
            check_plain(value, f"{where}.{key}")
        elif isinstance(value, str) and "${" in value:
            raise ConfigError(
                f"{where}.{key}", value, "a plain value: a config read from a file holds no interpolation"
            )


def package_data(package: str, path: str) -> str:
    """`${package_data:PACKAGE,PATH}` in a config: a data file shipped inside an installed package.
    Found, never imported: a config read from a checkpoint or a store names no code to run, so
    PACKAGE is a top-level package (a dotted name would import its parent) and PATH stays in it."""
    from importlib.util import find_spec
    from pathlib import Path

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(package)):
        raise ValueError(f"package {package!r}: a top-level package name (no dots)")
    spec = find_spec(package)  # a top-level name is looked up on the path, not executed
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {package!r} is not an installed package")
    base = Path(next(iter(spec.submodule_search_locations))).resolve()
    target = (base / str(path)).resolve()
    if base not in target.parents:
        raise ValueError(f"path {path!r} leaves package {package!r}")
    return str(target)


def register() -> None:
    """Put the schemas in Hydra's ConfigStore, and the `package_data` resolver in OmegaConf (idempotent)."""
    OmegaConf.register_new_resolver("package_data", package_data, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, node in MODELS.items():
        cs.store(name=f"schema_model_{name}", node=node)  # not a group: `--help` lists groups to choose from
    for name, node in TASKS.items():
        cs.store(name=f"schema_task_{name}", node=node)
