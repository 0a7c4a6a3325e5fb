"""Everything MLflow but Lightning's logger (`rnnexp.logger`): what a run records, and how it ends.

Every run records the whole resolved config as params (not truncated: Lightning's
`log_hyperparams` cuts values at 250 characters, so the module does not use it), tags to filter
and group runs in the UI (pattern, model, cell, task, distance, seed, git commit), the config
and the Hydra overrides as artifacts, and ends FINISHED, FAILED (with the error as a tag) or
KILLED, never left RUNNING.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from rnnexp.config import SECRET_KEY, TrackingConfig, TrainConfig
from rnnexp.store import MASK, NOT_IDENTITY, RunRecord, is_variant_key, masked_uri, write

if TYPE_CHECKING:  # torch and Lightning take seconds to import: a sweep's own process needs neither
    from rnnexp.tasks.base import DataSource, Task

_ERROR_TAG_CHARS = 5000


def quiet_store_logs() -> None:
    """MLflow's database set-up (alembic migrations) logs at INFO on first use, and it draws a
    progress bar for each small file it downloads (a checkpoint, a config): keep them quiet."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    logging.getLogger("alembic").setLevel(logging.WARNING)
    # it logs a traceback for each failed database call, then raises: the run reports it in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


# The MLflow UI opens an experiment by its kind (the tag's values are in MLflow's UI code): model
# training, not its GenAI mode (an assistant panel, a training run's breadcrumb "Evaluations")
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# MLflow 3.17's UI takes the mode from its GenAI / Model training switch (kept in the browser,
# GenAI at first) and reads the tag only where the switch is off; a link sets the switch itself
UI_MODE = "workflowType=machine_learning"


def command(name: str) -> str:
    """How a console hint names one of rnnexp's commands (`rnnexp-train`, `rnnexp-report`): the
    name where PATH finds the one beside the command running, else its path (`.venv/bin/NAME`
    from the project's folder), which works without activating the virtual environment."""
    import shutil

    argv0 = Path(sys.argv[0])
    beside = (argv0.parent if argv0.name.startswith("rnnexp-") else Path(sys.executable).parent) / name
    found = shutil.which(name)
    try:
        if found is not None and Path(found).samefile(beside):
            return name
    except OSError:
        pass
    if not beside.exists():
        return name
    beside = beside.absolute()
    home = beside.parent.parent.parent  # the folder holding the virtual environment: the project's
    return str(beside.relative_to(home)) if home == Path.cwd() else str(beside)


def ui_link(
    experiment_id: str, run_id: str | None = None, port: int = 5000, view: str | None = None, server: str | None = None
) -> str:
    """A link into `make ui` (or, given its URI, a tracking server's own UI, its credentials left
    out) that opens the experiment (or run) as model training; with `view`, the experiment's runs
    table as that shared view (`sweep_view`) shows it."""
    from urllib.parse import urlsplit

    base = f"http://127.0.0.1:{port}"
    if server:
        parts = urlsplit(server)
        base = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"
    run = f"/runs/{run_id}" if run_id else ""
    if view:  # the runs tab itself: the experiment's own page goes there without the view
        return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={view}&{UI_MODE}"
    return f"{base}/#/experiments/{experiment_id}{run}?{UI_MODE}"


# The MLflow UI's "share view": an experiment tag holding the runs table's state as JSON, opened
# by a link's `viewStateShareKey` (its field names are the UI's own, ExperimentPageUIState)
SHARED_VIEW_TAG = "mlflow.sharedViewState."
# the metrics the project's tasks score by (each logged as test/<metric>, beside test/loss)
SCORES = ("acc", "bpc", "mse", "xent")
# beside each run's score: what scoring by chance gives, and how its training ended
VIEW_COLUMNS = ("metrics.`chance_level`", "metrics.`epochs_trained`", "tags.`stopped_by`")


def sweep_view(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    key_columns: list[str],
    groups: list[dict[str, str]],
    scores: list[str] | tuple[str, ...] = SCORES,
) -> None:
    """A shared view of the runs table that answers "which variant scored what" for one sweep:
    its runs, in the order they started, grouped by `groups` (each group's average above its
    runs), with the columns of the keys it sweeps (`key_columns`), then its test `scores` (a
    metric no run logs shows no column), then `VIEW_COLUMNS`, in that order (the UI's default
    columns hold no result; it would sort metrics by name). Shared under the parent run's id:
    `ui_link(..., view=parent_run_id)` opens it."""
    columns = [*key_columns, *(f"metrics.`test/{score}`" for score in scores), *VIEW_COLUMNS]
    state: dict[str, Any] = {
        "searchFilter": f"tags.mlflow.parentRunId = '{parent_run_id}'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "selectedColumns": columns,
        "columnOrder": columns,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": groups},
    }
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + parent_run_id, json.dumps(state))


def experiment_id(client: MlflowClient, name: str, tracking: TrackingConfig) -> str:
    """The id of experiment `name`, created if missing, and tagged as model training
    (`EXPERIMENT_KIND`) unless it says another kind already."""
    return tracking.store.experiment_id(client, name, tracking.artifacts, dict([EXPERIMENT_KIND]))


def cpus(before: str | None, now: str) -> str:
    """The `cpu` of a run resumed on `now`: each CPU it ran on, in order (`A; then B`), as a run
    whose epochs ran on two CPUs is no one CPU's run."""
    if before is not None and before.split("; then ")[-1] == now:
        return before
    return f"{before or 'unknown'}; then {now}"  # unknown: a run from before rnnexp logged its CPU


def reopen(client: MlflowClient, run_id: str) -> None:
    """A stopped run goes on in this process: RUNNING again, its host and pid this process's, its
    CPU added to `cpu` where it differs, its stop recorded as `resumed_after` and counted in `resumed`."""
    from rnnexp.store import forget

    before = RunRecord.of(client.get_run(run_id))
    client.update_run(run_id, status="RUNNING")
    write(
        client,
        run_id,
        RunRecord(
            **RunRecord.this_process(),
            cpu=cpus(before.cpu, this_cpu()),
            resumed=before.resumed + 1,
            resumed_after=before.error,
        ),
    )
    if before.error is not None:
        forget(client, run_id, "error")


def secret_keys(cfg: DictConfig) -> set[str]:
    """The dotted keys whose value is a secret: named like one (token, password, secret, api_key,
    ...), or read from the environment (`${oc.env:NAME}`), where credentials are kept."""

    def walk(node: Any, prefix: str) -> set[str]:
        found: set[str] = set()
        items = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            dotted = f"{prefix}{key}"
            if isinstance(value, (Mapping, list)):
                found |= walk(value, dotted + ".")
            elif SECRET_KEY.search(str(key)) or (isinstance(value, str) and "oc.env:" in value):
                found.add(dotted)
        return found

    return walk(OmegaConf.to_container(cfg, resolve=False), "")


def masked(tree: Mapping[str, Any], secrets: set[str], prefix: str = "") -> dict[str, Any]:
    """A copy of a resolved config tree with its secrets replaced by `***` (but a switch, such as
    `tracking.log_model` read from RNNEXP_LOG_MODEL: true or false tells no secret)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out[key] = masked(value, secrets, dotted + ".")
        elif dotted in secrets and not isinstance(value, bool):  # a switch is one bit, never a credential
            out[key] = MASK
        else:
            out[key] = masked_uri(value) if isinstance(value, str) else value
    return out


def masked_override(override: str) -> str:
    """A command-line override `key=value` as it may be logged. An interpolation such as
    `${oc.env:NAME}` is kept: it names the variable, not its value, and composes again."""
    key, sep, _ = override.partition("=")
    if sep and SECRET_KEY.search(key.lstrip("+~").rsplit(".", 1)[-1]):
        return f"{key}={MASK}"
    return masked_uri(override)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"cell": "gru"}} -> {"model.cell": "gru"}: the config as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


# what makes the code a run runs, from the repository's top: a change here, or a file here that
# git does not know yet (a model just added), makes a run's commit not name its code alone.
# Elsewhere (a report folder, notes, data) nothing makes a run dirty.
CODE = ("rnnexp", "hydra_plugins", "conf", "pyproject.toml", "constraints.txt")


def git_state(path: Path) -> tuple[str, bool | None]:
    """(commit, dirty) of the repository holding `path`, dirty if `CODE` has changes or files git
    does not ignore and does not track; ("unknown", None) outside a repository."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--", *[f":(top){p}" for p in CODE]))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


# the code a result depends on: a run made before its last change may not be what this code gives
RESULT_CODE = (
    "rnnexp/models",
    "rnnexp/tasks",
    "rnnexp/module.py",
    "rnnexp/train.py",
    "rnnexp/config.py",  # the defaults
    "conf/model",
    "conf/task",
    "conf/trainer",
    "conf/train.yaml",
)


def older_than_the_code(commits: set[str]) -> tuple[frozenset[str], frozenset[str], str | None]:
    """Of `commits`: those older than the last change to `RESULT_CODE` in this checkout (that
    change's ancestors, itself excluded), and those this history does not hold ("unknown" too);
    and that change's short hash. Outside a repository nothing can be checked: (∅, ∅, None)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)

    try:
        last = git("log", "-1", "--format=%H", "--", *RESULT_CODE)
        if last.returncode or not (change := last.stdout.strip()):
            return frozenset(), frozenset(), None
        older, unknown = set(), set()
        for commit in commits:
            if not isinstance(commit, str) or git("cat-file", "-e", f"{commit}^{{commit}}").returncode:
                unknown.add(commit)
            elif commit != change and git("merge-base", "--is-ancestor", commit, change).returncode == 0:
                older.add(commit)
    except (OSError, subprocess.SubprocessError):
        return frozenset(), frozenset(), None
    return frozenset(older), frozenset(unknown), change[:7]


def this_cpu() -> str:
    """torch's CPU kernels, named by the instruction set they use (AVX2, AVX512, ...), the
    processor (`cpu_model`), and the settings that cap MKL's and oneDNN's instruction sets where
    given, e.g. `AVX512, GenuineIntel family 6 model 167`. Float rounding can differ between
    them: a run re-made on another CPU moves in the last bits within a few epochs, and over
    hundreds of epochs its seed's trajectory diverges (docs/experiments.md, "Reproducing a run")."""
    import torch

    capped = [f"{name}={os.environ[name]}" for name in _ISA_CAPS if os.environ.get(name)]
    return f"{torch.backends.cpu.get_cpu_capability()}, {cpu_model()}" + (f" ({', '.join(capped)})" if capped else "")


# the environment variables that cap the instruction set of MKL's and oneDNN's kernels (torch's
# own ATen kernels show theirs in torch.backends.cpu.get_cpu_capability)
_ISA_CAPS = ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def cpu_model() -> str:
    """The CPU's make, family and model (/proc/cpuinfo; elsewhere what `platform` says): a
    virtual machine's model name is often generic ("Intel(R) Xeon(R) Processor"), these are not."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        return platform.processor() or "unknown"
    info = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}
    if "vendor_id" in info:  # x86
        return f"{info['vendor_id']} family {info.get('cpu family', '?')} model {info.get('model', '?')}"
    if "CPU implementer" in info:  # Arm: the designer's and the core's codes
        return f"implementer {info['CPU implementer']} part {info.get('CPU part', '?')}"
    return platform.processor() or "unknown"


def run_record(spec: TrainConfig, task: Task, **more: Any) -> RunRecord:
    """What a training run is, recorded when it starts (`more`: the fields only `train` knows)."""
    commit, dirty = git_state(Path(__file__).parent)
    cell = getattr(spec.model, "cell", None)
    return RunRecord(
        **RunRecord.this_process(),
        cpu=this_cpu(),
        pattern=spec.model.pattern,
        model=spec.model.name,
        cell=cell.value if cell is not None else "none",
        task=spec.task.name,
        distance="none" if task.distance is None else str(task.distance),
        length="none" if task.length is None else str(task.length),
        metric=task.metric_name,
        better="higher" if task.higher_is_better else "lower",
        seed=str(spec.seed),
        git_commit=commit,
        git_dirty="unknown" if dirty is None else str(dirty).lower(),
        **more,
    )


def config_hash(cfg: DictConfig) -> str:
    """A run's identity: a hash of its resolved config, less where it is tracked and what it resumes.
    A resumed sweep skips the jobs whose identity already FINISHED."""
    import hashlib

    tree = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    identity = {k: v for k, v in tree.items() if k not in NOT_IDENTITY}  # type: ignore[union-attr]
    model = identity.get("model")
    if isinstance(model, dict) and model.get("params") is not None:
        # solved from model.params when the run starts (rnnexp/models/sizing.py): the request is the
        # identity, the same before the solving (a resumed sweep looking for its jobs) and after
        identity["model"] = {k: v for k, v in model.items() if k != "hidden_size"}
    optim = identity.get("optim")
    if isinstance(optim, dict) and optim.get("lr_from") is not None:  # the same: chosen when the run starts
        identity["optim"] = {k: v for k, v in optim.items() if k != "lr"}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def variant_hash(params: Mapping[str, str]) -> str:
    """What a run is, less its seed: a hash of its logged params (the resolved config, flattened)
    without the keys that cannot change a result. Runs with the same hash differ only in the seed,
    so a report may average them."""
    import hashlib

    kept = {k: v for k, v in params.items() if is_variant_key(k)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    return masked(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), secret_keys(cfg))  # type: ignore[arg-type]


def params_of(cfg: DictConfig) -> dict[str, str]:
    """The run's params as `log_config` logs them: the resolved config, flattened, secrets masked."""
    return flatten(_resolved(cfg))


SOLVABLE = ("length", "distance")  # a task's keys that may be given as None and solved by the task


def solved(task_cfg: DictConfig, task: Any) -> dict[str, str]:
    """The task's keys given as None that the task solved from the others (`task.length`: the
    distance + 25 steps), at their solved values: the params show what the run ran."""
    return {
        f"task.{key}": str(getattr(task, key))
        for key in SOLVABLE
        if key in task_cfg and task_cfg[key] is None and getattr(task, key, None) is not None
    }


def as_given(params: Mapping[str, str], record: RunRecord) -> dict[str, str]:
    """A run's params with the keys it solved (`RunRecord.solved`) back at None, as given: what a
    run that has not yet solved them (a stage-2 run choosing its rate) compares with."""
    return {**params, **{key: "None" for key in (record.solved or "").split(",") if key}}


def log_config(
    client: MlflowClient,
    run_id: str,
    cfg: DictConfig,
    overrides: list[str],
    record: RunRecord,
    solved: Mapping[str, str] | None = None,
) -> None:
    """The resolved config as params, the task's `solved` keys at their solved values; the config
    itself as `config.yaml` (what a resume or a reproduction composes again), the overrides as
    `overrides.yaml`; secrets masked in all three. `record` is written with its `variant_hash`
    (see there) and the keys solved."""
    resolved = _resolved(cfg)
    given = flatten(resolved)
    flat = {**given, **(solved or {})}
    client.log_batch(run_id, params=[Param(k, v) for k, v in flat.items()])  # chunked by the client
    # hashed as given: a solved value follows from the others, and runs made before it was logged pool with these
    record = dataclasses.replace(record, variant_hash=variant_hash(given), solved=",".join(solved or ()) or None)
    write(client, run_id, record)
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
    logged_overrides = [masked_override(o) for o in overrides]
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(logged_overrides)), "overrides.yaml")


def log_dataset(client: MlflowClient, run_id: str, source: DataSource, secret: bool = False) -> None:
    """Record the run's real data as an MLflow dataset input (name, source, digest, size), and as
    tags to filter on, so that runs on different data are never compared by mistake. `secret`:
    where the data are was read from the environment, so their name and source are masked (the
    digest still tells data apart)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import CodeDatasetSource, HuggingFaceDatasetSource, LocalArtifactDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag

    where = MASK if secret else source.source  # the kind of source still shows, not where it is
    if source.source.startswith("hf://datasets/"):
        origin = HuggingFaceDatasetSource(path=where.removeprefix("hf://datasets/"))
    elif "/" in source.source:
        origin = LocalArtifactDatasetSource(where)
    else:  # a package's own data (sklearn's digits), named by the function that loads it
        origin = CodeDatasetSource(tags={"mlflow.source.name": where})
    if secret:
        source = type(source)(MASK, MASK, source.digest, source.rows)
    described = MetaDataset(origin, name=source.name, digest=source.digest)._to_mlflow_entity()
    dataset = Dataset(  # with its size, which a MetaDataset does not hold
        described.name,
        described.digest,
        described.source_type,
        described.source,
        profile=json.dumps({"num_rows": source.rows}),
    )
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])
    write(client, run_id, RunRecord(dataset=source.name, dataset_digest=source.digest))


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def end_run(client: MlflowClient, run_id: str, error: BaseException | None = None) -> str:
    """Set the run's final status: FINISHED, KILLED on an interrupt, else FAILED with the error."""
    if error is None:
        status = "FINISHED"
    elif isinstance(error, (KeyboardInterrupt, SystemExit)):  # Lightning exits on Ctrl-C
        status = "KILLED"
        write(client, run_id, RunRecord(error="interrupted"))
    else:
        status = "FAILED"
        message = masked_uri(f"{type(error).__name__}: {error}")  # a database's error names its URI
        write(client, run_id, RunRecord(error=message[:_ERROR_TAG_CHARS]))
    client.set_terminated(run_id, status)
    return status


def main(argv: list[str] | None = None) -> None:
    """`make stale` (`python -m rnnexp.tracking --stale`)."""
    import argparse

    from rnnexp.config import ConfigError
    from rnnexp.store import opened, uri_option

    parser = argparse.ArgumentParser(
        prog="rnnexp-stale",
        description="Mark KILLED the RUNNING runs of this host whose process no longer exists.",
        parents=[uri_option()],
    )
    parser.add_argument("--stale", action="store_true", required=True, help="find and mark stale runs")
    args = parser.parse_args(argv)
    quiet_store_logs()
    try:
        store = opened(args.uri)
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    marked = store.mark_stale(store.client())
    print(f"{len(marked)} stale run(s) marked KILLED" + (": " + ", ".join(marked) if marked else ""))


if __name__ == "__main__":
    main()
