"""`rnnexp-eval`: evaluate a trained run's best checkpoint, on its own task or on the task with
overrides that keep the model's shapes (another distance, length, test size, or seed for fresh
data), and log the result as an MLflow run beside it.

    rnnexp-eval --run <id> task.distance=32          # one run
    rnnexp-eval --experiment NAME task.length=80     # every training run of an experiment

The checkpoint holds the model's and the task's config (`SequenceModule.load_from_checkpoint`);
the overrides change the task's, never the model's. The evaluation run is named after the trained
run and its overrides, nested under it in the UI (`mlflow.parentRunId`) and tagged
`evaluated_run` (its id), `evaluated_with` (the overrides, sorted by key) and `evaluation=true`.
Its params are the trained run's with the task overrides applied, and beside each changed task
key its trained value (`trained.task.distance`), so evaluations of runs trained apart are never
pooled; `seed` stays the trained run's (the network's), and a `seed=` override, which draws fresh
data, is logged as `eval.seed`. Its metrics are `eval/<metric>`, `eval/loss` and the chance level
of the task it was evaluated on. On a synthetic task, test sequences the model saw in training
or validation are left out (`n_eval_seen_in_training` counts them: another seed or size draws
splits of its own). `rnnexp-report --evaluations` reports such runs;
a plain report leaves them out. Without overrides, an evaluation reproduces the run's `test/`
metrics exactly (on the CPU).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

PROG = "rnnexp-eval"
# what an evaluation may change besides task keys: fresh data, and where it runs
OTHER_KEYS = ("seed", "trainer.accelerator")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
# what an evaluation's record keeps of the trained run's: what the model is, how it was chosen, its data
KEPT = (
    "pattern",
    "model",
    "cell",
    "task",
    "metric",
    "better",
    "monitor",
    "monitor_mode",
    "stopped_by",
    "dataset",
    "dataset_digest",
    "lr_from",
    "smoke",
)


class EvalError(ValueError):
    """One line: what cannot be evaluated, and why."""


def parse_overrides(overrides: list[str], task_schema: type) -> dict[str, Any]:
    """`key=value` strings as {key: value}; only task keys (not `_target_`), `seed` and
    `trainer.accelerator`. Values are read by Hydra's override parser, as on the training command
    line (`010` is 10, `1:30` is text), and a whole number written as text becomes one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    task_keys = [f.name for f in fields(task_schema) if not f.name.startswith("_")]
    parsed: dict[str, Any] = {}
    parser = OverridesParser.create()
    for override in overrides:
        key, eq, text = override.partition("=")
        if not eq or not key:
            raise EvalError(f"{override!r} is not an override: give key=value, e.g. task.distance=32")
        try:
            (read,) = parser.parse_overrides([override])
            value = None if text == "" else read.value()
        except OverrideParseException as err:
            raise EvalError(f"{override!r} does not parse as an override: {str(err).splitlines()[0][:160]}") from None
        if read.is_sweep_override() or isinstance(value, (dict, list)):
            raise EvalError(f"{key}={text!r} is not allowed: a single value")
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
            value = int(value)  # one spelling of a number: evaluated_with finds the earlier evaluation
        if key.startswith("task."):
            if key[len("task.") :] not in task_keys:
                raise EvalError(
                    f"{key}={text!r} is not allowed: {key} is not a key of task {task_schema.name}; "
                    f"its keys: {', '.join(task_keys)}"
                )
        elif key == "seed":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise EvalError(f"seed={text!r} is not allowed: an integer >= 0 (fresh data for the evaluation)")
        elif key == "trainer.accelerator":
            if value not in ACCELERATORS:
                raise EvalError(f"trainer.accelerator={text!r} is not allowed: one of {', '.join(ACCELERATORS)}")
        else:
            raise EvalError(
                f"{key}={text!r} is not allowed at evaluation: the model is the trained one; give task.* "
                "keys that keep its shapes, seed or trainer.accelerator"
            )
        if key in parsed:
            raise EvalError(f"{key} is given twice ({key}={_text(parsed[key])} and {override}): give it once")
        parsed[key] = value
    return dict(sorted(parsed.items()))  # one spelling whatever the order: `evaluated_with` finds earlier ones


def _text(value: Any) -> str:
    """An override's value as the command line writes it: `080` is 80, `~` is null."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def describe(overrides: dict[str, Any]) -> str:
    """The `evaluated_with` tag: the overrides, sorted by key, or "none"."""
    return " ".join(f"{k}={_text(v)}" for k, v in overrides.items()) or "none"


def task_config(trained: dict, changes: dict[str, Any]):
    """The trained task's config with `changes` ({"task.X": v}), typed and range-checked as a
    training run's is; EvalError naming the key otherwise."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from rnnexp import config

    schema = _task_schema(trained)
    node = OmegaConf.structured(schema)
    try:
        node = OmegaConf.merge(
            node, trained, {k[len("task.") :]: v for k, v in changes.items() if k.startswith("task.")}
        )
        config._check_fields(OmegaConf.to_object(node), "task.")
    except config.ConfigError as err:
        raise EvalError(str(err)) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "task"
        raise EvalError(f"task.{key}: {str(err).splitlines()[0]}") from None
    return node


def _task_schema(trained: dict) -> type:
    from rnnexp.config import schema_of

    if (schema := schema_of("task", trained.get("_target_"))) is None:
        raise EvalError(f"the trained run's task._target_={trained.get('_target_')!r} is not one of rnnexp's tasks")
    return schema


def best_checkpoint(client, run, folder: Path) -> Path:
    """The run's best checkpoint: in its checkpoint folder (tag checkpoint_dir), else downloaded
    from its artifacts into `folder`. The best is the one that is not `last.ckpt`; among logged
    ones (a resumed run has its first attempt's too), the one of the best logged score."""
    from rnnexp.resume import LAST
    from rnnexp.store import RunRecord

    local = Path(RunRecord.of(run).checkpoint_dir or "/nonexistent")
    found = sorted(p for p in local.glob("*.ckpt") if p.name != LAST and not p.is_symlink()) if local.is_dir() else []
    if len(found) == 1:
        return found[0]
    run_id = run.info.run_id
    logged = []  # (score, the .ckpt artifact): Lightning logs each with metadata.yaml (score, mode)
    for entry in client.list_artifacts(run_id):
        if entry.is_dir and entry.path != Path(LAST).stem:
            items = [item.path for item in client.list_artifacts(run_id, entry.path)]
            checkpoints = [path for path in items if path.endswith(".ckpt")]
            if checkpoints:
                meta = (
                    _metadata(client, run_id, f"{entry.path}/metadata.yaml", folder)
                    if f"{entry.path}/metadata.yaml" in items
                    else {}
                )
                logged.append((meta, checkpoints[0]))
    if logged:
        # a resumed run keeps the best its first attempt logged: the best score wins, not the first found
        def rank(found: tuple[dict, str]) -> float:
            score, mode = found[0].get("score"), found[0].get("Checkpoint", {}).get("mode", "min")
            if not isinstance(score, (int, float)):
                return float("inf")
            return -score if mode == "max" else score

        best = min(logged, key=rank)[1]
        return Path(client.download_artifacts(run_id, best, str(folder)))
    raise EvalError(
        f"run {run_id} has no best checkpoint: none in {local} nor among its artifacts "
        "(tracking.log_checkpoint=false, or it stopped before its first epoch ended)"
    )


def _metadata(client, run_id: str, path: str, folder: Path) -> dict:
    """Lightning's metadata.yaml beside a logged checkpoint ({} if it does not read as a mapping)."""
    try:
        meta = yaml.safe_load(Path(client.download_artifacts(run_id, path, str(folder / "meta"))).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) and isinstance(meta.get("Checkpoint", {}), dict) else {}


def _checkpoint_config(path: Path, run_id: str) -> dict:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EvalError(f"run {run_id}'s checkpoint {path} does not load as weights ({type(err).__name__})") from None
    saved = checkpoint.get("hyper_parameters", {}).get("config")
    if not isinstance(saved, dict) or not {"model", "task"} <= saved.keys():
        raise EvalError(
            f"run {run_id}'s checkpoint holds no model and task config (not rnnexp-train's, or edited): train it again"
        )
    from rnnexp.config import ConfigError, check_plain

    try:
        check_plain({k: saved[k] for k in ("model", "task")}, "config")
    except ConfigError as err:
        raise EvalError(f"run {run_id}'s checkpoint: {err}") from None
    _check_model(saved.get("model"), run_id)
    state = checkpoint.get("state_dict") or {}
    saved = {
        **saved,
        "_weights": sum(v.numel() for k, v in state.items() if k.startswith("model.") and hasattr(v, "numel")),
    }
    return saved


def _check_model(model: Any, run_id: str) -> None:
    """The checkpoint's model config, typed and range-checked as a training run's is: a tampered
    one is one line, not a traceback or a model too large to build."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from rnnexp import config

    target = model.get("_target_") if isinstance(model, dict) else None
    if (schema := config.schema_of("model", target)) is None:
        raise EvalError(f"run {run_id}'s checkpoint names model._target_={target!r}, not one of rnnexp's models")
    # the sizes as built: `params`, a request the sizing met, has its answer in hidden_size already
    model = {k: v for k, v in model.items() if k != "params"}
    try:
        config._check_fields(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), model)), "model.")
    except config.ConfigError as err:
        raise EvalError(f"run {run_id}'s checkpoint: {err}") from None
    except OmegaConfBaseException as err:
        raise EvalError(
            f"run {run_id}'s checkpoint: model.{getattr(err, 'full_key', '')}: {str(err).splitlines()[0]}"
        ) from None


def _shape_changes(trained_io, new_io) -> list[str]:
    return [
        f"{f.name} {getattr(trained_io, f.name)} -> {getattr(new_io, f.name)}"
        for f in fields(trained_io)
        if getattr(trained_io, f.name) != getattr(new_io, f.name)
    ]


def _io(task) -> Any:
    """A task's inputs and outputs: a real-data task knows them once its data are read."""
    if getattr(task, "io", None) is None:
        task.setup()
    return task.io


def check(client, run, overrides: dict[str, Any], folder: Path) -> tuple[Path, dict, Any, Any, Any, int]:
    """Everything that can refuse an evaluation of `run`, before any is logged: its checkpoint
    (found, plain, typed, its model's size that of its weights), the overrides' values and
    ranges, and shapes the model keeps. (checkpoint, its config, the new task's config, the
    new task, the task it trained on, its seed)."""
    from hydra.utils import instantiate

    from rnnexp.models.sizing import count

    run_id = run.info.run_id
    path = best_checkpoint(client, run, folder)
    saved = _checkpoint_config(path, run_id)
    seed = int(overrides.get("seed", saved.get("seed", 0)))
    trained_task = instantiate(task_config(saved["task"], {}), seed=int(saved.get("seed", 0)))
    built = count(_model_node(saved["model"]), _io(trained_task), int(saved["model"]["hidden_size"]))
    if built != saved["_weights"]:  # counted on the meta device: nothing allocated
        raise EvalError(
            f"run {run_id}'s checkpoint: its model config makes {built:,} parameters, its weights "
            f"hold {saved['_weights']:,}: the config does not describe these weights"
        )
    new_cfg = task_config(saved["task"], overrides)
    task = instantiate(new_cfg, seed=seed)
    changed = _shape_changes(trained_task.io, _io(task))
    if changed:  # name the override(s) that change it
        culprits = [
            f"{k}={_text(v)}"
            for k, v in overrides.items()
            if k.startswith("task.")
            and _shape_changes(trained_task.io, _io(instantiate(task_config(saved["task"], {k: v}), seed=seed)))
        ]
        raise EvalError(
            f"{' '.join(culprits) or 'the overrides'} {'changes' if len(culprits) == 1 else 'change'} "
            f"the model's shapes ({', '.join(changed)}): "
            "at evaluation, a task override must keep what the model reads and writes"
        )
    return path, saved, new_cfg, task, trained_task, seed


def _drop_trained_on(task, trained, epochs: int) -> int:
    """Leave out of `task`'s test split the sequences the model saw in training or validation
    (another seed or size draws its own splits, which may hold them), in at most `epochs` epochs:
    how many were left out."""
    from torch.utils.data import TensorDataset

    from rnnexp.tasks.base import SyntheticTask, rows_not_in

    if not isinstance(task, SyntheticTask):
        return 0  # real data: the same file, split by the seed (a new seed may move examples between splits)
    tensors = task.splits["test"].tensors
    seen_x = trained.seen_inputs(epochs)
    if tensors[0].shape[1:] != seen_x[0].shape[1:]:
        return 0  # another length: no sequence can be one it saw
    keep = rows_not_in(tensors[0], seen_x)
    if not keep.any():
        raise EvalError(
            "every test sequence of the evaluation was in the trained run's training or validation "
            "data: give a longer task or a larger task.test_size"
        )
    task.splits["test"] = TensorDataset(*(t[keep] for t in tensors))
    return int((~keep).sum())


def _model_node(model: dict):
    from omegaconf import OmegaConf

    from rnnexp import config

    return OmegaConf.merge(
        OmegaConf.structured(config.schema_of("model", model["_target_"])),
        {k: v for k, v in model.items() if k != "params"},
    )


def evaluate(client, run, overrides: dict[str, Any], uri: str, verbose: bool = True) -> str:
    """Evaluate `run` with `overrides`, logged as a new run in its experiment; its id."""
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from rnnexp import store, tracking
    from rnnexp.module import SequenceModule
    from rnnexp.store import MASK, RunRecord

    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        path, saved, new_cfg, task, trained_task, seed = check(client, run, overrides, Path(tmp))
        pl.seed_everything(seed, workers=True, verbose=False)
        module = SequenceModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        task.setup()
        # every epoch of its budget: a fresh training set per epoch is drawn anew for each
        seen = _drop_trained_on(task, trained_task, int(run.data.params.get("trainer.max_epochs", 1)))
        accelerator = overrides.get("trainer.accelerator", "cpu")
        precision = run.data.params.get("trainer.precision", "32-true")
        try:  # before the run exists: a machine without the device is one line and no run
            limit = run.data.params.get("trainer.limit_test_batches", "None")  # the trained run's test, as it ran
            trainer = pl.Trainer(
                accelerator=accelerator,
                devices=1,
                precision=precision,
                logger=False,
                limit_test_batches=None if limit in ("None", "") else int(limit),
                enable_checkpointing=False,
                enable_progress_bar=verbose,
                enable_model_summary=False,
            )
        except Exception as err:
            raise EvalError(
                f"trainer.accelerator={accelerator} (trainer.precision={precision}) is not allowed here: "
                f"{' '.join(str(err).split())[:200]}"
            ) from None

        params = tracking.as_given(run.data.params, RunRecord.of(run))  # a solved length as given: hashed alike
        for key, value in OmegaConf.to_container(new_cfg, enum_to_str=True).items():
            trained_value = params.get(f"task.{key}")
            if trained_value == MASK and f"task.{key}" not in overrides:
                continue  # read from the environment when it trained: a secret, masked here too
            if trained_value is not None:  # every one, so a report tells evaluations of runs trained apart
                params[f"trained.task.{key}"] = trained_value
            params[f"task.{key}"] = str(value)
        solved = tracking.solved(new_cfg, task)  # logged as a training run logs them, hashed as given
        if "seed" in overrides:  # `seed` stays the network's: seeds of one trained variant pool
            params["eval.seed"] = str(seed)
        params["trainer.accelerator"] = str(accelerator)
        with_ = describe(overrides)
        params["evaluated_with"] = with_
        commit, dirty = tracking.git_state(Path(__file__).parent)
        trained_record = RunRecord.of(run)
        record = RunRecord(
            **{k: getattr(trained_record, k) for k in KEPT},
            **RunRecord.this_process(),
            cpu=tracking.this_cpu(),
            evaluation=True,
            evaluated_run=run_id,
            evaluated_with=with_,
            parent_run=run_id,
            seed=params["seed"],
            git_commit=commit,
            git_dirty="unknown" if dirty is None else str(dirty).lower(),
            distance="none" if task.distance is None else str(task.distance),
            length="none" if task.length is None else str(task.length),
            variant_hash=tracking.variant_hash({k: v for k, v in params.items() if k != "seed"}),
            solved=",".join(solved) or None,
        )
        params |= solved
        name = f"{trained_record.name or run_id} @ {'own task' if with_ == 'none' else with_}"
        # every check passed: only now a run exists, and it ends FINISHED or FAILED, never RUNNING
        created = client.create_run(run.info.experiment_id, run_name=name, tags=record.to_tags())
        new_id = created.info.run_id
        try:
            from mlflow.entities import Param

            client.log_batch(new_id, params=[Param(k, v[:6000]) for k, v in params.items()])  # chunked by the client
            trainer.test(module, datamodule=task, verbose=False)
            results = {
                k.replace("test/", "eval/", 1): float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("test/")
            }
            population = (
                {}
                if task.chance_level_population is None
                else {"chance_level_population": task.chance_level_population}
            )
            trained = {k: run.data.metrics[k] for k in ("epochs_trained",) if k in run.data.metrics}
            tracking.log_metrics(
                client,
                new_id,
                {
                    **results,
                    "chance_level": task.chance_level,
                    **population,
                    "n_eval_seen_in_training": seen,
                    "n_eval_scored": module.scored["test"],
                    **trained,
                    "n_params": sum(p.numel() for p in module.parameters()),
                },
            )
        except BaseException as err:
            tracking.end_run(client, new_id, err)
            raise
        tracking.end_run(client, new_id)
    if verbose:
        print(f"\n{name}: {trained_record.model} trained in run {run_id}, evaluated with {with_}:")
        for key in sorted(results):
            print(f"  {key:<14} {results[key]:.4f}")
        print(f"  {'chance level':<14} {task.chance_level:.4f}   ({task.metric_name} of an input-blind predictor)")
        print(
            f"run {new_id} FINISHED in experiment {run.info.experiment_id} ({store.masked_uri(uri)}), "
            f"under run {run_id}"
        )
    return new_id


def check_trained(run) -> type:
    """The task schema of `run`, a FINISHED training run; EvalError if it is not one."""
    from rnnexp.store import RunRecord

    kind = RunRecord.of(run).kind
    if run.info.status != "FINISHED" or kind in ("sweep", "evaluation") or "task._target_" not in run.data.params:
        what = (
            "a sweep's parent"
            if kind == "sweep"
            else "an evaluation"
            if kind == "evaluation"
            else f"status {run.info.status}"
            if run.info.status != "FINISHED"
            else "not made by rnnexp-train"
        )
        raise EvalError(f"--run={run.info.run_id}: a FINISHED training run; this one is {what}")
    return _task_schema({"_target_": run.data.params["task._target_"]})


def main(argv: list[str] | None = None) -> None:
    from rnnexp.store import uri_option

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate trained runs' best checkpoints, on their own task or with task overrides "
        "that keep the model's shapes (task.distance, task.length, task.test_size, seed for fresh data, "
        "trainer.accelerator), each logged as an MLflow run nested under the trained one.",
        epilog="Examples: rnnexp-eval --run 3f2a... task.distance=32 | rnnexp-eval --experiment "
        "length_generalisation task.length=80",
        parents=[uri_option()],
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="the id of a FINISHED training run")
    which.add_argument(
        "--experiment",
        help="every FINISHED training run of this experiment (those already "
        "evaluated with the same overrides are skipped)",
    )
    parser.add_argument("overrides", nargs="*", help="key=value: task.<key>, seed, trainer.accelerator")
    args = parser.parse_args(argv)

    from rnnexp import config, store
    from rnnexp.store import RunRecord
    from rnnexp.tracking import quiet_store_logs

    def fail(message: str) -> None:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)

    try:
        tracked = store.opened(args.uri)
    except config.ConfigError as err:
        fail(str(err))
    quiet_store_logs()
    from mlflow.exceptions import MlflowException

    from rnnexp.train import _quiet_libraries

    _quiet_libraries()
    client = tracked.client()
    try:
        if args.run is not None:
            try:
                runs = [client.get_run(args.run)]
            except MlflowException:
                fail(f"--run={args.run!r}: no such run in {tracked.shown}")
        else:
            if (experiment_id := tracked.experiment_named(client, args.experiment)) is None:
                raise EvalError(
                    f"--experiment={args.experiment!r} is not in the store; experiments: "
                    f"{tracked.experiment_names(client)}"
                )
            runs = tracked.training_runs(client, experiment_id)
        # every run checked before the first is evaluated: a bad one logs nothing
        parsed = [parse_overrides(args.overrides, check_trained(run)) for run in runs]
        if len(runs) > 1:
            for run, overrides in zip(runs, parsed, strict=True):
                with tempfile.TemporaryDirectory() as tmp:
                    check(client, run, overrides, Path(tmp))
        done = 0
        for run, overrides in zip(runs, parsed, strict=True):
            with_ = describe(overrides)
            if args.experiment is not None and (earlier := tracked.evaluation_of(client, run, with_)) is not None:
                print(f"run {run.info.run_id}: already evaluated with {with_} in run {earlier}")
                continue
            new = evaluate(client, run, overrides, tracked.uri, verbose=args.run is not None)
            if args.experiment is not None:
                record = RunRecord.of(run)
                score = client.get_run(new).data.metrics.get(f"eval/{record.metric}", float("nan"))
                print(f"{record.name or run.info.run_id} @ {with_}: eval/{record.metric} {score:.4f} (run {new})")
            done += 1
        if args.experiment is not None:
            print(
                f"{done} run(s) of experiment {args.experiment} evaluated with "
                f"{' '.join(args.overrides) or 'no overrides'}; {len(runs) - done} skipped (done before)"
            )
    except EvalError as err:
        fail(str(err))


if __name__ == "__main__":
    main(sys.argv[1:])
