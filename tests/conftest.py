"""Shared helpers: compose the project's real configs, the I/O signatures of tasks, and `run`,
which starts rnnexp's commands as processes of their own."""

from __future__ import annotations

import atexit
import csv
import io
import itertools
import json
import logging
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from rnnexp import config
from rnnexp.tasks.base import SEQUENCE, STEP, TaskIO
from rnnexp.tasks.grammar import NegatedSentiment

# One torch thread in each test process, as in each job of a sweep (pytest-xdist fills the cores
# with workers). It also keeps run_command's forks safe: a child forked after the parent ran
# OpenMP's thread pool waits for those threads, which it does not have, forever.
torch.set_num_threads(1)

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
def _root_logging_restored():
    """The root logger as it was before each test. A test that runs rnnexp in this process
    (Hydra's job logging) leaves a handler on it that writes to the test's captured stream, which
    pytest closes after the test: a library logging later in the same worker (scipy's `shgo`, at
    INFO) would print a logging error into another test's stderr."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


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
# modules run as `python -m MODULE` that are forked too (a test of `python -m` itself starts one:
# rnnexp.train is not here)
FORKED_MODULES = ("rnnexp.evaluation", "rnnexp.report", "rnnexp.reproduce", "rnnexp.tracking")
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
    tracking.log_config(
        client, run_id, cfg, [], tracking.run_record(spec, task, **record), tracking.solved(cfg.task, task)
    )
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
    paid again for each run; so does `python -m MODULE` for a module of FORKED_MODULES,
    `python -c CODE` (a run with a fault injected) and `python SCRIPT.py` (a benchmark). Anything
    else, or other keywords, goes to `subprocess.run`."""
    entry = _forkable(command)
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
    process = _fork(command, *entry, kwargs.get("cwd"), kwargs.get("env"))
    try:
        stdout, stderr = process.communicate(timeout=kwargs.get("timeout"))
    finally:
        process.kill()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def start_command(command: list[str], cwd=None, env=None) -> subprocess.Popen | Forked:
    """`subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True, cwd=cwd, env=env)`, for a
    run a test interrupts while it works: a command run_command forks is forked here too, and
    answers as much of Popen as the tests use."""
    entry = _forkable(command)
    if entry is None:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _fork(command, *entry, cwd, env)


def _forkable(command: list[str]) -> tuple[list[str], str] | None:
    """(sys.argv as the command would see it, what to run) where run_command forks `command`."""
    if command[0] in ENTRY_POINTS:
        return list(command), ENTRY_POINTS[command[0]]
    if command[:2] == [sys.executable, "-m"] and len(command) > 2 and command[2] in FORKED_MODULES:
        import importlib.util

        return [importlib.util.find_spec(command[2]).origin, *command[3:]], command[2]  # as `python -m` sets sys.argv
    if command[:2] == [sys.executable, "-c"] and len(command) > 2:
        return ["-c", *command[3:]], "-c"  # as `python -c` sets sys.argv
    if len(command) > 1 and command[0] == sys.executable and command[1].endswith(".py"):
        return command[1:], "script"  # a script of experiments/: as `python SCRIPT` sets sys.argv
    return None


class Forked:
    """A command running in a child forked from this process: the part of `subprocess.Popen` the
    tests use (pid, poll, wait, send_signal, kill, communicate, returncode), its output kept in
    temporary files."""

    def __init__(self, command: list[str], pid: int, out, err):
        self.args, self.pid, self.returncode = command, pid, None
        self._out, self._err, self._output = out, err, None

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap it, as Popen's kill and wait; nothing once it has ended."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        if self._output is None:
            self._output = tuple(self._read(f) for f in (self._out, self._err))
        return self._output

    @staticmethod
    def _read(f) -> str:
        f.seek(0)
        text = f.read().decode()
        f.close()
        return text


def _fork(command: list[str], argv: list[str], entry: str, cwd, env) -> Forked:
    import importlib

    if entry == "-c":
        program = compile(command[2], "<string>", "exec")

        def main() -> None:
            exec(program, {"__name__": "__main__"})

    elif entry == "script":

        def main() -> None:
            script = os.path.abspath(argv[0])  # after the child's chdir, as `python SCRIPT` finds it
            sys.path.insert(0, os.path.dirname(script))
            runpy.run_path(script, run_name="__main__")

    else:
        main = importlib.import_module(entry).main  # imported here, once: the child finds it loaded
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest, whatever happens in it
        try:
            _run_as_a_new_process(main, argv, cwd, env, out, err)
        finally:
            os._exit(1)  # only if the child could not end itself
    return Forked(command, pid, out, err)


def _run_as_a_new_process(main, argv: list[str], cwd, env, out, err) -> None:
    """`main()` as the interpreter runs a program, ending the process as it does: the exit
    status of sys.exit (its low 8 bits), 1 and the traceback for an uncaught exception, death by
    SIGINT for an uncaught Ctrl-C; the program's threads waited for, then its exit handlers."""
    code, interrupted = 1, False
    try:
        _as_a_new_process(argv, cwd, env, out, err)
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
            if not isinstance(exit.code, (int, type(None))):
                print(exit.code, file=sys.stderr)
        except BaseException as error:  # as the interpreter reports an uncaught exception
            frames = error.__traceback__
            while frames is not None and frames.tb_frame.f_code.co_filename in (__file__, runpy.__file__):
                frames = frames.tb_next  # from the command's own code on, without this harness
            traceback.print_exception(type(error), error, frames)
            interrupted = isinstance(error, KeyboardInterrupt)
        threading._shutdown()  # type: ignore[attr-defined]  # the threads it started, as at the interpreter's exit
        atexit._run_exitfuncs()  # what the process registered (a sweep closes its parent run)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code & 0xFF if -(2**63) <= code < 2**63 else 255)  # C's long, then exit()'s 8 bits


def _as_a_new_process(argv: list[str], cwd, env, out, err) -> None:
    """What a fresh interpreter would have: the signals' default handlers, no exit handlers, no
    Hydra instance, Python's own warning filters (pytest's would swallow what a run prints), its
    own environment, folder, arguments and standard streams."""
    from hydra.core.global_hydra import GlobalHydra

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logging.root.handlers.clear()  # pytest's capture: a warning with no handler of its own goes to stderr
    logging.root.setLevel(logging.WARNING)
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
    sys.argv = argv  # as a console script has it: argv[0] its path


__all__ = [
    "BIN",
    "CONF",
    "ROOT",
    "SEQUENCE",
    "STEP",
    "TRAIN",
    "feature_io",
    "make_task",
    "run_command",
    "start_command",
    "token_io",
]


# ---------------------------------------------------------------- shared by several test modules

# a run that crashes as its second epoch starts, once it has a checkpoint, unless told not to
CRASH_AT_EPOCH_1 = """
import os
import sys
import rnnexp.module
def crash(self):
    if self.current_epoch == 1:
        raise RuntimeError("injected crash at epoch 1")
rnnexp.module.SequenceModule.on_train_epoch_start = crash
from rnnexp.train import main
sys.argv = ["rnnexp-train", *sys.argv[1:]]
main()
"""


def resume_run(tmp_path: Path, run_id: str, *overrides: str) -> subprocess.CompletedProcess:
    """`rnnexp-train resume=RUN_ID` on the store in `tmp_path`, in its own folder."""
    store = f"sqlite:///{tmp_path}/mlflow.db"
    return run_command(
        [TRAIN, f"resume={run_id}", f"tracking.uri={store}", f"hydra.run.dir={tmp_path}/resumed", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line a refused `rnnexp-train` printed, having checked that it is one, with exit 2."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnexp-train: error: "), proc.stderr
    return lines[0]


def write_reviews(path: Path, n: int = 1200, seed: int = 0) -> list[tuple[str, str]]:
    """Negated-sentiment reviews as plain text, cut to varying lengths after the pair of words
    that decides them, with string labels."""
    task = make_task(NegatedSentiment, length=12, distance=3, train_size=1, val_size=1, test_size=1, batch_size=1)
    x, y = task.generate(n, torch.Generator().manual_seed(seed))
    rows = []
    for i, (ids, label) in enumerate(zip(x, y, strict=True)):
        words = task.lexicon.decode(ids).split()
        last = max(j for j, w in enumerate(words) if w == "not" or w in NEGATED_OR_SENTIMENT)
        words = words[: last + 1 + i % 3]
        rows.append((" ".join(words).capitalize() + ".", ("negative", "positive")[label]))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)
    return rows


NEGATED_OR_SENTIMENT = {"good", "great", "fine", "superb", "bad", "awful", "poor", "dull"}

# a short real run: trainer=smoke's budget, but not tagged smoke, so that reports count it
SHORT_RUN = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]

TINY_RUN = [*SHORT_RUN, "task.length=10", "task.train_size=256", "task.val_size=64", "task.test_size=64"]


def free_port() -> int:
    """A localhost port free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, **params) -> bytes:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}?{query}" if query else url, timeout=30) as response:
        return response.read()


def http_post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_until_healthy(base: str, server: subprocess.Popen, seconds: float) -> None:
    """Wait for the MLflow server at `base` (started as `server`) to answer /health."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            http_get(f"{base}/health")
            return
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, f"the server at {base} did not start"
            time.sleep(0.5)


# a run of seconds: trainer=smoke (tagged smoke) for 2 epochs on a short delayed_recall
SMALL_RUN = [
    "trainer=smoke",
    "trainer.max_epochs=2",
    "task.length=10",
    "task.distance=3",
    "task.train_size=256",
    "task.val_size=128",
    "task.test_size=128",
]


def train_run(tmp_path: Path, *overrides: str, argv0: list[str] | None = None, code: str | None = None):
    """`rnnexp-train` (or `argv0`, or Python running `code`) tracked in `tmp_path/mlflow.db`; ->
    (the finished process, a client of the store)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    args = [f"tracking.uri={store}", f"hydra.run.dir={tmp_path}/out", *overrides]
    if code is not None:
        command = [sys.executable, "-c", code, *args]
    else:
        command = (argv0 or [TRAIN]) + args
    proc = run_command(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return proc, MlflowClient(tracking_uri=store)


def runs_named(client: MlflowClient, experiment: str):
    """The runs of the experiment named `experiment`, none if it does not exist."""
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def variant_runs(
    scores_by_variant: dict[str, list[float]], chance: float = 0.125, scored: int = 1000, stopped_by: str = "plateau"
) -> pd.DataFrame:
    """Runs as `counted_runs` gives them; each trained to the score it was tested at."""
    rows = [
        {
            "variant": v,
            "task": "t",
            "model": "m",
            "cell": "none",
            "pattern": "1",
            "label": v,
            "metric": "acc",
            "better": "higher",
            "score": s,
            "teacher_forced": np.nan,
            "chance": chance,
            "n_test_scored": scored,
            "n_params": 10,
            "epochs_trained": 5,
            "stopped_by": stopped_by,
            "train_score": s,
            "wall_time_s": 1.0,
            "git_commit": "abc",
            "run_id": f"{v}{i}",
        }
        for v, scores in scores_by_variant.items()
        for i, s in enumerate(scores)
    ]
    return pd.DataFrame(rows)
