"""Slow faults, provoked for real (`make test-integration`): eight processes on a store that does
not exist yet, and a parallel sweep killed with SIGKILL."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rnnexp.store import RunRecord, Store
from tests.conftest import SMALL_RUN, TINY_RUN, run_command
from tests.test_cli import TRAIN

pytestmark = pytest.mark.integration


def test_eight_processes_on_a_new_store_all_finish_and_keep_every_metric(tmp_path):
    store = f"sqlite:///{tmp_path}/new.db"
    procs = [
        subprocess.Popen(
            [TRAIN, *SMALL_RUN, f"seed={i}", f"tracking.uri={store}", f"hydra.run.dir={tmp_path}/out{i}"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, "\n".join(e[-1500:] for e in errors if e)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("delayed_recall").experiment_id])
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.params["seed"] for r in runs) == [str(i) for i in range(8)]
    for run in runs:  # 2 epochs, each logged once, at step = the epoch
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [0, 1]
        assert "test/acc" in run.data.metrics
    import sqlite3

    with sqlite3.connect(tmp_path / "new.db") as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not [t for t in tables if t.startswith("_alembic_tmp_")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has ended: only its entry waits for its parent
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"


def test_a_sigkilled_parallel_sweep_takes_its_workers_with_it_and_resumes(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    # jobs long enough (150 tiny epochs) that none can finish between being seen RUNNING and the kill
    command = [
        TRAIN,
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path}/multirun",
        *TINY_RUN,
        "task.distance=3",
        "trainer.max_epochs=150",
        "trainer.limit_train_batches=8",
        "seed=0,1,2,3",
    ]
    client = Store.parse(store).client()  # the store made first: a client polling it would race to create it

    def runs():
        experiment = client.get_experiment_by_name("delayed_recall")
        return client.search_runs([experiment.experiment_id]) if experiment else []

    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        # jobs running, with their process tags (written just after each run is created)
        while (
            len(
                running := [
                    r
                    for r in runs()
                    if r.info.status == "RUNNING" and "sweep" not in r.data.tags and "pid" in r.data.tags
                ]
            )
            < 2
        ):
            assert sweep.poll() is None and time.monotonic() < deadline, "the jobs did not start"
            time.sleep(0.3)
    finally:
        sweep.kill()  # SIGKILL: nothing of the sweep's process runs again
        sweep.wait()
    workers = [int(r.data.tags["pid"]) for r in running]
    assert all(pid != sweep.pid for pid in workers)  # jobs in worker processes

    deadline = time.monotonic() + 30  # the workers notice within a second, and stop their jobs
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers), "the sweep's workers outlived it"
    for run in running:
        assert client.get_run(run.info.run_id).info.status == "KILLED"

    (parent,) = [r for r in runs() if RunRecord.of(r).sweep]
    assert parent.info.status == "RUNNING" and parent.data.tags["pid"] == str(sweep.pid)
    stale = run_command(
        [str(Path(TRAIN).parent / "python"), "-m", "rnnexp.tracking", "--stale", "--uri", store],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stale.returncode == 0 and parent.info.run_id in stale.stdout
    assert client.get_run(parent.info.run_id).info.status == "KILLED"

    resumed = run_command(
        command + [f"resume_sweep={parent.info.run_id}"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    children = [r for r in runs() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(r.data.params["seed"] for r in finished) == ["0", "1", "2", "3"]  # each once
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
