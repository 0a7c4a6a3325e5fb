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
from tests.test_sweeps import TINY, TRAIN, _free_port, _get, _post, _wait_until_healthy

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


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own on a free localhost port; -> the URL of an empty database,
    with a password, as a team would give it to `make server` (RNNEXP_SERVER_DB)."""
    import psycopg

    bin_dir, port, password = _postgres_bin(), _free_port(), secrets.token_hex(8)
    home = Path(tempfile.mkdtemp(prefix="rnnexp-pg-"))
    (home / "pw").write_text(password)
    as_owner: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as Debian's `postgres` user instead
        shutil.chown(home, "postgres", "postgres")
        shutil.chown(home / "pw", "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_owner, bin_dir / "initdb", "-D", home / "data", "-U", "rnnexp", f"--pwfile={home / 'pw'}",
                    "--auth-host=scram-sha-256", "--auth-local=trust"], check=True, capture_output=True)
    subprocess.run([*as_owner, bin_dir / "pg_ctl", "-D", home / "data", "-l", home / "log", "-w", "start", "-o",
                    f"-p {port} -k {home} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="rnnexp", password=password, dbname="postgres",
                             autocommit=True) as admin:
            admin.execute("CREATE DATABASE mlflow")
        yield f"postgresql://rnnexp:{password}@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_owner, bin_dir / "pg_ctl", "-D", home / "data", "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _query(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()


@contextmanager
def _team_server(db_url: str, artifacts: Path, port: int | None = None):
    """`make server` over the database at `db_url`, as a team runs it; -> (its URL, a function
    that stops it)."""
    port = port or _free_port()
    server = subprocess.Popen(["make", "--no-print-directory", "server", f"VENV={VENV}", f"PORT={port}",
                               f"SERVER_ARTIFACTS={artifacts}"], cwd=ROOT,
                              env=dict(os.environ, RNNEXP_SERVER_DB=db_url), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # make and the server's workers with it
            server.wait(timeout=60)

    try:
        _wait_until_healthy(base, server, seconds=120)  # the first start creates the schema
        yield base, stop
    finally:
        stop()


def _runs(base: str, experiment: str) -> list[dict]:
    api = f"{base}/api/2.0/mlflow"
    found = json.loads(_get(f"{api}/experiments/get-by-name", experiment_name=experiment))
    return _post(f"{api}/runs/search", {"experiment_ids": [found["experiment"]["experiment_id"]]})["runs"]


def _history(base: str, run_id: str, key: str) -> list[dict]:
    return json.loads(_get(f"{base}/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key))["metrics"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_a_parallel_sweep_on_a_team_server_on_postgresql_keeps_every_run_metric_and_artifact(postgres, tmp_path):
    with _team_server(postgres, tmp_path / "served") as (base, _):
        proc = subprocess.run([TRAIN, "-m", "tracking=server", "tracking.experiment=sweep", "hydra/launcher=joblib",
                               "hydra.launcher.n_jobs=2",
                               f"hydra.sweep.dir={tmp_path}/multirun", *TINY, "trainer.max_epochs=3",
                               "model=rnn_hidden,mlp_window", "task.distance=1,3"],
                              cwd=tmp_path, env=dict(os.environ, MLFLOW_TRACKING_URI=base), capture_output=True,
                              text=True, timeout=600)
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
                assert [m["step"] for m in _history(base, run_id, key)] == [0, 1, 2]  # once per epoch, at step = the epoch
            assert "test/acc" in {m["key"] for m in child["data"]["metrics"]}
            listed = json.loads(_get(f"{base}/api/2.0/mlflow/artifacts/list", run_id=run_id))
            assert {"config.yaml", "overrides.yaml", "last"} <= {f["path"] for f in listed["files"]}
            assert b"model:" in _get(f"{base}/get-artifact", path="config.yaml", run_uuid=run_id)
    # the server kept them in PostgreSQL and in its artifact folder
    in_sweep = "FROM runs JOIN experiments USING (experiment_id) WHERE experiments.name = 'sweep'"
    assert _query(postgres, f"SELECT count(*) {in_sweep}") == [(5,)]
    assert _query(postgres, f"SELECT count(*) FROM metrics WHERE key = 'val/acc' AND run_uuid IN "
                            f"(SELECT run_uuid {in_sweep})") == [(12,)]
    assert len(list((tmp_path / "served").rglob("last.ckpt"))) == 4


STEPS, EPOCHS = 128, 30


def _start_run(tmp_path: Path, base: str, **env: str) -> subprocess.Popen:
    """A run into an experiment named after its test: the tests share one database."""
    # STEPS steps an epoch of 64 sequences: about 10 s of training, so that the server can be
    # stopped while it runs
    return subprocess.Popen([TRAIN, "tracking=server", f"tracking.experiment={tmp_path.name}",
                             f"hydra.run.dir={tmp_path}/out", f"trainer.max_epochs={EPOCHS}",
                             "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                             "task.length=20", "task.distance=3", f"task.train_size={64 * STEPS}", "task.val_size=256",
                             "task.test_size=256"],
                            cwd=tmp_path, env=dict(os.environ, MLFLOW_TRACKING_URI=base, **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


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
    port = _free_port()
    with _team_server(postgres, tmp_path / "served", port) as (base, stop):
        run = _start_run(tmp_path, base)
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
        assert [m.step for m in sorted(client.get_metric_history(run_id, "val/acc"), key=lambda m: m.step)] == \
            list(range(EPOCHS))


def test_a_run_whose_server_goes_away_fails_honestly_keeps_what_it_logged_and_resumes(postgres, tmp_path):
    port = _free_port()
    with _team_server(postgres, tmp_path / "served", port) as (base, stop):
        run = _start_run(tmp_path, base, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
                         MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
        run_id = _wait_for_epochs(base, run, tmp_path.name, 2)
        logged = len(_history(base, run_id, "val/acc"))
        stop()
        assert run.wait(timeout=300) != 0
        err = run.stderr.read()
        last = err.strip().splitlines()[-1]
        assert last.startswith("rnnexp-train: error:") and "tracking server" in last, err[-5000:]
    with _team_server(postgres, tmp_path / "served", port) as (base, _):
        client = MlflowClient(base)
        before = {m.step for m in client.get_metric_history(run_id, "val/acc")}
        assert len(before) >= logged  # nothing already logged is lost
        assert client.get_run(run_id).info.status == "RUNNING"  # nobody could tell the server
        # as the error says: resume it. The dead process's run is marked KILLED, then goes on
        resumed = subprocess.run([TRAIN, "tracking=server", f"resume={run_id}"], cwd=tmp_path,
                                 env=dict(os.environ, MLFLOW_TRACKING_URI=base), capture_output=True, text=True,
                                 timeout=600)
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
    command = [TRAIN, "-m", f"hydra/launcher={launcher}", f"tracking.uri={store}",
               f"hydra.sweep.dir={tmp_path}/multirun", *TINY, "task.distance=3"]
    first = subprocess.run(command + ["seed=0,1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(store)

    def children(parent_id):
        experiment = client.get_experiment_by_name("delayed_recall").experiment_id
        return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")

    (parent,) = client.search_runs([client.get_experiment_by_name("delayed_recall").experiment_id],
                                   "tags.sweep = 'true'")
    before = children(parent.info.run_id)
    assert parent.info.status == "FINISHED" and len(before) == 2
    assert all(c.info.status == "FINISHED" for c in before)

    # resume the sweep with one more seed: the two that finished are skipped, the third runs
    resumed = subprocess.run(command + ["seed=0,1,2", f"resume={parent.info.run_id}"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = children(parent.info.run_id)
    assert len(after) == 3 and {c.info.run_id for c in before} < {c.info.run_id for c in after}
    assert sorted(c.data.tags["seed"] for c in after) == ["0", "1", "2"]
    assert all(c.info.status == "FINISHED" for c in after)
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"

    report_main(["--uri", store, "--parent", parent.info.run_id, "--out", str(tmp_path / "report")])
    with open(tmp_path / "report" / "results.csv") as f:
        (row,) = csv.DictReader(f)
    assert row["n_seeds"] == "3"
    assert float(row["mean"]) == pytest.approx(statistics.fmean(c.data.metrics["test/acc"] for c in after), rel=1e-5)


def test_the_mlflow_ui_lists_a_sweeps_runs_in_headless_chromium(tmp_path):
    # a real `mlflow ui` over a real sweep, rendered by Debian's chromium (make test-integration installs it)
    sys.path.insert(0, str(ROOT / "experiments" / "ui"))
    import screenshots

    uri = screenshots.sweep(tmp_path)
    experiment, parent, children = screenshots.runs_of(uri)
    client = MlflowClient(uri)
    names = [client.get_run(r).data.tags["mlflow.runName"] for r in children]
    sweep_name = client.get_run(parent).data.tags["mlflow.runName"]
    shot = tmp_path / "runs_table.png"
    with screenshots.serve(uri) as base:
        table = screenshots.page(f"{base}/#/experiments/{experiment}?{screenshots.MODE}", shot, until=sweep_name)
        compared = screenshots.page(f"{base}/#/compare-runs?runs={json.dumps(children)}"
                                    f"&experiments={json.dumps([experiment])}&{screenshots.MODE}", until=names[0])
    # the sweep is one parent, its 4 children under it: the table lists the parent and counts all
    table, compared = (" ".join(re.sub(r"<[^>]+>", " ", dom).split()) for dom in (table, compared))  # the text shown
    assert sweep_name in table and "5 matching runs" in table
    assert "Model training" in table  # opened as model training, as rnnexp's links say
    assert all(name in compared for name in names) and any("-gru-" in n for n in names)
    assert shot.stat().st_size > 20_000  # a page, not a blank
