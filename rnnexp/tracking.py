"""Everything MLflow but Lightning's logger (`rnnexp.logger`): what a run records, and how it ends.

Every run records the whole resolved config as params (not truncated: Lightning's
`log_hyperparams` cuts values at 250 characters, so the module does not use it), tags to filter
and group runs in the UI (pattern, model, cell, task, distance, seed, git commit), the config
and the Hydra overrides as artifacts, and ends FINISHED, FAILED (with the error as a tag) or
KILLED, never left RUNNING.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from rnnexp.config import (
    MASK,
    NOT_IDENTITY,
    SECRET_KEY,
    TrackingConfig,
    TrainConfig,
    masked_uri,
    sqlite_path,
    store_lock,
)

if TYPE_CHECKING:  # torch and Lightning take seconds to import: a sweep's own process needs neither
    from rnnexp.tasks.base import DataSource, Task

_BATCH = 100  # most params MLflow takes in one log_batch call
_ERROR_TAG_CHARS = 5000


def quiet_store_logs() -> None:
    """MLflow's database set-up (alembic migrations) logs at INFO on first use, and it draws a
    progress bar for each small file it downloads (a checkpoint, a config): keep them quiet."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    logging.getLogger("alembic").setLevel(logging.WARNING)
    # it logs a traceback for each failed database call, then raises: the run reports it in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def artifact_location(tracking: TrackingConfig) -> str | None:
    """A new experiment's artifact folder: set for a local store; a server decides its own."""
    return Path(tracking.artifacts).resolve().as_uri() if tracking.uri.startswith("sqlite:///") else None


def open_client(uri: str) -> MlflowClient:
    """A client of the store at `uri`, whose schema is created first (under `store_lock`) if the
    store is new."""
    with store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # MLflow creates or checks the schema on first use
    return client


# The MLflow UI opens an experiment by its kind (the tag's values are in MLflow's UI code): model
# training, not its GenAI mode (an assistant panel, a training run's breadcrumb "Evaluations")
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# MLflow 3.17's UI takes the mode from its GenAI / Model training switch (kept in the browser,
# GenAI at first) and reads the tag only where the switch is off; a link sets the switch itself
UI_MODE = "workflowType=machine_learning"


def ui_link(experiment_id: str, run_id: str | None = None, port: int = 5000) -> str:
    """A link into `make ui` that opens the experiment (or run) as model training."""
    run = f"/runs/{run_id}" if run_id else ""
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}{run}?{UI_MODE}"


def experiment_id(client: MlflowClient, name: str, tracking: TrackingConfig) -> str:
    """The id of experiment `name`, created if missing (once, whoever else asks at the same time),
    and tagged as model training (`EXPERIMENT_KIND`) unless it says another kind already."""
    key, kind = EXPERIMENT_KIND
    with store_lock(tracking.uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage != "deleted":
            if key not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, key, kind)
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=artifact_location(tracking), tags={key: kind})


def reopen(client: MlflowClient, run_id: str) -> None:
    """A stopped run goes on in this process: RUNNING again, its host and pid this process's, its
    stop recorded as `resumed_after` and counted in `resumed`."""
    tags = client.get_run(run_id).data.tags
    client.update_run(run_id, status="RUNNING")
    for key, value in process_tags().items():
        client.set_tag(run_id, key, value)
    client.set_tag(run_id, "resumed", str(int(tags.get("resumed", "0")) + 1))
    if "error" in tags:
        client.set_tag(run_id, "resumed_after", tags["error"])
        client.delete_tag(run_id, "error")


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


def git_state(path: Path) -> tuple[str, bool | None]:
    """(commit, dirty) of the repository holding `path`; ("unknown", None) outside one."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def process_tags() -> dict[str, str]:
    """MLflow has no heartbeat: these let `make stale` tell a live run from a dead process's."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def run_tags(spec: TrainConfig, task: Task) -> dict[str, str]:
    commit, dirty = git_state(Path(__file__).parent)
    cell = getattr(spec.model, "cell", None)
    tags = {
        **process_tags(),
        "pattern": spec.model.pattern,
        "model": spec.model.name,
        "cell": cell.value if cell is not None else "none",
        "task": spec.task.name,
        "distance": "none" if task.distance is None else str(task.distance),
        "length": "none" if task.length is None else str(task.length),
        "metric": task.metric_name,  # the task's own metric, logged as test/<metric>
        "better": "higher" if task.higher_is_better else "lower",
        "seed": str(spec.seed),
        "git_commit": commit,
        "git_dirty": "unknown" if dirty is None else str(dirty).lower(),
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown by the UI on the run page
    return tags


def config_hash(cfg: DictConfig) -> str:
    """A run's identity: a hash of its resolved config, less where it is tracked and `resume`.
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


# Keys that cannot change a result: how a run is shown, where it is tracked, how it started.
NOT_VARIANT = (
    "seed",
    "resume",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)
_NOT_VARIANT_PREFIXES = ("tracking.", "hydra.")


def variant_hash(params: Mapping[str, str]) -> str:
    """What a run is, less its seed: a hash of its logged params (the resolved config, flattened)
    without the keys that cannot change a result. Runs with the same hash differ only in the seed,
    so a report may average them; it hashes the params of runs logged before this tag the same way."""
    import hashlib

    kept = {k: v for k, v in params.items() if k not in NOT_VARIANT and not k.startswith(_NOT_VARIANT_PREFIXES)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    return masked(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), secret_keys(cfg))  # type: ignore[arg-type]


def params_of(cfg: DictConfig) -> dict[str, str]:
    """The run's params as `log_config` logs them: the resolved config, flattened, secrets masked."""
    return flatten(_resolved(cfg))


def log_config(
    client: MlflowClient, run_id: str, cfg: DictConfig, overrides: list[str], tags: Mapping[str, str]
) -> None:
    """The resolved config as params and as `config.yaml`, the overrides as `overrides.yaml`;
    secrets masked in all three. Tagged `variant_hash` (see there) besides `tags`."""
    resolved = _resolved(cfg)
    flat = flatten(resolved)
    params = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(params), _BATCH):
        client.log_batch(run_id, params=params[i : i + _BATCH])
    for key, value in {**tags, "variant_hash": variant_hash(flat)}.items():
        client.set_tag(run_id, key, value)
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
    logged_overrides = [masked_override(o) for o in overrides]
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(logged_overrides)), "overrides.yaml")


def log_dataset(client: MlflowClient, run_id: str, source: DataSource, secret: bool = False) -> None:
    """Record the run's real data as an MLflow dataset input (name, source, digest, size), and as
    tags to filter on, so that runs on different data are never compared by mistake. `secret`:
    where the data are was read from the environment, so their name and source are masked (the
    digest still tells data apart)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    if secret:
        source = type(source)(MASK, MASK, source.digest, source.rows)

    kind = "hugging_face" if source.source.startswith("hf://") else "local" if "/" in source.source else "code"
    dataset = Dataset(
        name=source.name,
        digest=source.digest,
        source_type=kind,
        source=json.dumps({"uri": source.source}),
        profile=json.dumps({"num_rows": source.rows}),
    )
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])
    client.set_tag(run_id, "dataset", source.name)
    client.set_tag(run_id, "dataset_digest", source.digest)


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def end_run(client: MlflowClient, run_id: str, error: BaseException | None = None) -> str:
    """Set the run's final status: FINISHED, KILLED on an interrupt, else FAILED with the error."""
    if error is None:
        status = "FINISHED"
    elif isinstance(error, (KeyboardInterrupt, SystemExit)):  # Lightning exits on Ctrl-C
        status = "KILLED"
        client.set_tag(run_id, "error", "interrupted")
    else:
        status = "FAILED"
        message = masked_uri(f"{type(error).__name__}: {error}")  # a database's error names its URI
        client.set_tag(run_id, "error", message[:_ERROR_TAG_CHARS])
    client.set_terminated(run_id, status)
    return status


class StoreGone(OSError):
    """The SQLite file a run writes to was deleted or replaced under it. SQLite would go on
    writing into the file it has open, gone from the folder, and every metric after would be
    lost without a word."""


def store_file(uri: str) -> tuple[str, tuple[int, int]] | None:
    """An SQLite store's path and identity (device, inode); None for a server or database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = sqlite_path(uri)
    try:
        found = os.stat(path)
    except FileNotFoundError:  # not created yet: nothing to watch
        return None
    return path, (found.st_dev, found.st_ino)


def check_store_file(known: tuple[str, tuple[int, int]] | None) -> None:
    """StoreGone if the SQLite file of `store_file` is no longer the one the run opened."""
    if known is None:
        return
    path, identity = known
    try:
        found = os.stat(path)
    except FileNotFoundError:
        raise StoreGone(f"{path} was deleted") from None
    if (found.st_dev, found.st_ino) != identity:
        raise StoreGone(f"{path} was replaced by another file")


# what MLflow's database store raises when its database cannot serve a call (down, locked, full, read-only)
_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"


def store_failure(error: BaseException) -> str | None:
    """Why the store failed, in a few words, if `error` (or what caused it) is the store failing:
    a server or database that does not answer, a database file deleted, read-only or full.
    None for anything else."""
    import sqlite3

    import requests
    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = " ".join(str(cause).split())
        if isinstance(cause, StoreGone):
            return text
        if isinstance(cause, (requests.ConnectionError, requests.Timeout, sqlite3.OperationalError)):
            return _reason(text)
        if isinstance(cause, MlflowException) and (
            text.startswith("API request to") or cause.error_code == _UNAVAILABLE
        ):
            return _reason(text)
        if type(cause).__module__.startswith(("sqlalchemy", "psycopg")) and "OperationalError" in type(cause).__name__:
            return _reason(text)
        cause = cause.__cause__ or cause.__context__
    return None


@contextmanager
def one_try() -> Iterator[None]:
    """MLflow's HTTP client tries once, given 3 s, not with its retries: for what a run does after
    its store has failed (the client has waited out its retries already), so that it ends in
    seconds, and still closes its run if the store is back."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    before = {key: os.environ.get(key) for key in keys}
    os.environ.update(keys)
    try:
        yield
    finally:  # a sweep's next job in this process retries as usual
        for key, value in before.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def _reason(text: str) -> str:
    """The telling part of a store error: `Connection refused`, `attempt to write a readonly
    database`, `database or disk is full`."""
    found = re.search(
        r"\[Errno -?\d+\] ([^\"')]+)|\(sqlite3\.OperationalError\) ([^\[(]+)|"
        r"(too many \d+ error responses)|(Read timed out)|connection failed: ([^\n]+?)(?: Is the|$)",
        text,
    )
    reason = next((g for g in found.groups() if g), None) if found else None
    return masked_uri((reason or text).strip())[:200]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def mark_stale(client: MlflowClient) -> list[str]:
    """Mark KILLED every RUNNING run started on this host whose process no longer exists (it died
    without closing its run: SIGKILL, power loss). Runs from other hosts are left alone: this
    host cannot see their processes. Returns the ids marked."""
    host, marked = socket.gethostname(), []
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return marked
    for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=50000):
        tags = run.data.tags
        if tags.get("host") != host or not tags.get("pid", "").isdigit() or process_alive(int(tags["pid"])):
            continue
        client.set_tag(run.info.run_id, "error", f"process {tags['pid']} on {host} ended without closing the run")
        client.set_terminated(run.info.run_id, "KILLED")
        marked.append(run.info.run_id)
    return marked


def main(argv: list[str] | None = None) -> None:
    """`make stale` (`python -m rnnexp.tracking --stale`)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="rnnexp-stale", description="Mark KILLED the RUNNING runs of this host whose process no longer exists."
    )
    parser.add_argument("--stale", action="store_true", required=True, help="find and mark stale runs")
    parser.add_argument(
        "--uri", default="sqlite:///mlflow.db", help="the tracking store (default: sqlite:///mlflow.db)"
    )
    args = parser.parse_args(argv)
    quiet_store_logs()
    marked = mark_stale(open_client(args.uri))
    print(f"{len(marked)} stale run(s) marked KILLED" + (": " + ", ".join(marked) if marked else ""))


if __name__ == "__main__":
    main()
