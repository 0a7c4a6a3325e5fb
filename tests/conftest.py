"""Shared helpers: compose the project's real configs, the I/O signatures of tasks, and `run`,
which starts rnnexp's commands as processes of their own."""

from __future__ import annotations

import atexit
import io
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
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


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory) -> Path:
    from rnnexp.store import Store

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    Store.parse(f"sqlite:///{path}").client()  # MLflow makes the schema (its migrations take seconds)
    return path


@pytest.fixture(autouse=True)
def _store_made_once(request):
    """A test's `tmp_path/mlflow.db`, the store its runs are tracked in, starts as a copy of one
    empty store whose schema MLflow made once per worker, not once per test (about 2 s of
    migrations each). A test marked `new_store`, or `integration` (real services, left as they
    are), leaves it for its run to make."""
    marked = request.node.get_closest_marker
    if "tmp_path" not in request.fixturenames or marked("new_store") or marked("integration"):
        return
    shutil.copyfile(request.getfixturevalue("_empty_store"), request.getfixturevalue("tmp_path") / "mlflow.db")


@pytest.fixture
def compose_train():
    """compose_train("model=mlp_bag", ...) -> the composed `train` config, as the CLI builds it."""
    return composed


def composed(*overrides: str):
    """The `train` config composed with `overrides`, as the CLI composes it."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def make_task(task_class: type, **changes):
    """A task built outside a run: its schema's defaults (rnnexp/config.py), with `changes`."""
    return task_class(**config.task_defaults(task_class, **changes))


def token_io(output: str = STEP, vocab: int = 5, classes: int | None = 5) -> TaskIO:
    return TaskIO(vocab_size=vocab, n_features=1, n_classes=classes, output=output)


def feature_io(output: str = STEP, features: int = 3, classes: int | None = 4) -> TaskIO:
    return TaskIO(vocab_size=None, n_features=features, n_classes=classes, output=output)


BIN = Path(sys.executable).parent
TRAIN = str(BIN / "rnnexp-train")
# the console scripts (pyproject.toml's [project.scripts]) and the function each one calls
ENTRY_POINTS = {
    TRAIN: "rnnexp.train",
    str(BIN / "rnnexp-eval"): "rnnexp.evaluation",
    str(BIN / "rnnexp-report"): "rnnexp.report",
}
_STARTUP_WARNING_FILTERS = list(warnings.filters)  # as Python starts, before pytest adds its own


_STARTS = itertools.count(int(time.time() * 1000))


def log_run(client, experiment_id: str, cfg, metrics: dict, curves: dict | None = None, **record) -> str:
    """A FINISHED training run as rnnexp-train records it, written straight into the store: the
    composed `cfg` as params with its record (`tracking.log_config`, `tracking.run_record`, the
    fields `record` adds), each of `curves` a value per epoch, and `metrics` at the end."""
    from hydra.utils import instantiate
    from mlflow.entities import Metric

    from rnnexp import tracking

    spec = config.check(cfg)
    run_id = client.create_run(experiment_id, start_time=next(_STARTS)).info.run_id  # in the order made
    task = instantiate(cfg.task, seed=spec.seed)
    tracking.log_config(client, run_id, cfg, [], tracking.run_record(spec, task, **record))
    now = int(time.time() * 1000)
    per_epoch = [Metric(k, v, now, epoch) for k, values in (curves or {}).items() for epoch, v in enumerate(values)]
    client.log_batch(run_id, metrics=[*per_epoch, *(Metric(k, v, now, 0) for k, v in metrics.items())])
    client.set_terminated(run_id, "FINISHED")
    return run_id


def table_cells(markdown: str) -> list[list[str]]:
    """The cells of each row of the markdown tables in `markdown`, the header's included, as
    written, without the padding (a table's columns are padded to one width)."""
    rows = [line.strip() for line in markdown.splitlines() if line.lstrip().startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows if not set(row) <= set("|:- ")]


def run_command(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True, ...)`, but a console script of
    rnnexp (`rnnexp-train`, `rnnexp-eval`, `rnnexp-report`) runs in a process forked from this
    one: the same function the script calls, with its own exit status, stdout, stderr, working
    folder, environment and exit handlers, without seconds of imports (torch, Lightning, MLflow)
    paid again for each run. Anything else, or other keywords, goes to `subprocess.run`."""
    entry = ENTRY_POINTS.get(command[0])
    if (
        entry is None
        or not kwargs.pop("capture_output", False)
        or not kwargs.pop("text", False)
        or (set(kwargs) - {"cwd", "env", "timeout"})
    ):
        return (
            subprocess.run(command, **kwargs)
            if entry is None
            else subprocess.run(command, capture_output=True, text=True, **kwargs)
        )
    return _forked(command, entry, kwargs.get("cwd"), kwargs.get("env"), kwargs.get("timeout"))


def _forked(command: list[str], entry: str, cwd, env, timeout: float | None) -> subprocess.CompletedProcess:
    import importlib

    module = importlib.import_module(entry)  # imported here, once: the child finds it loaded
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                _as_a_new_process(command, cwd, env, out, err)
                try:
                    module.main()
                    code = 0
                except SystemExit as exit:
                    code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
                    if not isinstance(exit.code, (int, type(None))):
                        print(exit.code, file=sys.stderr)
                except BaseException:  # as the interpreter reports an uncaught exception
                    traceback.print_exc()
                atexit._run_exitfuncs()  # what the process registered (a sweep closes its parent run)
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass
                os._exit(code)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if deadline is not None and time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(command, timeout)
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    return subprocess.CompletedProcess(command, os.waitstatus_to_exitcode(status), stdout, stderr)


def _as_a_new_process(command: list[str], cwd, env, out, err) -> None:
    """What a fresh interpreter would have: the signals' default handlers, no exit handlers, no
    Hydra instance, Python's own warning filters (pytest's would swallow what a run prints), its
    own environment, folder, arguments and standard streams."""
    from hydra.core.global_hydra import GlobalHydra

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    atexit._clear()
    GlobalHydra.instance().clear()
    warnings.filters[:] = _STARTUP_WARNING_FILTERS
    warnings.showwarning = warnings._showwarning_orig  # type: ignore[attr-defined]
    warnings._showwarnmsg = warnings._showwarnmsg_impl  # type: ignore[attr-defined]
    warnings._filters_mutated()  # type: ignore[attr-defined]
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    sys.stdin = io.TextIOWrapper(io.FileIO(os.open(os.devnull, os.O_RDONLY), "r"))
    sys.argv = list(command)  # as a console script has it: argv[0] its path


__all__ = ["BIN", "CONF", "ROOT", "SEQUENCE", "STEP", "TRAIN", "feature_io", "make_task", "run_command", "token_io"]
