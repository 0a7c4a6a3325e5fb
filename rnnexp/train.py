"""`rnnexp-train` (or `python -m rnnexp.train`): train one model on one task, tracked in MLflow.

Hydra composes `conf/train.yaml` with the command line's overrides; `-m` sweeps. torch,
Lightning and MLflow are imported only once the config has composed and passed its checks, so
`--help`, `--cfg job` and config errors answer fast. A config error is one line on stderr
naming the key, the bad value and what is allowed, exit status 2, and no run is created.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import signal
import sys
import time
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from rnnexp import config, safety
from rnnexp.store import RunRecord, Store, masked_uri
from rnnexp.sweep import end_with_the_sweep, parent_of_this_job

PROG = "rnnexp-train"
# The config tree sits at the project root beside the package (the package is installed editable).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

config.register()


def _masking_record_factory(factory):
    """Log records with the password of any URL masked: Hydra logs each job's overrides (to the
    console and train.log), a server URL among them."""

    def make(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if "://" in str(record.msg) or record.args:
            message = record.getMessage()
            if (masked := masked_uri(message)) != message:
                record.msg, record.args = masked, ()
        return record

    make.masks = True  # type: ignore[attr-defined]
    return make


if not getattr(logging.getLogRecordFactory(), "masks", False):  # a sweep's workers import this module too
    logging.setLogRecordFactory(_masking_record_factory(logging.getLogRecordFactory()))


class _MaskedStream:
    """stdout or stderr with the password of any URL masked: Hydra writes a failed job's
    overrides (`Error executing job with overrides: [...]`) straight to stderr, past logging."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(masked_uri(text) if "@" in text else text)
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _mask_console() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _MaskedStream):
            setattr(sys, name, _MaskedStream(stream))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _app(cfg: DictConfig) -> float | None:
    _mask_console()  # in a launcher's worker too
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    _mask_hydra_files(sweeping)
    if sweeping and (parent := parent_of_this_job()) is not None:
        end_with_the_sweep(parent)
    try:
        spec = config.check(cfg)
        _one_kind_of_resume(spec, sweeping)
        spec.tracking.store.hand_over_credentials()
        spec.tracking.store.check_reachable()  # now, not after an hour of training
        resumed = None
        if spec.resume is not None:  # continue one stopped run, with its own config
            from rnnexp import resume

            cfg, resumed = resume.prepare(spec)
            spec = config.check(cfg)
        _quiet_libraries(spec.tracking.step_metrics)
        if spec.resume_sweep is not None and (twin := _resumed_twin(cfg, spec)) is not None:
            print(f"{PROG}: skipped: this job already FINISHED in run {twin}", file=sys.stderr)
            return RunRecord.of(spec.tracking.store.client().get_run(twin)).best_val  # Optuna counts it as done
        built = build(cfg, spec)  # the data too: a split can be a config error
    except config.MismatchError as err:
        if not sweeping:
            _exit_with(err)
        # a sweep over models x tasks runs the pairs that fit
        print(f"{PROG}: skipped: {describe(err)}", file=sys.stderr)
        return None
    except (config.ConfigError, OmegaConfBaseException) as err:
        if sweeping:
            raise  # the sweep runs its other jobs, then names this one
        _exit_with(err)  # exiting here, not raising, keeps Hydra from adding its own report
    try:
        return train(built, resumed)
    except config.ConfigError as err:  # the store, checked as the run starts (before it is created)
        if sweeping:
            raise
        _exit_with(err)
    except StoreLost as err:
        if sweeping:
            raise  # the sweep runs its other jobs, then names this one
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(1)  # here, not raising, keeps Hydra from adding its own report


def _mask_hydra_files(sweeping: bool) -> None:
    """Hydra has saved the config and the command line in the run's `.hydra/` folder (and a
    sweep's in `multirun.yaml`) as typed: mask the password of any URL in them, as in MLflow."""
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir) / (hydra_cfg.output_subdir or ".hydra")
    files = [*folder.glob("*.yaml"), *([Path(hydra_cfg.sweep.dir) / "multirun.yaml"] if sweeping else [])]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if (masked := masked_uri(text, lines=True)) != text:
            spare = path.with_name(f".{path.name}.{os.getpid()}")
            spare.write_text(masked)
            os.replace(spare, path)  # whole or not at all: jobs of a sweep may do it side by side


def _one_kind_of_resume(spec: config.TrainConfig, sweeping: bool) -> None:
    """ConfigError for `resume_sweep=` outside a sweep: a run id and a sweep's parent id are two
    things. (`resume=` in a sweep is refused before any job, by rnnexp.sweep.SweepTracking.)"""
    if not sweeping and spec.resume_sweep is not None:
        raise config.ConfigError(
            "resume_sweep",
            spec.resume_sweep,
            "a value only with -m (a stopped sweep's parent run id); one run goes on with resume=RUN_ID",
        )


def _resumed_twin(cfg: DictConfig, spec: config.TrainConfig) -> str | None:
    """For a job of a resumed sweep, the run in which the same config already finished."""
    from rnnexp import tracking

    parent = parent_of_this_job()
    if parent is None or parent.run_id != spec.resume_sweep:
        raise config.ConfigError(
            "resume_sweep", spec.resume_sweep, f"the parent run id of a sweep in {masked_uri(spec.tracking.uri)}"
        )
    store = spec.tracking.store
    client = store.client()
    return store.finished_twin(client, client.get_run(parent.run_id), tracking.config_hash(cfg))


SMOKE = "smoke"  # trainer=smoke: a quick check of a config, recorded so that reports leave it out


@dataclass
class _Run:
    """A training run as it goes: where it is tracked and where it keeps its checkpoints."""

    logger: Any
    experiment: str
    out_dir: Path
    checkpoint_dir: Path

    @property
    def client(self):
        return self.logger.experiment

    @property
    def id(self) -> str:
        return self.logger.run_id


@dataclass
class _Outcome:
    """How training ended: the best value of `monitor`, the epochs trained, what stopped them."""

    best_val: float
    monitor: str
    epochs: int
    stopped_by: str


@dataclass(frozen=True)
class Built:
    """A run resolved and built (`build`): its config resolved once, read-only (`cfg`: what the run
    logs and Lightning instantiates) and as typed dataclasses with the same values (`spec`); the
    task with its data, the model, the Lightning module; and the learning-rate choice the rate
    came from (`optim.lr_from`), if any. Nothing after `build` changes the config."""

    cfg: DictConfig
    spec: config.TrainConfig
    task: Any
    model: Any
    module: Any
    lr_choice: Any = None  # rnnexp.tuning.Choice


def train(built: Built, resumed=None) -> float:
    """Fit, test with the best checkpoint, track; return the best value of the monitored
    validation quantity (`best_val`). `resumed` (rnnexp.resume.Resumed): go on with that run from
    its last checkpoint."""
    run = _open_run(built, resumed)
    try:
        if resumed:  # its config, record and dataset are logged already
            _reopen(run)
        else:
            _record_start(run, built)
        results, outcome = _fit_and_test(run, built, resumed)
    except BaseException as err:
        _close_after(err, run, built.spec)
        raise
    from rnnexp import tracking

    status = tracking.end_run(run.client, run.id)
    _print_summary(run, built, results, outcome, status)
    return outcome.best_val


def _open_run(built: Built, resumed) -> _Run:
    """The run's MLflow run (new, or the resumed one) behind Lightning's logger; a job of a sweep
    logs under the sweep's parent run."""
    from rnnexp import tracking
    from rnnexp.logger import make_logger

    spec = built.spec
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    checkpoint_dir = resumed.checkpoint_dir if resumed else (out_dir / "checkpoints").resolve()
    if resumed:
        logger = make_logger(spec, resumed.experiment, run_id=resumed.run_id, logged_through=resumed.logged_through)
        return _Run(logger, resumed.experiment, out_dir, checkpoint_dir)
    parent = parent_of_this_job()
    experiment = spec.tracking.experiment or (parent.experiment if parent else built.task.name)
    tracking.experiment_id(spec.tracking.store.client(), experiment, spec.tracking)  # once, here
    logger = make_logger(
        spec,
        experiment,
        run_name(built, hydra_cfg.overrides.task, parent.swept if parent else ()),
        tags=RunRecord(parent_run=parent.run_id).to_tags() if parent else None,
    )
    return _Run(logger, experiment, out_dir, checkpoint_dir)


def _reopen(run: _Run) -> None:
    from rnnexp import store, tracking

    tracking.reopen(run.client, run.id)
    store.write(run.client, run.id, RunRecord(checkpoint_dir=str(run.checkpoint_dir)))  # for the next resume


def _record_start(run: _Run, built: Built) -> None:
    """What the run is: its config as params, its record, its data."""
    from rnnexp import store, tracking

    cfg, spec, task = built.cfg, built.spec, built.task
    hydra_cfg = HydraConfig.get()
    quantity, mode = monitor(cfg, task)  # what best_val is the best of: read back by rnnexp.tuning
    chosen = {}
    if (choice := built.lr_choice) is not None:
        from rnnexp.tuning import RULE

        chosen = {
            "lr_choice": choice.describe(spec.optim.lr_from),
            "lr_from": spec.optim.lr_from,
            "lr_rule": RULE,
            "lr_grid": ",".join(f"{lr:g}" for lr in choice.grid),
            **({} if choice.informative is None else {"lr_informative": str(choice.informative).lower()}),
        }
        if (parent := parent_of_this_job()) is not None:  # the same on every job
            store.write(run.client, parent.run_id, RunRecord(lr_from=spec.optim.lr_from, lr_rule=RULE))
    record = tracking.run_record(
        spec,
        task,
        config_hash=tracking.config_hash(cfg),
        checkpoint_dir=str(run.checkpoint_dir),
        monitor=quantity,
        monitor_mode=mode,
        smoke=hydra_cfg.runtime.choices.get("trainer") == SMOKE,
        **chosen,
    )
    overrides = config.typed_overrides(hydra_cfg.overrides.task)
    tracking.log_config(run.client, run.id, cfg, overrides, record, tracking.solved(cfg.task, task))
    if task.data_source is not None:
        tracking.log_dataset(
            run.client,
            run.id,
            task.data_source,
            secret=bool({"task.path", "task.dataset"} & tracking.secret_keys(cfg)),
        )


def _fit_and_test(run: _Run, built: Built, resumed):
    """Train until early stopping or the budget, test the best checkpoint, and record both:
    the test metrics and what stopped training; returns them."""
    from rnnexp import store, tracking

    cfg, spec, task, model, module = built.cfg, built.spec, built.task, built.model, built.module
    trainer, checkpoint = make_trainer(cfg, task, run.logger, run.checkpoint_dir, run.out_dir)
    start = time.perf_counter()
    trainer.fit(module, datamodule=task, ckpt_path=resumed.checkpoint if resumed else None, weights_only=True)
    epochs_trained, stopped = how_training_ended(trainer, cfg, run.client, run.id)
    updates = trainer.global_step  # optimizer steps (after gradient accumulation), a resumed run's included
    store.write(run.client, run.id, RunRecord(stopped_by=stopped))
    if spec.trainer.strategy != "auto":  # test in this one process, so each example counts once
        trainer = lightning_trainer(
            cfg, strategy="auto", devices=1, logger=run.logger, callbacks=[checkpoint], default_root_dir=run.out_dir
        )
    trainer.test(module, datamodule=task, ckpt_path=checkpoint.best_model_path, verbose=False, weights_only=True)
    wall_time = time.perf_counter() - start
    results = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    population = (
        {} if task.chance_level_population is None else {"chance_level_population": task.chance_level_population}
    )
    tracking.log_metrics(
        run.client,
        run.id,
        {
            "chance_level": task.chance_level,
            **population,
            "n_params": sum(p.numel() for p in model.parameters()),
            "wall_time_s": wall_time,
            "epochs_trained": epochs_trained,
            "updates": updates,
            "n_test_scored": module.scored["test"],
        },
        step=updates,
    )
    if checkpoint.best_model_score is not None:
        best_val = float(checkpoint.best_model_score)
    else:  # trained in spawned processes (trainer=ddp): the score stayed there, its history is logged
        history = [m.value for m in run.client.get_metric_history(run.id, checkpoint.monitor)]
        best_val = max(history) if checkpoint.mode == "max" else min(history)
    outcome = _Outcome(best_val, checkpoint.monitor, epochs_trained, stopped)
    store.write(run.client, run.id, RunRecord(best_val=best_val))
    if spec.tracking.log_model:  # the module holds the best checkpoint's weights, which trainer.test loaded
        from rnnexp.logger import log_model

        example = task.splits["test"].tensors[0][:2]
        logged = log_model(spec.tracking.uri, run.id, model, example)
        store.write(run.client, run.id, RunRecord(logged_model=logged))
    return results, outcome


def _close_after(err: BaseException, run: _Run, spec: config.TrainConfig) -> None:
    """Close the run after `err`: FAILED, or KILLED on an interrupt (with the command that
    resumes it). A store that failed under the run is StoreLost, in one line."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from rnnexp import store, tracking

    lost = store.store_failure(err)
    try:  # after a store failure, one try to close the run: the client has spent its retries already
        with store.one_try() if lost is not None else contextlib.nullcontext():
            store.Store.check_file(run.logger.store_file)  # not into a deleted store, as if it were there
            status = tracking.end_run(run.client, run.id, err)
    except Exception as closing:  # the store is gone as well: nothing can close the run now
        reason = lost or store.store_failure(closing) or masked_uri(" ".join(str(closing).split()))[:200]
        raise StoreLost(spec.tracking.store, run.id, reason, closed=None) from err
    if lost is not None:
        raise StoreLost(spec.tracking.store, run.id, lost, closed=status) from err
    in_a_sweep = HydraConfig.initialized() and parent_of_this_job() is not None
    if status == "KILLED" and not in_a_sweep:  # what to do next (for a sweep's job, the sweep says it)
        print(
            f"{PROG}: run {run.id} KILLED; continue it with `{tracking.command(PROG)} resume={run.id}"
            f"{spec.tracking.store.option('tracking.uri=')}`",
            file=sys.stderr,
            flush=True,
        )
    if isinstance(err, SIGTERMException):  # a SystemExit with no code: it would exit 0
        raise SystemExit(128 + signal.SIGTERM) from err
    if status == "KILLED" and type(err) is SystemExit:  # a run or a sweep's job, as between jobs
        raise SystemExit(128 + signal.SIGINT) from err  # Lightning exits 1 on Ctrl-C; a shell's convention is 130


def _print_summary(run: _Run, built: Built, results, outcome, status: str) -> None:
    spec, task = built.spec, built.task
    kind = "feed-forward baseline" if spec.model.pattern == "baseline" else f"pattern {spec.model.pattern}"
    print(
        f"\n{spec.model.name} ({kind}) on {task.name}"
        f"{'' if task.distance is None else f' at distance {task.distance}'}, seed {spec.seed}:"
    )
    for key in sorted(results):
        print(f"  {key:<14} {results[key]:.4f}")
    print(f"  {'chance level':<14} {task.chance_level:.4f}   ({task.metric_name} of an input-blind predictor)")
    stopping = spec.trainer.early_stopping
    why = {
        "plateau": f"{outcome.monitor} not better by more than {stopping.min_delta:g} in {stopping.patience} epochs",
        "diverged": f"{outcome.monitor} is not finite",
        "budget": "trainer.max_epochs reached: the curve may still be rising",
    }[outcome.stopped_by]
    print(f"  {'epochs':<14} {outcome.epochs:<6}   (stopped by {outcome.stopped_by}: {why})")
    if (choice := built.lr_choice) is not None:
        print(f"  {'lr':<14} {choice.lr:<6g}   (chosen on validation in experiment {spec.optim.lr_from})")
    print(f"run {run.id} {status} in experiment '{run.experiment}' ({masked_uri(spec.tracking.uri)})")
    if spec.tracking.store.is_sqlite:
        from rnnexp.tracking import ui_link

        ui = "make ui" + spec.tracking.store.option("URI=")
        print(f"open it: `{ui}`, then {ui_link(run.logger.experiment_id, run.id)}")


# keys a run name gives in short, and keys it gives otherwise or not at all (where a run is
# tracked, how it started, what the progress bar shows)
_SHORT = {
    "task.distance": "d",
    "task.length": "T",
    "model.hidden_size": "h",
    "model.params": "p",
    "optim.lr": "lr",
    "seed": "s",
}
_UNNAMED = (
    "model",
    "task",
    "model.cell",
    "task.distance",
    "seed",
    "experiment",
    "resume",
    "resume_sweep",
    "optim.lr_from",
    "optim.lr_shared_over",
    "model.hidden_size",
    "hparams_search",
    "threads",
)
_UNNAMED_PREFIXES = (
    "tracking",
    "hydra",
    "trainer.enable_",
    "trainer.log_every",
    "trainer.accelerator",
    "trainer.devices",
)


def run_name(built: Built, overrides, swept: tuple[str, ...] = ()) -> str:
    """What the run is, at a glance in the MLflow UI: its model, cell, task, distance, hidden size
    (as solved from model.params), every other key its command line or sweep set, and its seed,
    e.g. `rnn_hidden-gru-delayed_recall-d16-h64-lr0.01-s0`. A sweep's job leads with the keys the
    sweep varies (`swept`), which the UI would otherwise cut off: `d16-s0-rnn_hidden-gru-…`."""
    spec, task = built.spec, built.task
    cell = getattr(spec.model, "cell", None)
    parts = {
        "model": spec.model.name,
        **({} if cell is None else {"model.cell": "tanh" if cell.value == "rnn" else cell.value}),
        "task": task.name,
        **({} if task.distance is None else {"task.distance": f"d{task.distance}"}),
        "model.hidden_size": f"h{spec.model.hidden_size}",
    }
    given: dict[str, str] = {}  # a key given twice counts once, at its last value, as Hydra takes it
    from rnnexp.tracking import masked_override

    for override in config.typed_overrides(overrides):  # a secret masked, as in the params
        key, _, value = masked_override(override).lstrip("+~").partition("=")
        if not (key in _UNNAMED or key.startswith(_UNNAMED_PREFIXES)):
            given.pop(key, None)
            given[key] = value.strip(chr(39) + chr(34))[:24]
    if spec.optim.lr_from is not None:  # the rate chosen on validation (optim.lr cannot be given beside it)
        given["optim.lr"] = f"{spec.optim.lr:g}"
    parts |= {key: f"{_SHORT.get(key, key.rsplit('.', 1)[-1])}{value}" for key, value in given.items()}
    parts["seed"] = f"s{spec.seed}"
    if "model.params" in swept:  # the size it asks for shows as the size solved
        swept = (*swept, "model.hidden_size")
    lead = [key for key in swept if key in parts]
    return "-".join([parts[key] for key in lead] + [p for key, p in parts.items() if key not in lead])[:250]


class StoreLost(RuntimeError):
    """The tracking store failed in the middle of a run (a server that stopped answering, a
    database deleted, read-only or full), after MLflow's client had retried (MLFLOW_HTTP_REQUEST_*,
    set in `main`). The checkpoints stay in the run's folder; `closed` is the status the run could
    be given (FAILED), or None where it is left RUNNING."""

    def __init__(self, store: Store, run_id: str, reason: str, closed: str | None):
        from rnnexp.tracking import command as tracking_command

        where = "tracking server" if store.is_server else "tracking store"
        left = f"run {run_id} is {closed} there" if closed else f"run {run_id} is left RUNNING there"
        super().__init__(
            f"the {where} {store.shown} failed mid-run ({reason}); {left}, its checkpoints kept: when the "
            f"store is back, `{tracking_command(PROG)} resume={run_id}{store.option('tracking.uri=')}` goes on "
            "from the last one"
        )


def make_trainer(cfg: DictConfig, task, logger, checkpoint_dir: Path, out_dir: Path, callbacks: list = ()):
    """Lightning's Trainer as `cfg.trainer` says, keeping the best checkpoint by the validation
    metric and the last one (to resume from) in `checkpoint_dir`."""
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor

    from rnnexp.logger import MetricsInCheckpoint
    from rnnexp.resume import BestAndLastCheckpoint

    if cfg.trainer.strategy == "ddp_spawn":
        import torch.multiprocessing

        # the data go to the processes as shared tensors; passed as descriptors, an empty one
        # fails to map ("unable to resize file"): pass them as shared-memory files
        torch.multiprocessing.set_sharing_strategy("file_system")
        # the processes start afresh: warning filters reach them only through the environment
        ignored = [f"ignore:{start}" for start in _ignored_warnings(cfg.tracking.step_metrics)]
        os.environ["PYTHONWARNINGS"] = ",".join(
            filter(None, [os.environ.get("PYTHONWARNINGS"), *ignored, "ignore::DeprecationWarning"])
        )
    quantity, mode = monitor(cfg, task)
    checkpoint = BestAndLastCheckpoint(
        dirpath=checkpoint_dir, monitor=quantity, save_top_k=1, mode=mode, save_last=True
    )
    callbacks = [MetricsInCheckpoint(), checkpoint, *callbacks]
    if logger and config.Scheduler(cfg.optim.scheduler) != config.Scheduler.none:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))  # each epoch's rate, as `lr`
    if (stopping := cfg.trainer.early_stopping).patience is not None:
        callbacks.append(
            EarlyStopping(monitor=quantity, mode=mode, patience=stopping.patience, min_delta=stopping.min_delta)
        )
    # a fresh training set each epoch: Lightning asks the task for its training loader every epoch
    fresh = {"reload_dataloaders_every_n_epochs": 1} if getattr(task, "fresh", False) else {}
    quiet = {"enable_model_summary": False} if _summary_unasked_in_a_sweep() else {}
    if cfg.trainer.get("enable_model_summary", True) and not quiet:
        from rnnexp.logger import ModelSummary

        callbacks.append(ModelSummary())  # Lightning's, less its FLOPs: 0 without an example input
    trainer = lightning_trainer(cfg, logger=logger, callbacks=callbacks, default_root_dir=out_dir, **fresh, **quiet)
    return trainer, checkpoint


def _summary_unasked_in_a_sweep() -> bool:
    """In a sweep, Lightning's model summary would be printed once per job: it is left out there
    unless the command line asks for it (trainer.enable_model_summary=true); each run's own lines
    and its params name its size."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    given = [o.lstrip("+") for o in HydraConfig.get().overrides.task]
    return not any(o.startswith("trainer.enable_model_summary=") for o in given)


def lightning_trainer(cfg: DictConfig, **kwargs):
    """Lightning's Trainer from `cfg.trainer`, less the keys that are rnnexp's own."""
    from hydra.utils import instantiate

    arguments = {k: v for k, v in cfg.trainer.items() if k not in config.TRAINER_OWN_KEYS}
    return instantiate(arguments, **kwargs)


def monitor(cfg: DictConfig, task) -> tuple[str, str]:
    """The validation quantity that picks the checkpoint tested (`trainer.select_on`), and "max"
    or "min" for its best. For a teacher-forced model (pattern 2), its teacher-forced score:
    running free, its validation accuracy swings from epoch to epoch (0.09 to 0.22 at distance 1
    while the teacher-forced score stays at 0.12), and picking the best swing would inflate the
    free-running test score reported for the checkpoint."""
    from hydra.utils import get_class

    teacher_forced = getattr(get_class(cfg.model._target_), "teacher_forced", False)
    on_loss = config.Selection(cfg.trainer.select_on) == config.Selection.loss
    quantity = "loss" if on_loss else task.metric_name
    return f"val/{quantity}{'_tf' if teacher_forced else ''}", "max" if task.higher_is_better and not on_loss else "min"


def how_training_ended(trainer, cfg: DictConfig, client, run_id: str) -> tuple[int, str]:
    """The epochs trained, and what stopped training: "plateau" when early stopping did, "diverged"
    when it stopped on a validation score that is not finite, else "budget" (the run used all of
    `trainer.max_epochs`; whether its curve was flat is not known)."""
    from pytorch_lightning.callbacks import EarlyStopping
    from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason

    if cfg.trainer.strategy == "ddp_spawn":  # trained in spawned processes: count the validation epochs logged
        epochs = len(client.get_metric_history(run_id, "val/loss"))
        early = cfg.trainer.early_stopping.patience is not None and epochs < cfg.trainer.max_epochs
        return epochs, "plateau" if early else "budget"
    stopping = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    reason = stopping[0].stopping_reason if stopping else None
    stopped = {EarlyStoppingReason.PATIENCE_EXHAUSTED: "plateau", EarlyStoppingReason.NON_FINITE_METRIC: "diverged"}
    return trainer.current_epoch, stopped.get(reason, "budget")


def build(cfg: DictConfig, spec: config.TrainConfig) -> Built:
    """The run's task with its data generated, its config resolved (`resolve`), and the model and
    Lightning module built from that, seeded from `seed`. `cfg` itself is not changed."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from rnnexp.models import sizing
    from rnnexp.module import SequenceModule

    _set_threads(spec.threads)
    if spec.trainer.deterministic and spec.trainer.accelerator in ("gpu", "cuda", "auto"):
        # cuBLAS is deterministic only with a fixed workspace, set before CUDA starts; without
        # it, deterministic algorithms raise at the first matmul (PyTorch's reproducibility notes)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    task = instantiate(cfg.task, seed=spec.seed)
    task.setup()
    cfg, spec, choice = resolve(cfg, spec, task)
    _check_fits_in_memory(cfg, spec, task)
    model = sizing.make_model(cfg.model, task.io)
    quantity, mode = monitor(cfg, task)
    schedule = {
        "scheduler": spec.optim.scheduler.value,
        "min_lr": spec.optim.min_lr,
        "lr_factor": spec.optim.lr_factor,
        "lr_patience": spec.optim.lr_patience,
        "epochs": spec.trainer.max_epochs,
        "monitor": quantity,
        "mode": mode,
    }
    from rnnexp.tracking import masked, secret_keys

    kept = {
        "model": OmegaConf.to_container(
            cfg.model, resolve=True, enum_to_str=True
        ),  # as sized: the shapes of the weights
        "task": OmegaConf.to_container(cfg.task, resolve=True, enum_to_str=True),
    }
    # kept in each checkpoint (rnnexp-eval reads it): a value read from the environment masked, as in the store
    kept = {**masked(kept, secret_keys(cfg)), "seed": spec.seed}
    module = SequenceModule(
        model,
        task,
        optimizer=spec.optim.optimizer.value,
        lr=spec.optim.lr,
        weight_decay=spec.optim.weight_decay,
        step_metrics=spec.tracking.step_metrics,
        schedule=schedule,
        config=kept,
    )
    return Built(cfg, spec, task, model, module, choice)


def resolve(cfg: DictConfig, spec: config.TrainConfig, task):
    """The config resolved once, before anything is built from it: the hidden size solved from
    `model.params` (logged as solved: the run's params say what was trained), then the learning
    rate chosen by `optim.lr_from` (after sizing: the selection runs logged their solved size
    too). Returns a read-only copy of `cfg` with both values, the spec with the same, and the
    rnnexp.tuning.Choice (None without `optim.lr_from`)."""
    from rnnexp.models import sizing

    resolved = copy.deepcopy(cfg)
    if spec.model.params is not None:
        resolved.model.hidden_size = sizing.solve_hidden_size(cfg.model, task.io, spec.model.params)
    choice = _choose_lr(resolved, spec, task.name)
    if choice is not None:
        resolved.optim.lr = choice.lr  # and so logged as optim.lr
    OmegaConf.set_readonly(resolved, True)
    spec = replace(
        spec,
        model=replace(spec.model, hidden_size=resolved.model.hidden_size),
        optim=replace(spec.optim, lr=resolved.optim.lr),
    )
    return resolved, spec, choice


def _choose_lr(cfg: DictConfig, spec: config.TrainConfig, task_name: str):
    """With `optim.lr_from`: the learning rate chosen on validation for this config (its hidden
    size solved), as a rnnexp.tuning.Choice; else None."""
    if spec.optim.lr_from is None:
        return None
    from rnnexp import tracking, tuning

    given = (
        [
            o.split("=", 1)[1]
            for o in config.typed_overrides(HydraConfig.get().overrides.task)
            if re.match(r"[+~]*optim\.lr=", o)
        ]
        if HydraConfig.initialized()
        else []
    )
    if given or spec.optim.lr != config.OptimConfig.lr:  # on the command line even at the default, or in a file
        raise config.ConfigError(
            "optim.lr",
            given[0] if given else spec.optim.lr,
            f"not given with optim.lr_from="
            f"{spec.optim.lr_from}: the learning rate is the one chosen in that experiment",
        )
    parent = parent_of_this_job() if HydraConfig.initialized() else None
    if spec.optim.lr_from == (spec.tracking.experiment or (parent.experiment if parent else task_name)):
        raise config.ConfigError(
            "optim.lr_from",
            spec.optim.lr_from,
            "another experiment than the one this run is "
            "tracked in (tracking.experiment): the selection's runs are its own",
        )
    params = tracking.params_of(cfg)
    for name in spec.optim.lr_shared_over:
        if name not in params or name in ("seed", *tuning.TUNED):
            raise config.ConfigError(
                "optim.lr_shared_over",
                name,
                "a key of the run's config other than the seed and optim.lr*, e.g. task.distance",
            )
    try:
        choice = tuning.chosen_lr(spec.tracking.store, spec.optim.lr_from, params, tuple(spec.optim.lr_shared_over))
    except tuning.SelectionError as err:
        raise config.ConfigError("optim.lr_from", spec.optim.lr_from, str(err)) from None
    return choice


def _check_fits_in_memory(cfg: DictConfig, spec: config.TrainConfig, task) -> None:
    """Refuse a model whose training state (weights, gradients and the optimizer's two moments,
    float32) would not fit in this machine's memory, before torch tries to allocate it: the
    model is built on the meta device, which allocates nothing and draws no random numbers."""
    from rnnexp.models.sizing import count

    n_params = count(cfg.model, task.io, spec.model.hidden_size)
    needed = n_params * 4 * 4
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if memory and needed > memory:
        sizes = {
            f.name: getattr(spec.model, f.name)
            for f in fields(spec.model)
            if isinstance(getattr(spec.model, f.name), int) and not isinstance(getattr(spec.model, f.name), bool)
        }
        key = max(sizes, key=lambda k: sizes[k])  # the size that is out of scale
        raise config.ConfigError(
            f"model.{key}",
            sizes[key],
            f"a model that fits in memory: {n_params:,} parameters "
            f"need {needed / 2**30:,.0f} GiB to train, this machine has {memory / 2**30:,.0f} GiB",
        )


def _set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this run: `threads`, or with None one per core, shared out
    among the jobs a launcher runs side by side (hydra/launcher=joblib), which would fight."""
    import torch

    if threads is None:
        cpus = os.cpu_count() or 1
        n_jobs = (
            OmegaConf.select(HydraConfig.get(), "launcher.n_jobs", default=None) if HydraConfig.initialized() else None
        )
        side_by_side = 1 if n_jobs is None else min(cpus, cpus + 1 + n_jobs if n_jobs < 0 else n_jobs)  # -1: every CPU
        threads = max(1, cpus // max(1, side_by_side))
    torch.set_num_threads(threads)
    # Gradients that vanish over a long sequence pass through denormal floats (below about 1e-38),
    # each of which costs a CPU many times a normal multiply: flushed to zero, long sequences train
    # faster (measured in experiments/throughput/denormal.md), and no gradient that size moves a
    # weight. No effect on a GPU.
    torch.set_flush_denormal(True)


# Warnings that say nothing a user can act on, by the start of their message. No commas:
# PYTHONWARNINGS, which carries them to the processes of trainer=ddp, splits at commas.
_IGNORED_WARNINGS = (
    "`isinstance(treespec",  # Lightning 2.6 calls an API that torch 2.13 deprecates
    "The dataloader",  # "... does not have many workers": in-memory tensors, workers only add start-up
    "Checkpoint directory",  # "... exists and is not empty": a resumed run writes on into its own, on purpose
    "The tensor attributes",  # torch.export of nn.RNN/GRU/LSTM (tracking.log_model): their own weights' cache
)
# "... is smaller than the logging interval": with per-epoch metrics only, the step interval does not matter
_STEP_INTERVAL_WARNING = "The number of training batches"


def _ignored_warnings(step_metrics: bool) -> list[str]:
    return [*_IGNORED_WARNINGS, *([] if step_metrics else [_STEP_INTERVAL_WARNING])]


# Lightning's INFO lines a run's own summary says better, or that say nothing on a CPU: each
# run of a sweep printed them, four lines a run
_SAID_ELSEWHERE = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "Restoring states from the checkpoint",
    "Loaded model weights from the checkpoint",
    "Trainer already configured with model summary callbacks",  # rnnexp's own summary (rnnexp.logger)
)


def _no_adverts(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "💡 Tip" not in message and not message.startswith(_SAID_ELSEWHERE)


def _quiet_libraries(step_metrics: bool = False) -> None:
    """Drop library adverts and warnings that say nothing about this run."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_no_adverts)  # once: a logger keeps one of each filter
    from rnnexp.tracking import quiet_store_logs

    quiet_store_logs()
    for start in _ignored_warnings(step_metrics):
        warnings.filterwarnings("ignore", message=re.escape(start))


def describe(err: BaseException) -> str:
    """One line for a config error: the key, the bad value and what is allowed."""
    if isinstance(err, config.ConfigError):
        return str(err)
    if isinstance(err, MissingConfigException) and err.options:
        group = (err.missing_cfg_file or "").rsplit("/", 1)[0]
        name = (err.missing_cfg_file or "").rsplit("/", 1)[-1]
        extra = (
            "; hydra/launcher=ray needs the ray extra: pip install -e '.[ray]'"
            if (group, name) == ("hydra/launcher", "ray")
            else ""
        )
        return f"{group}={name} is not an option; allowed: {', '.join(sorted(err.options))}{extra}"
    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    if isinstance(cause, MissingMandatoryValue) and cause.full_key:
        return f"{cause.full_key} is required: give {cause.full_key}=VALUE"
    if isinstance(cause, OmegaConfBaseException) and cause.full_key:
        message = str(cause.msg).splitlines()[0]
        object_type = getattr(cause, "object_type", None)
        if message.startswith("Key ") and object_type is not None and hasattr(object_type, "__dataclass_fields__"):
            keys = [f.name for f in fields(object_type) if not f.name.startswith("_")]
            message += f"; allowed keys: {', '.join(keys)}"
        return f"{cause.full_key}: {message}"
    if isinstance(err, OverrideParseException):  # Hydra adds a line with a link to its grammar
        return f"the override {err.override!r} does not parse: " + " ".join(err.message.split("\nSee ")[0].split())
    return " ".join(str(err).split())


def _exit_with(err: BaseException) -> None:
    print(f"{PROG}: error: {describe(err)}", file=sys.stderr)
    sys.exit(2)


# How long a run waits for a tracking server that stopped answering before it gives up (MLflow's
# own defaults wait about 4 minutes a request: 7 retries, backoff factor 2, 120 s timeout): 3
# retries after 0, 4 and 8 s (+ up to 1 s jitter each), each try given 8 s to answer; then one
# try of 3 s each to write what waits and close the run (store.one_try); what that comes to is
# measured in docs/reliability.md. Raise MLFLOW_HTTP_REQUEST_MAX_RETRIES to ride out longer restarts.
STORE_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "8",
}


def help_text(argv: list[str], cfg: DictConfig) -> str | None:
    """`--help`, as Hydra prints it from conf/train.yaml's `hydra.help`, for the config `cfg` that
    `argv` composes; None for any other command line, or a template that asks for Hydra's own
    groups or flags. Hydra's lists every config group, its own `hydra/*` ones too, composing each
    (about a second, for groups the template does not show); the app's groups are conf/'s folders."""
    import string

    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    if not args.help or args.config_dir is not None:  # every other command line: nothing more read
        return None
    template = cfg.hydra.help.template
    if "$HYDRA_CONFIG_GROUPS" in template or "$FLAGS_HELP" in template:
        return None
    root = Path(CONF_DIR)
    groups = {
        folder.relative_to(root).as_posix(): sorted(f.stem for f in folder.glob("*.yaml"))
        for folder in root.rglob("*")
        if folder.is_dir() and any(folder.glob("*.yaml")) and folder.relative_to(root).parts[0] != "hydra"
    }
    listed = "".join(f"{group}: {', '.join(options)}\n" for group, options in sorted(groups.items()))
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return string.Template(template).substitute(
        APP_CONFIG_GROUPS=listed, CONFIG=OmegaConf.to_yaml(job, resolve=args.resolve)
    )


def main() -> None:
    # Hydra would print its own multi-line report and exit 1; config errors are reported here
    # instead, in one line, and anything else raises with its full traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    _mask_console()
    # as rnnexp.tracking.quiet_store_logs does, without importing MLflow before it is needed
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for key, value in STORE_RETRIES.items():  # the user's own settings win
        os.environ.setdefault(key, value)
    try:
        # Hydra instantiates callbacks, launcher, sweeper and logging before _app runs: check first
        composed = safety.check_command_line(sys.argv[1:], CONF_DIR, "train")
        if composed is not None and (text := help_text(sys.argv[1:], composed)) is not None:
            print(text)
            return
        _app()
    except (
        config.ConfigError,
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        OmegaConfBaseException,
    ) as err:
        _exit_with(err)
    except StoreLost as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # between a sweep's jobs (in a job, Lightning stops it and its run ends KILLED)
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    main()
