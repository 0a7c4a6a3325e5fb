"""Faults provoked for real: an interrupted or crashed run resumed, a store that cannot be
written, a corrupt checkpoint, secrets in the config."""

from __future__ import annotations

import os
import shutil
import signal
import time
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from requests import ConnectionError as ConnectionError_

from rnnexp import tracking
from rnnexp.logger import BatchedMLFlowLogger
from rnnexp.store import Store
from tests.conftest import (
    CRASH_AT_EPOCH_1,
    SMALL_RUN,
    free_port,
    one_error_line,
    resume_run,
    run_command,
    runs_named,
    start_command,
    train_run,
)
from tests.test_cli import TRAIN

# with dropout: a resumed run draws the masks the uninterrupted one drew (the random state is in the checkpoint)
LONGER = [
    "trainer.max_epochs=5",
    "trainer.enable_progress_bar=false",
    "task.train_size=4096",
    "task.val_size=128",
    "task.test_size=128",
    "model.dropout=0.3",
]


def _final(client: MlflowClient, run_id: str) -> dict[str, float]:
    return {k: v for k, v in client.get_run(run_id).data.metrics.items() if k != "wall_time_s"}


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


# fresh: each epoch's training set comes from the seed and the epoch, so the resumed epochs draw the same
@pytest.mark.parametrize("fresh", ["false", "true"])
def test_an_interrupted_run_resumes_into_the_same_run_and_ends_as_an_uninterrupted_one(tmp_path, fresh):
    overrides = [*LONGER, f"task.fresh={fresh}"]
    whole, client = train_run(tmp_path / "whole", *overrides)
    assert whole.returncode == 0, whole.stderr
    (reference,) = runs_named(client, "delayed_recall")

    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = Store.parse(store).client()  # the store made first: a client making it meanwhile would race
    proc = start_command([TRAIN, *overrides, f"tracking.uri={store}", f"hydra.run.dir={tmp_path}/out"], cwd=tmp_path)
    deadline = time.monotonic() + 120
    try:
        # interrupt it once its first epoch has a checkpoint (the store sees metrics only every
        # 2 s, when they are written in a batch: by then the run could be over)
        while time.monotonic() < deadline and not (tmp_path / "out" / "checkpoints" / "last.ckpt").exists():
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT  # as a shell reports Ctrl-C, and as a sweep exits on it
    (run,) = runs_named(client, "delayed_recall")
    assert run.info.status == "KILLED" and (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()
    params = run.data.params

    resumed = resume_run(tmp_path, run.info.run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"run {run.info.run_id} FINISHED" in resumed.stdout
    (again,) = runs_named(client, "delayed_recall")  # the same run, no new one
    assert again.info.status == "FINISHED" and again.data.params == params
    tags = again.data.tags
    assert tags["resumed"] == "1" and tags["resumed_after"] == "interrupted" and "error" not in tags
    # every epoch at its own step, and the same numbers as the run that was never stopped
    assert _final(client, run.info.run_id) == _final(
        MlflowClient(f"sqlite:///{tmp_path}/whole/mlflow.db"), reference.info.run_id
    )
    whole_client = MlflowClient(f"sqlite:///{tmp_path}/whole/mlflow.db")
    for key in ("val/acc", "train/loss"):
        history = _history(client, run.info.run_id, key)
        assert len(history) == 5 and history == _history(whole_client, reference.info.run_id, key)


def test_a_crashed_run_resumes_from_its_logged_checkpoint_when_its_folder_is_gone(tmp_path):
    proc, client = train_run(tmp_path, *SMALL_RUN, "trainer.max_epochs=3", code=CRASH_AT_EPOCH_1)
    assert proc.returncode != 0
    (run,) = runs_named(client, "delayed_recall")
    assert run.info.status == "FAILED" and "injected crash at epoch 1" in run.data.tags["error"]
    assert Path(run.data.tags["checkpoint_dir"]) == tmp_path / "out" / "checkpoints"
    shutil.rmtree(tmp_path / "out")  # another machine: only the store has the checkpoint

    resumed = resume_run(tmp_path, run.info.run_id)
    assert resumed.returncode == 0, resumed.stderr
    again = client.get_run(run.info.run_id)
    assert again.info.status == "FINISHED" and "injected crash" in again.data.tags["resumed_after"]
    assert sorted(_history(client, run.info.run_id, "val/acc")) == [0, 1, 2]  # epochs 0, 1, 2, once each
    assert "test/acc" in again.data.metrics

    line = one_error_line(resume_run(tmp_path, run.info.run_id))  # once is enough
    assert "this one is FINISHED" in line


def test_resume_writes_in_its_own_folder_never_where_the_store_says_and_keeps_last_ckpt_the_last(tmp_path):
    proc, client = train_run(tmp_path, *SMALL_RUN, "trainer.max_epochs=4", code=CRASH_AT_EPOCH_1)
    assert proc.returncode != 0
    (run,) = runs_named(client, "delayed_recall")
    run_id = run.info.run_id
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "out" / "checkpoints", moved)  # the run's folder moved to another disk
    client.set_tag(run_id, "checkpoint_dir", str(moved))

    resumed = resume_run(tmp_path, run_id)
    assert resumed.returncode == 0, resumed.stderr
    own = tmp_path / "resumed" / "checkpoints"  # the resume command's own output folder (hydra.run.dir)
    assert sorted(p.name for p in own.glob("last*.ckpt")) == ["last.ckpt"]  # not last-v1.ckpt beside it
    assert client.get_run(run_id).data.tags["checkpoint_dir"] == str(own)  # where the next resume looks
    assert sorted(_history(client, run_id, "val/acc")) == [0, 1, 2, 3]

    # a tag edited to any path: read (nothing there), never created nor written
    crashed, _ = train_run(tmp_path / "second", *SMALL_RUN, "trainer.max_epochs=3", code=CRASH_AT_EPOCH_1)
    assert crashed.returncode != 0
    second = MlflowClient(f"sqlite:///{tmp_path}/second/mlflow.db")
    (run,) = runs_named(second, "delayed_recall")
    elsewhere = tmp_path / "attacker" / "chosen" / "tree"
    second.set_tag(run.info.run_id, "checkpoint_dir", str(elsewhere))
    again = run_command(
        [
            TRAIN,
            f"resume={run.info.run_id}",
            f"tracking.uri=sqlite:///{tmp_path}/second/mlflow.db",
            f"hydra.run.dir={tmp_path}/second/resumed",
        ],
        cwd=tmp_path / "second",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr  # from the checkpoint the run logged
    assert not (tmp_path / "attacker").exists()
    assert (tmp_path / "second" / "resumed" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.integration  # slow: make test-integration
def test_resume_refuses_what_it_cannot_continue_and_leaves_the_run_as_it_was(tmp_path):
    # a run that crashed in its first epoch: it has no checkpoint
    proc, client = train_run(
        tmp_path, *SMALL_RUN, "trainer.max_epochs=3", code=CRASH_AT_EPOCH_1.replace("== 1", "== 0")
    )
    (run,) = runs_named(client, "delayed_recall")
    run_id = run.info.run_id
    assert run.info.status == "FAILED"
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"

    line = one_error_line(resume_run(tmp_path, run_id))
    assert f"{last} is missing" in line and "before its first epoch ended" in line

    line = one_error_line(resume_run(tmp_path, run_id, "model.cell=gru"))
    assert "drop model.cell=gru" in line

    line = one_error_line(resume_run(tmp_path, "0" * 32))
    assert f"resume='{'0' * 32}'" in line and "KILLED or FAILED run" in line

    last.parent.mkdir(parents=True)
    last.write_bytes(b"not a checkpoint")  # as a full disk leaves one
    line = one_error_line(resume_run(tmp_path, run_id))
    assert str(last) in line and "does not" in line

    again = client.get_run(run_id)
    assert again.info.status == "FAILED" and again.data.tags == run.data.tags  # untouched


@contextmanager
def _unwritable(path: Path):
    """`path` made unwritable for real: by its mode, or, for root (whom modes do not stop), by
    the immutable attribute."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if run_command(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root where `chattr +i` is not allowed: nothing here can refuse root a write")
    try:
        yield
    finally:
        run_command(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("fault", ["no server", "unwritable folder", "read-only database", "not a database"])
def test_a_store_that_cannot_be_written_fails_before_training(tmp_path, fault):
    store = tmp_path / "store"
    store.mkdir()
    db = store / "mlflow.db"
    uri = f"sqlite:///{db}"
    args = [*SMALL_RUN, f"hydra.run.dir={tmp_path}/out"]
    if fault == "no server":
        uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    if fault == "read-only database":
        tracking.quiet_store_logs()
        MlflowClient(uri).create_experiment("made")  # a real MLflow store
    if fault == "not a database":
        db.write_bytes(os.urandom(4096))
    before = db.read_bytes() if db.exists() else None

    def attempt():
        return run_command(
            [TRAIN, f"tracking.uri={uri}", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    if fault in ("unwritable folder", "read-only database"):
        with _unwritable(store if fault == "unwritable folder" else db):
            proc = attempt()
    else:
        proc = attempt()
    line = one_error_line(proc)
    assert f"tracking.uri='{uri}'" in line
    expected = {
        "no server": "a tracking server that answers",
        "unwritable folder": "a folder this process can write",
        "read-only database": "readonly database",
        "not a database": "not a database",
    }[fault]
    assert expected in line
    assert not (tmp_path / "out" / "checkpoints").exists()  # no training began
    assert (db.read_bytes() if db.exists() else None) == before  # the store is as it was


def test_secrets_are_masked_in_params_config_and_overrides(tmp_path, monkeypatch):
    # a value read from the environment, and a password in a server URI
    monkeypatch.setenv("RNNEXP_TEST_ARTIFACTS", str(tmp_path / "from-env"))
    proc, client = train_run(tmp_path, *SMALL_RUN, "tracking.artifacts=${oc.env:RNNEXP_TEST_ARTIFACTS}")
    assert proc.returncode == 0, proc.stderr
    (run,) = runs_named(client, "delayed_recall")
    assert run.data.params["tracking.artifacts"] == "***"
    assert run.data.params["tracking.log_model"] == "False"  # from RNNEXP_LOG_MODEL, but a switch tells no secret
    artifacts = tmp_path / "from-env" / run.info.run_id / "artifacts"  # the value itself was used
    assert yaml.safe_load((artifacts / "config.yaml").read_text())["tracking"]["artifacts"] == "***"
    overrides = (artifacts / "overrides.yaml").read_text()
    assert "${oc.env:RNNEXP_TEST_ARTIFACTS}" in overrides and str(tmp_path / "from-env") not in overrides

    cfg = OmegaConf.create(
        {"db": {"uri": "postgresql://ana:hunter2@db.lab/runs", "api_key": "k-123", "Password": "p", "rows": 3}}
    )
    secrets = tracking.secret_keys(cfg)
    assert secrets == {"db.api_key", "db.Password"}
    shown = tracking.masked(OmegaConf.to_container(cfg), secrets)
    assert shown == {"db": {"uri": "postgresql://***@db.lab/runs", "api_key": "***", "Password": "***", "rows": 3}}
    assert (
        tracking.masked_override("tracking.uri=https://ana:hunter2@mlflow.lab") == "tracking.uri=https://***@mlflow.lab"
    )
    assert tracking.masked_override("+hub.token=abc") == "+hub.token=***"
    # a secret is a word of the key's name: not a key that merely holds one (task.tokenizer=bpe)
    for key in ("hf_token", "db_password", "client_secret", "apikey", "AWS_SECRET_ACCESS_KEY", "private_key"):
        assert tracking.masked_override(f"+x.{key}=v") == f"+x.{key}=***", key
    for key in ("tokenizer", "max_tokens", "secretary_count", "passwords_seen_total"):
        assert tracking.masked_override(f"+x.{key}=v") == f"+x.{key}=v", key
    assert not tracking.secret_keys(OmegaConf.create({"task": {"tokenizer": "bpe"}}))


def test_the_logger_writes_each_metric_once_per_step_and_a_resumed_one_from_where_its_run_is(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = BatchedMLFlowLogger(experiment_name="e", tracking_uri=uri)
    logger.log_metrics({"val/acc": 0.5}, step=3)
    logger.log_metrics({"val/acc": 0.5, "train/acc": 0.4}, step=3)  # handed over again: dropped
    logger.log_metrics({"val/acc": 0.6}, step=7)
    logger.flush()
    client = MlflowClient(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(logger.run_id, "val/acc")] == [(3, 0.5), (7, 0.6)]
    assert [m.step for m in client.get_metric_history(logger.run_id, "train/acc")] == [3]
    # the same run resumed, with what its run already has
    resumed = BatchedMLFlowLogger(
        experiment_name="e", tracking_uri=uri, run_id=logger.run_id, logged_through={"val/acc": 7}
    )
    resumed.log_metrics({"val/acc": 0.6, "train/acc": 0.45}, step=7)  # the epoch run again
    resumed.log_metrics({"val/acc": 0.7}, step=11)
    resumed.flush()
    assert [m.step for m in client.get_metric_history(logger.run_id, "val/acc")] == [3, 7, 11]
    assert [m.step for m in client.get_metric_history(logger.run_id, "train/acc")] == [3, 7]
    # what Lightning hands over carries its epoch: logged at step = the epoch, whatever its step
    resumed.log_metrics({"val/loss": 1.5, "epoch": 4.0}, step=99)
    resumed.flush()
    assert [m.step for m in client.get_metric_history(logger.run_id, "val/loss")] == [4]


def test_a_store_lost_mid_run_is_one_line_naming_the_run_and_how_to_resume_it():
    from rnnexp.store import store_failure
    from rnnexp.train import StoreLost

    # what MLflow's HTTP client raises once its retries are spent, the connection error as its cause
    try:
        try:
            raise ConnectionError_(
                "HTTPConnectionPool(host='h', port=5000): Max retries exceeded (Caused by "
                'NewConnectionError("...: [Errno 111] Connection refused"))'
            )
        except ConnectionError_ as cause:
            raise MlflowException(
                f"API request to http://user:pw@h:5000/api/2.0/mlflow/runs/log-batch failed with exception {cause}"
            ) from cause
    except MlflowException as err:
        assert store_failure(err) == "Connection refused"
    assert store_failure(RuntimeError("injected crash at epoch 1")) is None  # the run's own error: no store failure
    for closed, left in ((None, "is left RUNNING there"), ("FAILED", "is FAILED there")):
        message = str(StoreLost(Store("http://user:pw@h:5000"), "abc123", "Connection refused", closed=closed))
        assert "\n" not in message and "pw" not in message  # the password masked
        assert message.startswith("the tracking server http://***@h:5000 failed mid-run (Connection refused)")
        assert (
            f"run abc123 {left}" in message and "rnnexp-train resume=abc123 tracking.uri=http://***@h:5000" in message
        )


# records the run's status as testing starts (in RNNEXP_TEST_STATUS), then dies there if told to
STATUS_AT_TEST = """
import os
import signal
import subprocess
import sys
from pathlib import Path
from mlflow.tracking import MlflowClient
import rnnexp.module
def on_test_start(self):
    logger = self.trainer.logger
    status = MlflowClient(logger._tracking_uri).get_run(logger.run_id).info.status
    Path(os.environ["RNNEXP_TEST_STATUS"]).write_text(status)
    if os.environ.get("RNNEXP_TEST_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
rnnexp.module.SequenceModule.on_test_start = on_test_start
from rnnexp.train import main
sys.argv = ["rnnexp-train", *sys.argv[1:]]
main()
"""


@pytest.mark.integration  # slow: make test-integration
def test_a_run_is_running_while_it_is_tested_and_a_kill_there_leaves_it_resumable(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNEXP_TEST_STATUS", str(tmp_path / "status"))
    monkeypatch.setenv("RNNEXP_TEST_KILL", "1")
    proc, client = train_run(tmp_path, *SMALL_RUN, code=STATUS_AT_TEST)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "status").read_text() == "RUNNING"  # not FINISHED once fit ends
    (run,) = runs_named(client, "delayed_recall")
    assert run.info.status == "RUNNING" and "test/acc" not in run.data.metrics

    resumed = resume_run(tmp_path, run.info.run_id)  # marks the dead process's run KILLED, then goes on
    assert resumed.returncode == 0, resumed.stderr
    again = client.get_run(run.info.run_id)
    assert again.info.status == "FINISHED" and "test/acc" in again.data.metrics
    assert sorted(_history(client, run.info.run_id, "val/acc")) == [0, 1]  # the epochs, once each


@pytest.mark.integration  # slow: make test-integration
def test_last_ckpt_is_the_last_epoch_so_a_resumed_run_repeats_none(tmp_path):
    import torch

    crash = CRASH_AT_EPOCH_1.replace("== 1", "== 2").replace("epoch 1", "epoch 2")
    # no learning: every epoch scores as the first, which stays the best checkpoint
    proc, client = train_run(tmp_path, *SMALL_RUN, "trainer.max_epochs=4", "optim.lr=1e-8", code=crash)
    assert proc.returncode != 0
    (run,) = runs_named(client, "delayed_recall")
    folder = tmp_path / "out" / "checkpoints"
    (best,) = [p.name for p in folder.glob("epoch=*.ckpt")]
    last = folder / "last.ckpt"
    assert best.startswith("epoch=0-") and not last.is_symlink()
    assert torch.load(last, weights_only=True)["epoch"] == 1  # epochs 0 and 1 done: resume starts at 2

    resumed = resume_run(tmp_path, run.info.run_id)
    assert resumed.returncode == 0, resumed.stderr
    for key in ("val/acc", "train/loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == [0, 1, 2, 3]  # step = epoch, none logged twice


def test_gpu_runs_keep_cublas_deterministic_and_their_cuda_random_state(compose_train, monkeypatch):
    import torch

    from rnnexp import config
    from rnnexp.module import SequenceModule
    from rnnexp.train import build

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cfg = compose_train(
        "trainer.accelerator=auto",
        "task.length=10",
        "task.distance=3",
        "task.train_size=64",
        "task.val_size=16",
        "task.test_size=16",
    )
    build(cfg, config.check(cfg))  # before CUDA starts: deterministic cuBLAS needs a fixed workspace
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"

    # the CUDA generators' state goes into each checkpoint and comes back (no GPU here: the calls are stood in for)
    state, restored = [torch.tensor([1, 2, 3], dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    checkpoint: dict = {}
    resuming = types.SimpleNamespace(_trainer=object())  # a module a Trainer restores, to go on training
    SequenceModule.on_save_checkpoint(resuming, checkpoint)  # type: ignore[arg-type]
    SequenceModule.on_load_checkpoint(resuming, checkpoint)  # type: ignore[arg-type]
    assert checkpoint["cuda_rng_state"] is state and restored == [state]
    SequenceModule.on_load_checkpoint(types.SimpleNamespace(_trainer=None), checkpoint)  # type: ignore[arg-type]
    assert restored == [state]  # load_from_checkpoint, a model to use: the caller's streams left alone
