"""Stores that do not answer, answer but are not MLflow, or fail in the middle of a run, and the
credentials in their URIs: each provoked for real (a closed port, a web server that is not
MLflow, a store deleted under a running run), with what must hold: one line within seconds,
no credential anywhere, the checkpoint kept and the command that resumes."""

from __future__ import annotations

import http.server
import io
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SMALL_RUN, free_port, run_command
from tests.test_cli import TRAIN

# these look for a secret in every file a command leaves, and check that none made a store
pytestmark = pytest.mark.new_store

SECRET = "NormalPwQ7"


def _nothing_holds(folder: Path, *secrets: str) -> None:
    """No file under `folder`, and no file or folder name, holds any of `secrets`."""
    for path in folder.rglob("*"):
        for secret in secrets:
            assert secret not in str(path), path
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path


def _train(tmp_path: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    # the timeout is the test: a store that does not answer used to hold a sweep for 4 minutes
    return run_command([TRAIN, *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("rnnexp-train: error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
@pytest.mark.parametrize(
    "uri,secrets,expected",
    [
        ("http://alice:{SECRET}@127.0.0.1:{port}", [SECRET], "a tracking server that answers within 5 s"),
        # the database's own error names the URI: masked there too
        ("postgresql://alice:{SECRET}@127.0.0.1:{port}/runs", [SECRET], "a database server that answers within 5 s"),
        # a password with an unencoded @: its tail was shown as the host
        ("http://alice:S3c@Rt9xq@127.0.0.1:{port}", ["S3c", "Rt9xq"], "percent-encoded"),
    ],
)
def test_a_store_that_does_not_answer_is_one_line_in_seconds_and_no_credential_shows(
    tmp_path, sweep, uri, secrets, expected
):
    uri = uri.format(SECRET=SECRET, port=free_port())  # a closed port: nothing listens there
    proc = _train(tmp_path, *(["-m"] if sweep else []), "seed=1", "trainer=smoke", f"tracking.uri={uri}")
    line = _one_line(proc)
    scheme = uri.split("://")[0]
    # a server's credentials go to MLflow's variables, out of the URI; a database's are masked
    assert any(f"tracking.uri='{scheme}://{userinfo}127.0.0.1:" in line for userinfo in ("", "***@")), line
    assert expected in line, line
    for secret in secrets:
        assert secret not in proc.stdout + proc.stderr
    _nothing_holds(tmp_path, *secrets)  # outputs/ and multirun/ included
    assert not (tmp_path / "multirun").exists() or not list((tmp_path / "multirun").rglob("multirun.yaml"))


@contextmanager
def _web_server(status: int, body: bytes, content_type: str = "text/html"):
    """A web server on a free localhost port answering every GET with `status` and `body`."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "status,body,expected",
    [
        (404, b"<html>Not Found</html>", "its REST API answered HTTP 404"),  # passed, then a 56-line traceback
        (200, b"<html>a login form</html>", "not with MLflow's JSON"),
        (401, b"", "a tracking server that accepts these credentials (HTTP 401"),
    ],
)
def test_a_server_that_answers_but_not_as_mlflow_is_one_line_before_any_run(tmp_path, status, body, expected):
    with _web_server(status, body) as base:
        for sweep in ([], ["-m"]):
            line = _one_line(_train(tmp_path, *sweep, "trainer=smoke", f"tracking.uri={base}"))
            assert expected in line, line


def test_hydras_report_of_a_failed_job_is_masked_like_everything_on_the_console():
    from rnnexp.train import _MaskedStream

    console = io.StringIO()
    stream = _MaskedStream(console)
    # as Hydra writes it (hydra/core/utils.py), past logging: the overrides' repr, `:` escaped
    overrides = ["seed=1", f"tracking.uri=http\\://alice\\:{SECRET}@127.0.0.1\\:5999"]
    stream.write(f"Error executing job with overrides: {overrides}\n")
    stream.write("or https://alice:S3c@Rt9xq@host:5000/x?y=1 \n")
    shown = console.getvalue()
    assert SECRET not in shown and "S3c" not in shown and "Rt9xq" not in shown, shown
    assert "'tracking.uri=http\\\\://***@127.0.0.1\\\\:5999'" in shown and "https://***@host:5000/x?y=1" in shown


# a run whose SQLite store is deleted as its second epoch starts, once it has a checkpoint
DELETE_STORE_AT_EPOCH_1 = """
import os
import sys
import rnnexp.module
def fault(self):
    if self.current_epoch == 1:
        os.remove(os.environ["STORE_FILE"])
rnnexp.module.SequenceModule.on_train_epoch_start = fault
from rnnexp.train import main
sys.argv = ["rnnexp-train", *sys.argv[1:]]
main()
"""


def test_a_store_deleted_mid_run_is_one_line_with_the_checkpoint_kept_and_nothing_written_to_it(tmp_path):
    """SQLite writes on into a deleted file it holds open: every metric after would vanish, the
    run would even end FINISHED there. It stops at the next write, in one line."""
    store = tmp_path / "mlflow.db"
    proc = run_command(
        [
            sys.executable,
            "-c",
            DELETE_STORE_AT_EPOCH_1,
            f"tracking.uri=sqlite:///{store}",
            f"hydra.run.dir={tmp_path}/out",
            *SMALL_RUN,
            "trainer.max_epochs=4",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "STORE_FILE": str(store)},
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"rnnexp-train: error: the tracking store sqlite:///{store} failed mid-run ({store} was deleted); run "
    ), proc.stderr[-3000:]
    assert "is left RUNNING there, its checkpoints kept" in last and "resume=" in last
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()
    assert not store.exists()  # nothing made a new, empty store in its place
    assert "Traceback" not in proc.stderr


def test_a_resumed_sweep_is_reopened_once_and_a_finished_one_never(tmp_path):
    from rnnexp.config import ConfigError
    from rnnexp.store import Store
    from rnnexp.sweep import _reopen_parent

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = Store.parse(uri).client()
    experiment = client.create_experiment("e")
    parent = client.create_run(experiment, tags={"sweep": "true"}).info.run_id
    client.set_terminated(parent, "FAILED")
    assert _reopen_parent(client, Store.parse(uri), parent).info.status == "RUNNING"  # this process now holds it
    with pytest.raises(ConfigError, match="this one is RUNNING in process .*one resume at a time"):
        _reopen_parent(client, Store.parse(uri), parent)  # a second resume, while the first runs
    client.set_terminated(parent, "FINISHED")
    with pytest.raises(ConfigError, match="this one FINISHED: every job ran"):
        _reopen_parent(client, Store.parse(uri), parent)
    run = client.create_run(experiment).info.run_id
    client.set_terminated(run, "FAILED")
    with pytest.raises(ConfigError, match="no sweep's parent"):
        _reopen_parent(client, Store.parse(uri), run)
    assert MlflowClient(uri).get_run(run).info.status == "FAILED"


@pytest.mark.parametrize(
    "host,options,warned",
    [
        ("0.0.0.0", "", True),  # it served every run to the network without a word
        ("0.0.0.0", "--app-name basic-auth", False),
        ("127.0.0.1", "", False),
    ],
)
def test_make_server_on_a_public_address_warns_that_it_has_no_authentication(tmp_path, host, options, warned):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").touch()  # set up already
    fake = venv / "bin" / "mlflow"  # records how it was started, instead of serving
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\n')
    fake.chmod(0o755)
    proc = run_command(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(Path(__file__).resolve().parent.parent),
            "server",
            f"VENV={venv}",
            f"HOST={host}",
            f"SERVER_ARGS={options}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "RNNEXP_SERVER_DB": "postgresql://u:p@db/runs"},
    )
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == (1 if warned else 0), proc.stderr
    if warned:
        assert (
            "no authentication" in warning[0]
            and "--app-name basic-auth" in warning[0]
            and "reverse proxy" in warning[0]
        )
    args = (tmp_path / "args").read_text().split()  # the server got the address and the options
    assert args[args.index("--host") + 1] == host and " ".join(args).endswith(options)


@pytest.mark.parametrize(
    "uri,expected_uri,env",
    [
        (
            "HTTP://alice:pw@h:5000",
            "http://h:5000",
            {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "pw"},
        ),
        ("https://Tok%2Fen@h", "https://h", {"MLFLOW_TRACKING_TOKEN": "Tok/en"}),  # a token alone: a bearer
        ("postgresql+psycopg://u:p@db/runs", "postgresql+psycopg://u:p@db/runs", {}),  # a driver named: SQLAlchemy's
    ],
)
def test_credentials_of_a_server_uri_go_to_mlflows_variables(monkeypatch, uri, expected_uri, env):
    import os

    from rnnexp.config import TrackingConfig

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    tracking = TrackingConfig(uri=uri)
    tracking.check()
    assert tracking.uri == expected_uri and dict(tracking.store.credentials) == env
    assert not set(env) & set(os.environ)  # parsing hands nothing over
    tracking.store.hand_over_credentials()  # the command does, once
    for key, value in env.items():
        assert os.environ[key] == value


@pytest.mark.parametrize(
    "override,hidden",
    [
        ("tracking.uri=http://alice:PW secret@127.0.0.1:1", "secret"),  # a space: the mask used to stop there
        ("tracking.experiment=exp_http://bob:PWsecret2@x", "PWsecret2"),  # stored in plain text: refused
    ],
)
def test_a_credential_in_an_unusual_place_is_refused_without_being_shown(tmp_path, override, hidden):
    line = _one_line(
        _train(
            tmp_path,
            "trainer=smoke",
            override,
            f"tracking.uri=sqlite:///{tmp_path}/m.db" if override.startswith("tracking.experiment") else "seed=0",
        )
    )
    assert hidden not in line and "***@" in line, line
    _nothing_holds(tmp_path, hidden)


def test_a_sweep_over_stores_is_one_line_before_any_job(tmp_path):
    """Its parent run went to one store and its jobs to others, each checked only as it started."""
    line = _one_line(
        _train(
            tmp_path,
            "-m",
            "trainer=smoke",
            f"tracking.uri=sqlite:///{tmp_path}/a.db,http://alice:{SECRET}@127.0.0.1:{free_port()}",
        )
    )
    assert line.startswith("rnnexp-train: error: tracking.uri=") and "one value in a sweep" in line, line
    assert SECRET not in line and not list(tmp_path.glob("*.db"))


def test_a_data_path_read_from_the_environment_is_stored_and_shown_nowhere(tmp_path):
    """`task.path=${oc.env:...}`: where the data are may itself be a secret (a bucket's key in
    the path, a user's name): it is not logged, shown or written, only read."""
    import csv
    import os

    hidden = tmp_path / "tok-Q9xz7Secret"
    hidden.mkdir()
    with open(hidden / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([f"a {'good' if i % 2 else 'bad'} film number {i}", i % 2] for i in range(200))
    store = tmp_path / "mlflow.db"
    proc = run_command(
        [
            TRAIN,
            "task=text",
            "model=rnn_final",
            "task.path=${oc.env:RNNEXP_TEST_DATA}",
            f"task.cache_dir={tmp_path / 'cache'}",
            "trainer=smoke",
            "tracking.log_model=false",
            f"tracking.uri=sqlite:///{store}",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RNNEXP_TEST_DATA": str(hidden / "reviews.csv")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Q9xz7Secret" not in proc.stdout + proc.stderr
    assert b"Q9xz7Secret" not in store.read_bytes()  # params, tags, dataset inputs, run name
    for path in tmp_path.rglob("*"):  # the run's folder, the logged checkpoints, the tokenised cache
        if hidden not in path.parents and path != hidden:
            assert "Q9xz7Secret" not in str(path) and (not path.is_file() or b"Q9xz7Secret" not in path.read_bytes()), (
                path
            )
    (run,) = MlflowClient(f"sqlite:///{store}").search_runs(["1"])
    assert run.data.params["task.path"] == "***" and run.info.status == "FINISHED"
