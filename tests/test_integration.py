"""The slow tests (`make test-integration`): a team's MLflow server (`make server`) on a real
PostgreSQL, the server going away in the middle of a run, and sweeps under every launcher, Ray's
included. Each test starts its own services on free localhost ports, in temporary folders."""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rnnexp.report import main as report_main
from tests.conftest import (
    CRASH_AT_EPOCH_1,  # a job that crashes as its second epoch starts
    TINY_RUN,
    free_port,
    http_get,
    http_post,
    wait_until_healthy,
)
from tests.test_sweeps import TRAIN

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    assert initdb, "PostgreSQL is not installed: `make test-integration` installs Debian's postgresql"
    return Path(initdb).parent


@contextmanager
def _own_postgres():
    """A PostgreSQL server of its own on a free localhost port; -> (the URL of an empty database,
    with a password, as a team would give it to `make server` (RNNEXP_SERVER_DB), and a function
    that runs `pg_ctl stop` or `pg_ctl start` on it)."""
    import psycopg

    bin_dir, port, password = _postgres_bin(), free_port(), secrets.token_hex(8)
    home = Path(tempfile.mkdtemp(prefix="rnnexp-pg-"))
    (home / "pw").write_text(password)
    as_owner: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as Debian's `postgres` user instead
        shutil.chown(home, "postgres", "postgres")
        shutil.chown(home / "pw", "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *as_owner,
            bin_dir / "initdb",
            "-D",
            home / "data",
            "-U",
            "rnnexp",
            f"--pwfile={home / 'pw'}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
        ],
        check=True,
        capture_output=True,
    )

    def pg_ctl(action: str) -> None:
        options = ["-m", "fast"] if action == "stop" else ["-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1"]
        subprocess.run(
            [*as_owner, bin_dir / "pg_ctl", "-D", home / "data", "-l", home / "log", "-w", action, *options],
            check=True,
            capture_output=True,
        )

    pg_ctl("start")
    try:
        with psycopg.connect(
            host="127.0.0.1", port=port, user="rnnexp", password=password, dbname="postgres", autocommit=True
        ) as admin:
            admin.execute("CREATE DATABASE mlflow")
        yield f"postgresql://rnnexp:{password}@127.0.0.1:{port}/mlflow", pg_ctl
    finally:
        subprocess.run([*as_owner, bin_dir / "pg_ctl", "-D", home / "data", "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server shared by the module's tests; -> the URL of its database."""
    with _own_postgres() as (url, _):
        yield url


def _query(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()


@contextmanager
def _team_server(db_url: str, artifacts: Path, port: int | None = None):
    """`make server` over the database at `db_url`, as a team runs it; -> (its URL, a function
    that stops it)."""
    port = port or free_port()
    server = subprocess.Popen(
        ["make", "--no-print-directory", "server", f"VENV={VENV}", f"PORT={port}", f"SERVER_ARTIFACTS={artifacts}"],
        cwd=ROOT,
        env=dict(os.environ, RNNEXP_SERVER_DB=db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # make and the server's workers with it
            server.wait(timeout=60)

    try:
        wait_until_healthy(base, server, seconds=120)  # the first start creates the schema
        yield base, stop
    finally:
        stop()


def _runs(base: str, experiment: str) -> list[dict]:
    api = f"{base}/api/2.0/mlflow"
    found = json.loads(http_get(f"{api}/experiments/get-by-name", experiment_name=experiment))
    return http_post(f"{api}/runs/search", {"experiment_ids": [found["experiment"]["experiment_id"]]})["runs"]


def _history(base: str, run_id: str, key: str) -> list[dict]:
    return json.loads(http_get(f"{base}/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key))["metrics"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_a_parallel_sweep_on_a_team_server_on_postgresql_keeps_every_run_metric_and_artifact(postgres, tmp_path):
    with _team_server(postgres, tmp_path / "served") as (base, _):
        proc = subprocess.run(
            [
                TRAIN,
                "-m",
                "tracking=server",
                "tracking.experiment=sweep",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                f"hydra.sweep.dir={tmp_path}/multirun",
                *TINY_RUN,
                "trainer.max_epochs=3",
                "model=rnn_hidden,mlp_window",
                "task.distance=1,3",
            ],
            cwd=tmp_path,
            env=dict(os.environ, MLFLOW_TRACKING_URI=base),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs = _runs(base, "sweep")  # through the REST API, as the UI reads them
        (parent,) = [r for r in runs if _tags(r).get("sweep") == "true"]
        children = [r for r in runs if r is not parent]
        assert parent["info"]["status"] == "FINISHED" and len(children) == 4
        for child in children:
            run_id = child["info"]["run_id"]
            assert child["info"]["status"] == "FINISHED"
            assert _tags(child)["mlflow.parentRunId"] == parent["info"]["run_id"]
            for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
                assert [m["step"] for m in _history(base, run_id, key)] == [
                    0,
                    1,
                    2,
                ]  # once per epoch, at step = the epoch
            assert "test/acc" in {m["key"] for m in child["data"]["metrics"]}
            listed = json.loads(http_get(f"{base}/api/2.0/mlflow/artifacts/list", run_id=run_id))
            assert {"config.yaml", "overrides.yaml", "last"} <= {f["path"] for f in listed["files"]}
            assert b"model:" in http_get(f"{base}/get-artifact", path="config.yaml", run_uuid=run_id)
    # the server kept them in PostgreSQL and in its artifact folder
    in_sweep = "FROM runs JOIN experiments USING (experiment_id) WHERE experiments.name = 'sweep'"
    assert _query(postgres, f"SELECT count(*) {in_sweep}") == [(5,)]
    assert _query(
        postgres, f"SELECT count(*) FROM metrics WHERE key = 'val/acc' AND run_uuid IN (SELECT run_uuid {in_sweep})"
    ) == [(12,)]
    assert len(list((tmp_path / "served").rglob("last.ckpt"))) == 4


STEPS, EPOCHS = 128, 30


def _start_run(tmp_path: Path, base: str, **env: str) -> subprocess.Popen:
    """A run into an experiment named after its test: the tests share one database."""
    # STEPS steps an epoch of 64 sequences: about 10 s of training, so that the server can be
    # stopped while it runs
    return subprocess.Popen(
        [
            TRAIN,
            "tracking=server",
            f"tracking.experiment={tmp_path.name}",
            f"hydra.run.dir={tmp_path}/out",
            f"trainer.max_epochs={EPOCHS}",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "task.length=20",
            "task.distance=3",
            f"task.train_size={64 * STEPS}",
            "task.val_size=256",
            "task.test_size=256",
        ],
        cwd=tmp_path,
        env=dict(os.environ, MLFLOW_TRACKING_URI=base, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_epochs(base: str, proc: subprocess.Popen, experiment: str, epochs: int) -> str:
    """Wait until the only run has logged `epochs` epochs to the server; -> its id."""
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        try:
            (run,) = _runs(base, experiment)
            if len(_history(base, run["info"]["run_id"], "val/acc")) >= epochs:
                return run["info"]["run_id"]
        except (OSError, KeyError, ValueError):
            pass  # the experiment or the run is not there yet
        time.sleep(0.5)


def test_a_run_rides_out_a_server_restart_and_loses_nothing(postgres, tmp_path):
    port = free_port()
    with _team_server(postgres, tmp_path / "served", port) as (base, stop):
        # rnnexp gives up on a server after about 15 s (rnnexp.train.STORE_RETRIES); MLflow's own
        # 7 retries ride out a restart
        run = _start_run(tmp_path, base, MLFLOW_HTTP_REQUEST_MAX_RETRIES="7")
        run_id = _wait_for_epochs(base, run, tmp_path.name, 2)
        stop()  # the server goes away in the middle of the run...
        time.sleep(5)
        assert run.poll() is None, "the run ended while the server was away"
    with _team_server(postgres, tmp_path / "served", port) as (base, _):  # ...and comes back
        assert run.wait(timeout=600) == 0, run.stderr.read()[-3000:]  # the client retried its requests
        client = MlflowClient(base)
        finished = client.get_run(run_id)
        assert finished.info.status == "FINISHED" and "test/acc" in finished.data.metrics
        # every epoch, none twice: what was logged before the outage is kept and nothing went missing
        assert [m.step for m in sorted(client.get_metric_history(run_id, "val/acc"), key=lambda m: m.step)] == list(
            range(EPOCHS)
        )


def test_a_run_whose_server_goes_away_fails_honestly_keeps_what_it_logged_and_resumes(postgres, tmp_path):
    port = free_port()
    with _team_server(postgres, tmp_path / "served", port) as (base, stop):
        run = _start_run(tmp_path, base)  # with rnnexp's retries: it used to block for 6 minutes
        run_id = _wait_for_epochs(base, run, tmp_path.name, 2)
        logged = len(_history(base, run_id, "val/acc"))
        stop()
        stopped = time.monotonic()
        assert run.wait(timeout=120) == 1
        print(f"the run gave up {time.monotonic() - stopped:.1f} s after its server stopped")  # (-s shows it)
        err = run.stderr.read()
        # one line: the store, the run, and the command that resumes it
        assert (
            err.strip()
            .splitlines()[-1]
            .startswith(
                f"rnnexp-train: error: the tracking server {base} failed "
                f"mid-run (Connection refused); run {run_id} is left RUNNING"
            )
        ), err[-5000:]
        assert "Traceback" not in err and f"resume={run_id}" in err
        assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()
    with _team_server(postgres, tmp_path / "served", port) as (base, _):
        client = MlflowClient(base)
        before = {m.step for m in client.get_metric_history(run_id, "val/acc")}
        assert len(before) >= logged  # nothing already logged is lost
        assert client.get_run(run_id).info.status == "RUNNING"  # nobody could tell the server
        # as the error says: resume it. The dead process's run is marked KILLED, then goes on
        resumed = subprocess.run(
            [TRAIN, "tracking=server", f"resume={run_id}"],
            cwd=tmp_path,
            env=dict(os.environ, MLFLOW_TRACKING_URI=base),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        finished = client.get_run(run_id)
        assert finished.info.status == "FINISHED" and finished.data.tags["resumed"] == "1"
        # every epoch's metrics once: those the server had not got are kept in the checkpoint,
        # and those it had are not logged a second time
        for key in ("val/acc", "val/loss", "train/acc", "train/loss"):
            steps = sorted(m.step for m in client.get_metric_history(run_id, key))
            assert steps == list(range(EPOCHS)), (key, steps)


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local", "ray"])
def test_grouping_resume_and_the_report_work_the_same_under_every_launcher(launcher, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        TRAIN,
        "-m",
        f"hydra/launcher={launcher}",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path}/multirun",
        *TINY_RUN,
        "task.distance=3",
    ]
    first = subprocess.run(command + ["seed=0,1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(store)

    def children(parent_id):
        experiment = client.get_experiment_by_name("delayed_recall").experiment_id
        return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")

    (parent,) = client.search_runs(
        [client.get_experiment_by_name("delayed_recall").experiment_id], "tags.sweep = 'true'"
    )
    before = children(parent.info.run_id)
    assert parent.info.status == "FINISHED" and len(before) == 2
    assert all(c.info.status == "FINISHED" for c in before)

    # a sweep of three seeds stopped before its third job: resumed, the two that finished are
    # skipped, the third runs
    client.set_terminated(parent.info.run_id, "KILLED")
    resumed = subprocess.run(
        command + ["seed=0,1,2", f"resume_sweep={parent.info.run_id}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = children(parent.info.run_id)
    assert len(after) == 3 and {c.info.run_id for c in before} < {c.info.run_id for c in after}
    assert sorted(c.data.tags["seed"] for c in after) == ["0", "1", "2"]
    assert all(c.info.status == "FINISHED" for c in after)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    again = subprocess.run(
        command + ["seed=0,1,2", f"resume_sweep={parent.info.run_id}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"rnnexp-train: error: resume_sweep='{parent.info.run_id}' is not allowed: a sweep that stopped before its end "
        "(FAILED "
        "or KILLED); this one FINISHED: every job ran"
    ], again.stderr

    report_main(["--uri", store, "--parent", parent.info.run_id, "--out", str(tmp_path / "report")])
    with open(tmp_path / "report" / "results.csv") as f:
        (row,) = csv.DictReader(f)
    assert row["n_seeds"] == "3"
    assert float(row["mean"]) == pytest.approx(statistics.fmean(c.data.metrics["test/acc"] for c in after), rel=1e-5)


def test_a_failed_sweep_job_on_a_server_shows_its_password_nowhere(postgres, tmp_path):
    """Hydra writes a failed job's overrides to stderr itself, past logging: the password in
    `tracking.uri` showed there. Not on the console, not in a file, not in the store."""
    password = "NormalPwQ7"
    with _team_server(postgres, tmp_path / "served") as (base, _):
        uri = base.replace("http://", f"http://alice:{password}@")
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CRASH_AT_EPOCH_1,
                "-m",
                "seed=1,2",
                f"tracking.uri={uri}",
                f"hydra.sweep.dir={tmp_path}/multirun",
                *TINY_RUN,
                "task.distance=3",
                "trainer.max_epochs=3",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode != 0 and "Error executing job with overrides" in proc.stderr, proc.stderr[-3000:]
        assert password not in proc.stdout + proc.stderr
        assert r"tracking.uri=http\\://***@127.0.0.1" in proc.stderr  # as Hydra escapes it, masked
        for path in tmp_path.rglob("*"):  # the sweep's folders and the server's artifacts
            assert password not in str(path) and (not path.is_file() or password.encode() not in path.read_bytes())
        for table in ("params", "tags", "latest_metrics", "experiment_tags"):
            column = "key" if table == "latest_metrics" else "value"
            assert _query(postgres, f"SELECT count(*) FROM {table} WHERE {column} LIKE '%{password}%'") == [(0,)]


def test_a_postgresql_store_stopped_mid_run_is_one_line_and_the_run_resumes_when_it_is_back(tmp_path):
    with _own_postgres() as (url, pg_ctl):
        password = url.split(":")[2].split("@")[0]
        command = [
            TRAIN,
            f"tracking.uri={url}",
            "tracking.experiment=pg",
            f"hydra.run.dir={tmp_path}/out",
            "trainer.max_epochs=12",
            "trainer.enable_progress_bar=false",
            "task.length=20",
            "task.distance=3",
            f"task.train_size={64 * STEPS}",
            "task.val_size=256",
            "task.test_size=256",
        ]
        run = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        client = MlflowClient(url)
        deadline = time.monotonic() + 300
        while True:  # until it has logged two epochs
            assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()[-3000:]
            experiment = client.get_experiment_by_name("pg")
            found = client.search_runs([experiment.experiment_id]) if experiment else []
            if found and len(client.get_metric_history(found[0].info.run_id, "val/acc")) >= 2:
                run_id = found[0].info.run_id
                break
            time.sleep(0.5)
        pg_ctl("stop")
        stopped = time.monotonic()
        assert run.wait(timeout=120) == 1
        print(f"the run gave up {time.monotonic() - stopped:.1f} s after its database stopped")
        err = run.stderr.read()
        last = err.strip().splitlines()[-1]
        assert (
            last.startswith("rnnexp-train: error: the tracking store postgresql://***@127.0.0.1")
            and f"run {run_id} is left RUNNING there, its checkpoints kept" in last
        ), err[-3000:]
        assert password not in err and "Traceback" not in err
        assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()

        pg_ctl("start")  # back: resumed as the line says, every epoch once
        resumed = subprocess.run(
            [TRAIN, f"resume={run_id}", f"tracking.uri={url}", f"hydra.run.dir={tmp_path}/again"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert client.get_run(run_id).info.status == "FINISHED"
        for key in ("val/acc", "train/loss"):
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(12)), key


def test_two_resumes_of_one_sweep_at_once_run_each_missing_job_once(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    command = [TRAIN, "-m", f"tracking.uri={store}", *TINY_RUN, "task.distance=3", "seed=0,1,2"]
    first = subprocess.run(
        command + [f"hydra.sweep.dir={tmp_path}/first"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("delayed_recall").experiment_id
    (parent,) = client.search_runs([experiment], "tags.sweep = 'true'")
    parent_id = parent.info.run_id
    # as if it had stopped before its last two jobs finished
    client.set_terminated(parent_id, "KILLED")
    for child in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}' and tags.seed != '0'"):
        client.set_terminated(child.info.run_id, "FAILED")
    both = [
        subprocess.Popen(
            command + [f"resume_sweep={parent_id}", f"hydra.sweep.dir={tmp_path}/again{i}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in both]
    assert sorted(code for code, _ in results) == [0, 2], results
    (refused,) = [err for code, err in results if code == 2]
    (line,) = refused.strip().splitlines()
    assert line.startswith(f"rnnexp-train: error: resume_sweep='{parent_id}' is not allowed: a sweep that ") and (
        "one resume at a time" in line or "FINISHED" in line
    ), line  # (FINISHED: the other was done already)
    finished = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'FINISHED'"
    )
    assert sorted(r.data.tags["seed"] for r in finished) == ["0", "1", "2"]  # each once: no job ran twice
    assert client.get_run(parent_id).info.status == "FINISHED"


# a run that, as its second epoch starts (once it has a checkpoint), runs the shell command $FAULT once
FAULT_AT_EPOCH_1 = """
import os
import subprocess
import sys
import rnnexp.module
def fault(self):
    if self.current_epoch == 1 and not os.path.exists(os.environ["FAULT_DONE"]):
        open(os.environ["FAULT_DONE"], "w").close()
        subprocess.run(os.environ["FAULT"], shell=True)
rnnexp.module.SequenceModule.on_train_epoch_start = fault
from rnnexp.train import main
sys.argv = ["rnnexp-train", *sys.argv[1:]]
main()
"""


@contextmanager
def _small_disk(folder: Path, size: str = "16m"):
    """A tmpfs of `size` mounted at `folder` (root only: skipped elsewhere)."""
    folder.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# (A store made read-only mid-run is not provoked: a chmod does not reach a file already open, and
# a mount with the store open for writing refuses to turn read-only. The kernel's remount after an
# I/O error reaches SQLite as an OperationalError, the path a full disk takes.)
@pytest.mark.parametrize("fault,undo", [("head -c 64M /dev/zero > {disk}/fill", "rm {disk}/fill")])
def test_a_store_whose_disk_fills_mid_run_is_one_line_and_loses_no_metric(tmp_path, fault, undo):
    with _small_disk(tmp_path / "disk") as disk:
        store = f"sqlite:///{disk}/mlflow.db"
        epochs = 8
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                FAULT_AT_EPOCH_1,
                f"tracking.uri={store}",
                f"hydra.run.dir={tmp_path}/out",
                f"trainer.max_epochs={epochs}",
                "trainer.enable_progress_bar=false",
                "task.length=20",
                "task.distance=3",
                f"task.train_size={64 * STEPS}",
                "task.val_size=256",
                "task.test_size=256",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, FAULT=fault.format(disk=disk), FAULT_DONE=str(tmp_path / "done")),
        )
        assert run.returncode == 1, run.stderr[-3000:]
        last = run.stderr.strip().splitlines()[-1]
        assert (
            last.startswith(f"rnnexp-train: error: the tracking store {store} failed mid-run (")
            and "is left RUNNING there, its checkpoints kept" in last
        ), run.stderr[-3000:]
        assert "Traceback" not in run.stderr and (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "done", "mlartifacts", "out"]  # nothing else

        subprocess.run(undo.format(disk=disk), shell=True, check=True)  # the disk is back
        run_id = last.split(" run ")[1].split()[0]
        resumed = subprocess.run(
            [TRAIN, f"resume={run_id}", f"tracking.uri={store}", f"hydra.run.dir={tmp_path}/again"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        client = MlflowClient(store)
        assert client.get_run(run_id).info.status == "FINISHED"
        for key in ("val/acc", "val/loss", "train/acc", "train/loss"):  # every epoch once: none lost, none twice
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(epochs)), key


def test_the_mlflow_ui_shows_a_sweeps_results_on_its_first_screen_in_headless_chromium(tmp_path):
    # a real `mlflow ui` over a real sweep, rendered by Debian's chromium (make test-integration
    # installs it), opened by the link the sweep prints: its runs grouped by cell, the scores as columns
    sys.path.insert(0, str(ROOT / "experiments" / "ui"))
    import screenshots

    uri = screenshots.sweep(tmp_path)
    experiment, parent, children = screenshots.runs_of(uri)
    client = MlflowClient(uri)
    names = [client.get_run(r).data.tags["mlflow.runName"] for r in children]
    sweep_name = client.get_run(parent).data.tags["mlflow.runName"]
    assert sweep_name == "sweep, 4 runs: model.cell=rnn,gru seed=0,1"  # what it swept, and how many runs
    scores = [client.get_run(r).data.metrics["test/acc"] for r in children]
    shot = tmp_path / "runs_table.png"
    with screenshots.serve(uri) as base:
        table = screenshots.page(f"{base}/{screenshots.sweep_link(experiment, parent)}", shot, until="cell: gru")
        compared = screenshots.page(
            f"{base}/#/compare-runs?runs={json.dumps(children)}"
            f"&experiments={json.dumps([experiment])}&{screenshots.MODE}",
            until=names[0],
        )
    table, compared = (" ".join(re.sub(r"<[^>]+>", " ", dom).split()) for dom in (table, compared))  # the text shown
    assert "Model training" in table  # opened as model training, as rnnexp's links say
    # the first screen: the sweep's runs, a group per cell with its average, each run's score
    assert "Group: model.cell: rnn, variant_hash:" in table and "Group: model.cell: gru, variant_hash:" in table
    assert "(average)" in table
    header = table[table.index("Run Name") : table.index("Group:")]  # the view's columns (the UI may reorder them)
    for column in ("model.cell", "seed", "test/acc", "chance_level", "epochs_trained", "stopped_by"):
        assert column in header, header
    shown = [(repr(score)[:-2] if repr(score).endswith(".0") else repr(score))[:6] for score in scores]  # as JS prints
    assert all(score in table for score in shown), (shown, table[:2000])
    assert table.count("Hide run") == len(children) + 1  # the sweep's runs and its parent, no other run
    assert all(name in compared for name in names)
    # each name leads with what the sweep varied, where the UI's narrow name column shows it
    assert sorted(n.split("-rnn_hidden-")[0] for n in names) == ["gru-s0", "gru-s1", "tanh-s0", "tanh-s1"]
    assert shot.stat().st_size > 20_000  # a page, not a blank


def test_make_tune_lr_extends_a_grid_whose_choice_is_at_its_edge_until_the_bound(tmp_path):
    # rates far too small for a 3-epoch run: the largest wins, so the grid grows upward, one step
    # (x3) a round, until LR_BOUND stops it
    store = f"sqlite:///{tmp_path}/mlflow.db"
    tiny = "task.distance=2 task.length=10 task.train_size=256 task.val_size=64 task.test_size=64"
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "tune-lr",
            f"VENV={VENV}",
            "EXP=default",
            "PARTS=gated",  # pattern 1 with a GRU and an LSTM
            f"URI={store}",
            "LR_GRID=0.00001,0.00003",
            "LR_SEEDS=0",
            "LR_BOUND=0.00001,0.0003",
            f"ARGS={tiny} trainer.max_epochs=3 hydra.sweep.dir={tmp_path}/multirun",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("default_lr").experiment_id])
    from rnnexp.store import RunRecord

    rates = sorted({float(r.data.params["optim.lr"]) for r in runs if not RunRecord.of(r).sweep})
    assert rates == pytest.approx([1e-5, 3e-5, 9e-5, 2.7e-4]), proc.stdout  # 8.1e-4 is beyond the bound
    assert proc.stdout.count("(a choice is at its grid's edge: extending the grid by") == 2
    lines = [
        line for line in proc.stdout.splitlines() if line.startswith(("rnn_hidden (gru) on", "rnn_hidden (lstm) on"))
    ]
    assert len(lines) == 2 and all("*0.00027=" in line for line in lines), lines
    assert all("(at the grid's top: a better rate may lie beyond it)" in line for line in lines)
