"""End to end: `rnnexp-train` in a subprocess, tracked in a temporary SQLite store."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from rnnexp import config
from rnnexp.store import Store
from tests.conftest import ROOT, SMALL_RUN, TRAIN, run_command, runs_named, start_command, train_run


def test_a_run_is_tracked_with_config_tags_metrics_and_artifacts(tmp_path):
    # an artifact folder whose path is longer than the 250 characters Lightning would keep
    artifacts = tmp_path / ("a" * 100) / ("b" * 100) / ("c" * 60)
    proc, client = train_run(tmp_path, *SMALL_RUN, "model.cell=gru", f"tracking.artifacts={artifacts}")
    assert proc.returncode == 0, proc.stderr
    (run,) = runs_named(client, "delayed_recall")
    for noise in ("GPU available", "TPU available", "Restoring states", "Loaded model weights", "Tip"):
        assert noise not in proc.stdout + proc.stderr  # what the run's summary says, or nothing on a CPU

    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.cell"] == "gru" and params["task.distance"] == "3" and params["seed"] == "0"
    assert params["trainer.max_epochs"] == "2" and params["optim.lr"] == "0.003"
    assert params["tracking.artifacts"] == str(artifacts)  # whole, not cut at 250 characters

    tags = run.data.tags
    assert {k: tags[k] for k in ("pattern", "model", "cell", "task", "distance", "seed")} == {
        "pattern": "1",
        "model": "rnn_hidden",
        "cell": "gru",
        "task": "delayed_recall",
        "distance": "3",
        "seed": "0",
    }
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", tags["git_commit"])
    assert tags["git_dirty"] in ("true", "false", "unknown")
    import torch

    from rnnexp.tracking import this_cpu

    # the CPU, as its kernels round floats their own way: e.g. "AVX512, GenuineIntel family 6 model 167"
    kernels, _, processor = tags["cpu"].partition(", ")
    assert tags["cpu"] == this_cpu() and kernels == torch.backends.cpu.get_cpu_capability()
    assert processor.strip() and processor != "unknown"
    assert tags["metric"] == "acc" and "mlflow.parentRunId" not in tags  # a single run has no parent
    assert tags["stopped_by"] == "budget"  # no early stopping: it trained for trainer.max_epochs

    metrics = run.data.metrics
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "n_params"):
        assert key in metrics
    assert metrics["chance_level"] == pytest.approx(1 / 8)
    assert metrics["wall_time_s"] > 0 and metrics["n_params"] > 1000
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2  # one per epoch

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml"} <= names
    (best,) = names - {"config.yaml", "overrides.yaml", "last"}  # the best checkpoint, and the last
    for ckpt_dir in (best, "last"):
        assert any(a.path.endswith(".ckpt") for a in client.list_artifacts(run.info.run_id, ckpt_dir))
    logged = yaml.safe_load((artifacts / run.info.run_id / "artifacts" / "config.yaml").read_text())
    assert logged["model"]["cell"] == "gru" and logged["task"]["distance"] == 3
    overrides = yaml.safe_load((artifacts / run.info.run_id / "artifacts" / "overrides.yaml").read_text())
    assert "model.cell=gru" in overrides

    assert "test/acc" in proc.stdout and run.info.run_id in proc.stdout and "make ui" in proc.stdout


INJECTED = """
import sys
import time
import rnnexp.module
def boom(self, batch, batch_idx):
    raise RuntimeError("injected failure in training_step")
rnnexp.module.SequenceModule.training_step = boom
from rnnexp.train import main
sys.argv = ["rnnexp-train", *sys.argv[1:]]
main()
"""


def test_step_metrics_log_the_training_loss_every_n_steps(tmp_path):
    # trainer=smoke: 4 steps an epoch, 2 epochs; every 3rd step's loss is logged, at Lightning's step numbers
    proc, client = train_run(tmp_path, *SMALL_RUN, "tracking.step_metrics=true", "trainer.log_every_n_steps=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_named(client, "delayed_recall")
    history = client.get_metric_history(run.info.run_id, "train/loss_step")
    assert [m.step for m in history] == [2, 5]
    assert all(0 < m.value < 10 for m in history)  # a cross-entropy over 8 symbols, early in training
    # the epoch metrics at step = the epoch: the UI's charts read in epochs
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == [0, 1]


def test_a_run_that_raises_ends_failed_with_the_error(tmp_path):
    proc, client = train_run(tmp_path, *SMALL_RUN, code=INJECTED)
    assert proc.returncode != 0
    (run,) = runs_named(client, "delayed_recall")
    assert run.info.status == "FAILED"
    assert "injected failure in training_step" in run.data.tags["error"]


@pytest.mark.parametrize(
    "override,expected",
    [
        ("model=rnn_final", ["model='rnn_final'", "task=delayed_recall", "rnn_hidden"]),
        ("model.hidden_size=0", ["model.hidden_size=0", ">= 1"]),
        ("model.cel=gru", ["model.cel", "allowed keys"]),
        ("model=transformer", ["model=transformer", "rnn_hidden", "mlp_bag"]),
        ("task.where=source=imdb", ["the override 'task.where=source=imdb' does not parse", "mismatched input '='"]),
        pytest.param(
            "hydra/launcher=ray",
            ["hydra/launcher=ray", "joblib", "pip install -e '.[ray]'"],
            marks=pytest.mark.skipif(
                importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None,
                reason="the ray extra is installed here",
            ),
        ),
        ("task.length=10", ["task.distance=15", "task.length (10)"]),  # the default distance does not fit
        ("trainer.select_on=accuracy", ["trainer.select_on", "accuracy", "metric", "loss"]),
        ("trainer.early_stopping.patience=0", ["trainer.early_stopping.patience=0", ">= 1"]),
        *[
            pytest.param(
                f"trainer.accelerator={device}",
                [f"trainer.accelerator='{device}' is not allowed: cpu (or auto): torch sees no CUDA GPU"],
                marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
                id=f"{device} on a machine without one",
            )
            for device in ("gpu", "cuda")
        ],
    ],
)
def test_a_bad_config_is_one_line_a_nonzero_exit_and_no_run(tmp_path, override, expected):
    proc, client = train_run(tmp_path, override)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnexp-train: error: "), proc.stderr
    for part in expected:
        assert part in lines[0]
    assert not (tmp_path / "mlflow.db").exists() or not runs_named(client, "delayed_recall")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_sweep_asking_for_a_gpu_the_machine_lacks_is_one_line_before_its_parent_run(tmp_path):
    proc = run_command(
        [
            TRAIN,
            "-m",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.sweep.dir={tmp_path}/m",
            "trainer.accelerator=gpu",
            "seed=0,1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "rnnexp-train: error: trainer.accelerator='gpu' is not allowed: cpu (or auto): torch sees no CUDA GPU "
        "on this machine"
    ]
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(
        f"sqlite:///{tmp_path}/mlflow.db"
    ).search_experiments(filter_string="name = 'delayed_recall'")


@pytest.mark.parametrize("argv0", [[TRAIN], [sys.executable, "-m", "rnnexp.train"]], ids=["script", "module"])
def test_help_lists_the_groups_and_patterns(argv0):
    proc = run_command(argv0 + ["--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0
    for part in (
        "model: " + ", ".join(sorted(config.MODELS)),
        "task: " + ", ".join(sorted(config.TASKS)),
        "pattern 2",
        "fig. 10.4",
    ):
        assert part in proc.stdout
    assert "schema" not in proc.stdout  # the typed schemas behind the options are not options to choose


@pytest.mark.parametrize("extra", [[], ["model=mlp_window", "task.distance=4"], ["--resolve"]], ids=str)
def test_help_is_hydras_own_text_without_composing_every_group_of_hydras(extra, capsys, monkeypatch):
    """rnnexp prints `--help` itself (Hydra's takes about a second to list groups the template
    hides): the very text Hydra prints for the same command line."""
    from rnnexp import train

    argv = ["--help", *extra]
    monkeypatch.setattr(sys, "argv", ["rnnexp-train", *argv])
    train.main()
    ours = capsys.readouterr().out
    monkeypatch.setattr(train, "help_text", lambda *_: None)  # Hydra's own, which exits 0 when done
    with pytest.raises(SystemExit, match="0"):
        train.main()
    assert ours == capsys.readouterr().out and "== Config groups" in ours


def _signal_during_training(tmp_path: Path, sig: int):
    """Start a long training run, wait until it has logged an epoch, send `sig`; -> (exit status, run)."""
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = Store.parse(store).client()  # the store made first: a client polling it would race to create it
    proc = start_command(
        [
            TRAIN,
            f"tracking.uri={store}",
            f"hydra.run.dir={tmp_path}/out",
            "trainer.max_epochs=1000",
            "trainer.enable_progress_bar=false",
            "task.train_size=512",
            "task.val_size=64",
            "task.test_size=64",
        ],
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # wait until training is under way: an epoch is logged
            runs = runs_named(client, "delayed_recall")
            if runs and client.get_metric_history(runs[0].info.run_id, "val/acc"):
                break
            time.sleep(0.5)
        else:
            pytest.fail("training never logged an epoch")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    (run,) = runs_named(client, "delayed_recall")
    # what to do next, after Lightning's own notice (a SIGKILLed process says nothing)
    assert (
        sig == signal.SIGKILL
        # the command by its path: PATH here does not hold the virtual environment's bin
        or f"rnnexp-train: run {run.info.run_id} KILLED; continue it with `{TRAIN} resume={run.info.run_id} "
        f"tracking.uri={store}`"
        in err
    ), err[-2000:]
    return proc.returncode, run


def test_ctrl_c_during_training_ends_the_run_killed(tmp_path):
    code, run = _signal_during_training(tmp_path, signal.SIGINT)
    assert code != 0
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "interrupted"


def test_a_run_on_real_data_records_the_dataset_as_an_input(tmp_path):
    proc, client = train_run(tmp_path, "task=digits", "model=rnn_final", "trainer=smoke")
    assert proc.returncode == 0, proc.stderr
    (run,) = runs_named(client, "digits")
    (record,) = run.inputs.dataset_inputs
    assert record.dataset.name == "sklearn-digits" and len(record.dataset.digest) == 16
    assert json.loads(record.dataset.profile) == {"num_rows": 1797}
    assert record.dataset.source_type == "code"  # sklearn's own data: the function that loads it
    assert json.loads(record.dataset.source) == {"tags": {"mlflow.source.name": "sklearn.datasets.load_digits"}}
    assert {t.key: t.value for t in record.tags} == {"mlflow.data.context": "train"}
    assert run.data.tags["dataset_digest"] == record.dataset.digest


def test_a_dataset_input_names_where_its_data_come_from_as_mlflow_data_describes_it(tmp_path):
    from rnnexp.store import Store
    from rnnexp.tasks.base import DataSource
    from rnnexp.tracking import log_dataset

    client = Store.parse(f"sqlite:///{tmp_path}/mlflow.db").client()
    experiment = client.create_experiment("data")
    sources = {
        "hub": (DataSource("imdb", "hf://datasets/imdb", "d" * 16, 10), "hugging_face", "path", "imdb"),
        "file": (DataSource("r.csv", "/data/r.csv", "e" * 16, 5), "local", "uri", "/data/r.csv"),
        "secret": (DataSource("x.csv", "/secret/x.csv", "f" * 16, 3), "local", "uri", "***"),
    }
    for name, (source, kind, key, value) in sources.items():
        run_id = client.create_run(experiment).info.run_id
        log_dataset(client, run_id, source, secret=name == "secret")
        (given,) = client.get_run(run_id).inputs.dataset_inputs
        assert given.dataset.source_type == kind and json.loads(given.dataset.source)[key] == value, name
        assert given.dataset.digest == source.digest and json.loads(given.dataset.profile) == {"num_rows": source.rows}
    assert given.dataset.name == "***" and "/secret" not in str(given)  # where it is stays out of the store


def test_a_diverging_run_stops_failed_naming_the_epoch_and_step(tmp_path):
    # plain SGD at a huge learning rate without clipping: the adding loss overflows in steps
    proc, client = train_run(
        tmp_path,
        "task=adding",
        "model=mlp_bag",
        "model.hidden_size=256",
        "optim.optimizer=sgd",
        "optim.lr=10",
        "trainer.gradient_clip_val=null",
        "trainer=smoke",
        "task.length=10",
        "task.distance=3",
    )
    assert proc.returncode != 0
    assert "the training loss is inf at epoch 0, step 2" in proc.stderr
    (run,) = runs_named(client, "adding")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("FloatingPointError: the training loss is inf at epoch 0, step 2")


def test_sigterm_during_training_ends_the_run_killed(tmp_path):
    code, run = _signal_during_training(tmp_path, signal.SIGTERM)  # what a scheduler or `kill` sends
    assert code == 128 + signal.SIGTERM
    assert run.info.status == "KILLED" and run.data.tags["error"] == "interrupted"


def test_the_same_config_and_seed_give_identical_metric_histories(tmp_path):
    histories = []
    for attempt in ("a", "b"):
        proc, client = train_run(tmp_path / attempt, *SMALL_RUN, "model=rnn_output", "seed=3")
        assert proc.returncode == 0, proc.stderr
        (run,) = runs_named(client, "delayed_recall")
        keys = [k for k in run.data.metrics if k != "wall_time_s"]
        histories.append({k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in keys})
    assert histories[0] == histories[1] and len(histories[0]["val/acc"]) == 2


def test_make_stale_marks_a_run_whose_process_was_killed_and_spares_a_live_one(tmp_path):
    code, dead = _signal_during_training(tmp_path, signal.SIGKILL)  # no cleanup can run
    assert code == -signal.SIGKILL
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=store)
    assert client.get_run(dead.info.run_id).info.status == "RUNNING"  # what MLflow alone leaves
    live = client.create_run(dead.info.experiment_id, tags={"host": dead.data.tags["host"], "pid": str(os.getpid())})

    proc = run_command(
        [sys.executable, "-m", "rnnexp.tracking", "--stale", "--uri", store],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("1 stale run(s) marked KILLED")
    marked = client.get_run(dead.info.run_id)
    assert marked.info.status == "KILLED" and "ended without closing the run" in marked.data.tags["error"]
    assert client.get_run(live.info.run_id).info.status == "RUNNING"  # its process (this one) is alive


@pytest.mark.integration  # slow: make test-integration
def test_ddp_on_two_cpu_processes_logs_one_run_and_learns_as_one_process_does(tmp_path):
    # each of the 2 processes takes half of every epoch's batches: twice the epochs, the same steps
    base = [
        "task.length=10",
        "task.distance=3",
        "task.train_size=1024",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    one, client = train_run(tmp_path / "one", *base, "trainer.max_epochs=4")
    two, client2 = train_run(tmp_path / "two", *base, "trainer=ddp", "trainer.max_epochs=8")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    (single,) = runs_named(client, "delayed_recall")
    (parallel,) = runs_named(client2, "delayed_recall")  # one run for both processes, logged from rank 0
    assert parallel.info.status == "FINISHED" and parallel.data.params["trainer.strategy"] == "ddp_spawn"
    steps = [m.step for m in client2.get_metric_history(parallel.info.run_id, "val/acc")]
    assert steps == list(range(8))  # once per epoch, at step = the epoch, no duplicates
    assert parallel.data.metrics["epochs_trained"] == 8 and parallel.data.tags["stopped_by"] == "budget"
    a, b = single.data.metrics["test/acc"], parallel.data.metrics["test/acc"]
    assert a > 0.9 and abs(a - b) < 0.05, (a, b)
    assert "Traceback" not in two.stderr


@pytest.mark.parametrize(
    "target", [["stale"], ["ui"], ["report", "EXP=default"], ["reproduce-run", "RUN=abc"], ["tune-lr", "EXP=default"]]
)
def test_the_make_targets_that_read_a_store_take_its_uri(target):
    # a dry run (make -n) prints the commands: each passes the store given as URI=, not the default
    proc = run_command(
        ["make", "-n", "--no-print-directory", *target, "URI=sqlite:////tmp/other.db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    command = proc.stdout.strip().splitlines()[-1]
    assert '"sqlite:////tmp/other.db"' in command and "sqlite:///mlflow.db" not in command, command


def test_pattern_2s_checkpoint_is_chosen_on_its_teacher_forced_validation_score(tmp_path, compose_train):
    from hydra.utils import instantiate

    from rnnexp.train import monitor

    for model, expected in (("rnn_output", "val/acc_tf"), ("rnn_hidden", "val/acc"), ("mlp_window", "val/acc")):
        cfg = compose_train(f"model={model}")
        assert monitor(cfg, instantiate(cfg.task, seed=0)) == (expected, "max")
        cfg = compose_train(f"model={model}", "trainer=converge")  # on the loss: the lowest
        assert monitor(cfg, instantiate(cfg.task, seed=0)) == (expected.replace("acc", "loss"), "min")
    proc, client = train_run(tmp_path, *SMALL_RUN, "trainer.max_epochs=3", "model=rnn_output")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = runs_named(client, "delayed_recall")
    teacher_forced = [m.value for m in client.get_metric_history(run.info.run_id, "val/acc_tf")]
    assert len(teacher_forced) == 3 and float(run.data.tags["best_val"]) == max(teacher_forced)
    assert (run.data.tags["monitor"], run.data.tags["monitor_mode"]) == ("val/acc_tf", "max")


def test_the_plateau_trainer_stops_by_plateau_on_an_easy_task_and_by_budget_at_a_tiny_ceiling(tmp_path):
    easy = [
        "trainer=converge",
        "trainer.early_stopping.patience=3",
        "task=running_parity",
        "task.length=12",
        "task.train_size=512",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    proc, client = train_run(tmp_path / "plateau", *easy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = runs_named(client, "running_parity")
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "val/loss")]
    epochs = run.data.metrics["epochs_trained"]
    assert run.data.tags["stopped_by"] == "plateau" and epochs == len(losses) < 500
    assert run.data.metrics["test/acc"] > 0.95 and float(run.data.tags["best_val"]) == min(losses)
    # EarlyStopping's rule: the last epoch is `patience` after the last one better by > min_delta
    best, last_better = float("inf"), 0
    for epoch, loss in enumerate(losses):
        if loss < best - 1e-4:
            best, last_better = loss, epoch
    assert len(losses) - 1 == last_better + 3
    assert "stopped by plateau: val/loss not better by more than 0.0001 in 3 epochs" in proc.stdout

    proc, client = train_run(tmp_path / "budget", *easy, "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = runs_named(client, "running_parity")
    assert run.data.tags["stopped_by"] == "budget" and run.data.metrics["epochs_trained"] == 2
    assert "stopped by budget: trainer.max_epochs reached" in proc.stdout


# a thread still working when the program's last line has run: the interpreter waits for it
THREAD_OUTLIVING_MAIN = (
    "import threading, time; threading.Thread(target=lambda: (time.sleep(0.3), print('late'))).start()"
)


@pytest.mark.parametrize(
    "command, code",
    [
        ([TRAIN, "task.distance=-1"], 2),
        ([TRAIN, "trainer=nope"], 2),
        ([TRAIN, "model.cell=gru", "model=mlp_bag"], 2),
        ([sys.executable, "-m", "rnnexp.evaluation", "--run", "x", "--uri", "sqlite:///none.db"], 2),
        ([sys.executable, "-m", "rnnexp.reproduce"], 2),
        ([sys.executable, "-m", "rnnexp.report", "--experiment"], 2),
        ([sys.executable, "-c", "import sys; print(sys.argv); sys.exit(3)", "a=1"], 3),
        ([sys.executable, "-c", "import sys; print(sys.argv); raise KeyboardInterrupt"], -2),
        ([sys.executable, "-c", "import sys; print(-2); sys.exit(-2)"], 254),
        ([sys.executable, "-c", "import sys; print(2**40); sys.exit(2**40)"], 0),
        ([sys.executable, "-c", "import logging; logging.getLogger('x').warning('no handler: stderr')"], 0),
        ([sys.executable, "-c", THREAD_OUTLIVING_MAIN], 0),
        ([sys.executable, str(ROOT / "experiments/throughput/data.py"), "--n", "0x"], 2),
    ],
)
def test_a_run_forked_by_the_tests_is_what_the_console_script_gives(tmp_path, command, code):
    # tests/conftest.py's run_command forks this process instead of paying again for the imports
    forked = run_command(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    real = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert forked.returncode == real.returncode == code
    assert (forked.stdout, forked.stderr) == (real.stdout, real.stderr) and (forked.stderr + forked.stdout).strip()


def test_a_run_is_dirty_for_changes_to_the_code_not_for_a_report_folder_beside_it(tmp_path):
    from rnnexp.tracking import git_state

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "rnnexp").mkdir()
    (tmp_path / "rnnexp" / "model.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("notes\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code")
    where = tmp_path / "rnnexp"
    assert git_state(where)[1] is False
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "results.md").write_text("a table\n")  # what `--out report` writes
    (tmp_path / "README.md").write_text("more notes\n")
    assert git_state(where)[1] is False
    (tmp_path / "rnnexp" / "my_model.py").write_text("y = 2\n")  # a model added, not committed
    assert git_state(where)[1] is True
    (tmp_path / "rnnexp" / "my_model.py").unlink()
    (tmp_path / "rnnexp" / "model.py").write_text("x = 2\n")
    assert git_state(where)[1] is True
    assert git_state(tmp_path.parent / "elsewhere-not-a-repo") == ("unknown", None)


def test_a_hint_names_a_command_as_it_can_be_typed_here(monkeypatch):
    from rnnexp.tracking import command

    monkeypatch.setattr(sys, "argv", [TRAIN])
    monkeypatch.setenv("PATH", f"{Path(TRAIN).parent}:/usr/bin:/bin")  # the venv activated
    assert command("rnnexp-report") == "rnnexp-report"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not activated: the path, from the project's folder
    monkeypatch.chdir(ROOT)
    assert command("rnnexp-report") == str(Path(TRAIN).parent.relative_to(ROOT) / "rnnexp-report")
    monkeypatch.chdir("/")
    assert command("rnnexp-train") == TRAIN


def _make(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`make ARGS` in the project, with a stand-in virtual environment: its python is this one, its
    `mlflow` records how it was started instead of serving."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / ".installed").touch()
    python = venv / "bin" / "python"
    if not python.exists():
        python.symlink_to(sys.executable)
    fake = venv / "bin" / "mlflow"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "mlflow-args"}\n')
    fake.chmod(0o755)
    return run_command(
        ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_override_given_to_make_unquoted_is_refused_not_dropped(tmp_path):
    proc = _make(tmp_path, "train", "ARGS=model=mlp_window", "task.distance=4", "seed=1")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "task.distance=4 is an override outside ARGS, which make would drop" in line
    assert re.search(
        r'make train VENV=\S+ ARGS="model=mlp_window (task.distance=4 seed=1|seed=1 task.distance=4)"', line
    )
    assert _make(tmp_path, "-n", "train", "ARGS=model=mlp_window task.distance=4").returncode == 0


def test_make_ui_refuses_a_store_that_is_not_there_and_a_port_in_use(tmp_path):
    import socket

    proc = _make(tmp_path, "ui", f"URI=sqlite:///{tmp_path}/mlfow.db")  # a typo
    assert proc.returncode == 2 and f"no store at {tmp_path}/mlfow.db" in proc.stderr
    assert not (tmp_path / "mlfow.db").exists() and not (tmp_path / "mlflow-args").exists()
    (tmp_path / "mlflow.db").touch()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _make(tmp_path, "ui", f"URI=sqlite:///{tmp_path}/mlflow.db", f"PORT={port}")
    assert proc.returncode == 2 and f"make ui: PORT={port} is in use on 127.0.0.1" in proc.stderr
    assert not (tmp_path / "mlflow-args").exists()
    proc = _make(tmp_path, "ui", f"URI=sqlite:///{tmp_path}/mlflow.db", f"PORT={port}")  # free again
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mlflow-args").read_text().split()[:2] == ["ui", "--backend-store-uri"]


def test_make_report_given_an_mlflow_experiment_says_how_to_report_it(tmp_path):
    proc = _make(tmp_path, "report", "EXP=delayed_recall")
    assert proc.returncode == 2
    assert "EXP='delayed_recall' is not an experiment of conf/experiment/" in proc.stderr
    assert "rnnexp-report --experiment delayed_recall" in proc.stderr


def test_a_copied_checkout_refuses_to_write_into_the_original_s_artifacts(tmp_path):
    """MLflow keeps an experiment's artifact folder as an absolute path: a run of a copied (or
    moved) checkout whose store came along would put its checkpoints and model into the original."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    first = run_command([TRAIN, *SMALL_RUN], cwd=original, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.copytree(original, copy)
    before = sorted(p.name for p in (original / "mlartifacts").iterdir())
    proc = run_command([TRAIN, *SMALL_RUN], cwd=copy, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("rnnexp-train: error: tracking.uri='sqlite:///mlflow.db' is not allowed: a store that keeps")
    assert f"those of experiment 'delayed_recall' in {original / 'mlartifacts'}, outside {copy} (a copied" in line
    assert sorted(p.name for p in (original / "mlartifacts").iterdir()) == before  # nothing written there
    assert len(runs_named(MlflowClient(f"sqlite:///{copy}/mlflow.db"), "delayed_recall")) == 1  # no new run
    # a new experiment in the copy's store keeps its artifacts in the copy
    again = run_command([TRAIN, *SMALL_RUN, "tracking.experiment=moved"], cwd=copy, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
