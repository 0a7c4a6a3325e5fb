"""The store and the run record: what a run records, parsed back; a store made before the record
had a version still reads."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from rnnexp.store import NOT_VARIANT, RunRecord, Store, is_variant_key

# Made by rnnexp at commit 509eb40 (2026-12-05), before `RunRecord`: a sweep of rnn_hidden and
# mlp_window x seeds 0, 1 on delayed_recall (experiment `old`), each run evaluated at
# task.distance=2, one trainer=smoke run; and a learning-rate selection, optim.lr 1e-3 and 1e-2 x
# seeds 0, 1 (experiment `old_lr`).
OLD_STORE = Path(__file__).parent / "data" / "store_2026-12-05.db.gz"


@pytest.fixture
def old_store(tmp_path) -> Store:
    path = tmp_path / "old.db"
    with gzip.open(OLD_STORE) as packed, open(path, "wb") as out:
        shutil.copyfileobj(packed, out)
    return Store.parse(f"sqlite:///{path}")


def test_a_record_reads_back_what_it_wrote_and_writes_only_what_is_set():
    record = RunRecord(model="rnn_hidden", seed="3", smoke=True, best_val=0.8125, pid=41, git_commit="abc")
    tags = record.to_tags()
    assert tags == {
        "model": "rnn_hidden",
        "seed": "3",
        "smoke": "true",
        "best_val": "0.8125",
        "pid": "41",
        "git_commit": "abc",
        "mlflow.source.git.commit": "abc",  # shown by the UI on the run page
        "rnnexp.record": "1",
    }
    assert RunRecord.from_tags({**tags, "someone.else": "x"}) == record
    assert RunRecord(sweep=True).kind == "sweep" and RunRecord(evaluation=True, smoke=True).kind == "evaluation"
    assert RunRecord(smoke=True).kind == "smoke" and RunRecord().kind == "training"
    assert RunRecord(parent_run="p1").to_tags()["mlflow.parentRunId"] == "p1"


def test_a_number_that_does_not_parse_reads_as_missing_or_is_named_when_asked():
    tags = {"best_val": "abc", "pid": "12x", "model": "mlp_bag"}
    assert RunRecord.from_tags(tags) == RunRecord(model="mlp_bag")
    with pytest.raises(ValueError, match="pid='12x'"):
        RunRecord.from_tags(tags, strict={"pid", "best_val"})


def test_the_keys_that_do_not_change_a_result_are_one_list():
    assert {"tracking", "resume", "hydra", "seed"} <= set(NOT_VARIANT)
    assert not is_variant_key("tracking.uri") and not is_variant_key("seed") and not is_variant_key("hydra.run.dir")
    assert is_variant_key("task.distance") and is_variant_key("seeded")  # a prefix is a whole key, not its start


def test_a_uri_names_its_store_with_credentials_apart():
    store = Store.parse("HTTPS://alice:p%40ss@host:5000")
    assert store.uri == "https://host:5000" and store.is_server and not store.is_sqlite
    assert dict(store.credentials) == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "p@ss"}
    assert "alice" not in repr(store) and "p@ss" not in repr(store)
    assert Store.parse("sqlite:///mlflow.db").option() == "" and Store.parse("sqlite:///x.db").option("URI=") == (
        " URI=sqlite:///x.db"
    )
    assert Store.parse("sqlite:///a@b.db?mode=rw").path.endswith("/a@b.db")  # an @ in a file's name is a name


def test_a_store_that_is_not_there_is_refused_for_reading(tmp_path):
    from rnnexp.config import ConfigError

    with pytest.raises(ConfigError, match=r"^--uri='sqlite:///.*/none.db' is not allowed: .*no such SQLite file"):
        Store.parse(f"sqlite:///{tmp_path}/none.db", "--uri").check_exists()
    assert not (tmp_path / "none.db").exists()


def test_a_store_made_before_the_record_still_reads(old_store, tmp_path):
    from rnnexp import report, tuning

    old_store.check_reachable()  # its schema is whole and current
    client = old_store.client()
    assert old_store.experiment_names(client) == "Default, old, old_lr"
    experiment = old_store.experiment_named(client, "old")
    runs = Store.training_runs(client, experiment)  # not the parent, the evaluations or the smoke run
    records = [RunRecord.of(r) for r in runs]
    assert sorted((r.model, r.seed) for r in records) == [
        ("mlp_window", "0"),
        ("mlp_window", "1"),
        ("rnn_hidden", "0"),
        ("rnn_hidden", "1"),
    ]
    assert all(r.version == "1" and r.kind == "training" and r.best_val is not None for r in records)
    assert all(r.stopped_by in ("plateau", "budget") and r.monitor == "val/acc" for r in records)
    (parent,) = [
        client.get_run(p) for p in Store.sweep_parents(client) if client.get_run(p).info.experiment_id == experiment
    ]
    assert RunRecord.of(parent).sweep and len(Store.children(client, parent)) == 4
    twin = Store.finished_twin(client, parent, records[0].config_hash)
    assert twin == runs[0].info.run_id
    assert Store.evaluation_of(client, runs[0], "task.distance=2") is not None  # a resumed rnnexp-eval skips it
    assert Store.evaluation_of(client, runs[0], "task.distance=5") is None

    selection = Store.selection_runs(client, old_store.experiment_named(client, "old_lr"))
    choice = tuning.choose(selection, "old_lr")
    assert choice.grid == (1e-3, 1e-2) and choice.seeds == (0, 1) and choice.quantity == "val/acc"

    made = report.report(old_store.uri, "old", None, tmp_path / "report")
    assert len(made.table) == 2 and set(made.table["n_seeds"]) == {2}
    assert any("1 trainer=smoke run(s) left out" in n for n in made.notes)
    assert any("4 evaluation run(s) of rnnexp-eval left out" in n for n in made.notes)
    evaluated = report.report(old_store.uri, "old", None, tmp_path / "eval", evaluations=True)
    assert len(evaluated.table) == 2 and set(evaluated.table["n_seeds"]) == {2}


def test_records_in_memory_are_what_the_selection_reads():
    # a selection run built from its record, as rnnexp-train writes it: no tag named by hand
    def run(lr: float, seed: int, best: float):
        tags = RunRecord(monitor="val/acc", monitor_mode="max", best_val=best, seed=str(seed)).to_tags()
        info = SimpleNamespace(status="FINISHED", start_time=seed, run_id=f"{lr}-{seed}")
        return SimpleNamespace(
            info=info, data=SimpleNamespace(params={"optim.lr": str(lr), "seed": str(seed)}, tags=tags)
        )

    from rnnexp.tuning import choose

    choice = choose([run(1e-3, 0, 0.4), run(1e-3, 1, 0.5), run(1e-2, 0, 0.9), run(1e-2, 1, 0.7)], "x")
    assert choice.lr == 1e-2 and choice.means == pytest.approx((0.45, 0.8))


def test_a_pid_that_names_no_single_process_reads_as_missing():
    # os.kill(0, ...) signals the process group and os.kill(-1, ...) every process the user owns
    for pid in ("0", "-1", "-42"):
        assert RunRecord.from_tags({"pid": pid, "host": "h"}).pid is None
    assert RunRecord.from_tags({"pid": "4242"}).pid == 4242


def test_the_store_lock_taken_again_inside_itself_goes_on(tmp_path):
    import threading

    store = Store.parse(f"sqlite:///{tmp_path}/m.db")
    done = threading.Event()

    def nested():
        with store.lock(), store.resume_lock("run"), store.lock():
            done.set()

    threading.Thread(target=nested, daemon=True).start()
    assert done.wait(10), "the lock waited for itself"


def test_an_evaluation_of_a_smoke_run_is_left_out_of_the_evaluations_report():
    import pandas as pd

    from rnnexp.report.runs import counted_runs
    from rnnexp.store import record_columns

    def row(seed: int, smoke: bool) -> dict:
        record = RunRecord(evaluation=True, smoke=smoke, metric="acc", task="t", model="m", variant_hash="v")
        tags = {f"tags.{k}": v for k, v in record.to_tags().items()}
        return {**tags, "params.seed": str(seed), "status": "FINISHED", "start_time": seed, "metrics.eval/acc": 0.5}

    frame = record_columns(pd.DataFrame([row(0, False), row(1, False), row(2, True)]))
    runs, notes = counted_runs(frame, evaluations=True)
    assert sorted(runs["seed"]) == [0, 1] and any("1 trainer=smoke run(s) left out" in n for n in notes)
