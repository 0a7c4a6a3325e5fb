"""The report's claims against chance and between variants: above chance, at chance (an
equivalence test within a margin) and inconclusive are three verdicts, each with its own test;
seeds that either solve a task or stay at chance are counted, not averaged."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rnnexp.report import main
from rnnexp.report.criteria import Criteria, Threshold
from rnnexp.report.runs import ReportError
from rnnexp.report.statistics import summarise
from rnnexp.store import RunRecord, Store, write
from tests.conftest import TINY_RUN, TRAIN, composed, log_run, run_command
from tests.conftest import variant_runs as _runs


def _rows(out: Path, name: str = "results.csv") -> list[dict]:
    with open(out / name) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    """Real tiny runs, 5 seeds each: an MLP that sees 1 step cannot recall the symbol 4 steps
    back (at chance), one that sees 5 steps can (above it). Large test sets make each seed's
    score precise enough for the equivalence test to show "at chance" within ±0.02."""
    tmp_path = tmp_path_factory.mktemp("windows")
    proc = run_command(
        [
            TRAIN,
            "-m",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.sweep.dir={tmp_path}/multirun",
            *TINY_RUN,
            "model=mlp_window",
            "task.distance=4",
            "task.test_size=2000",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=null",
            "model.window=1,5",
            "seed=0,1,2,3,4",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path


def _report(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "report"
    main(["--uri", f"sqlite:///{tmp_path}/mlflow.db", "--experiment", "delayed_recall", "--out", str(out), *args])
    return out


def test_a_model_that_cannot_see_the_context_is_shown_at_chance_and_one_that_can_above(windows):
    rows = {r["model.window"]: r for r in _rows(_report(windows))}
    blind, seeing = rows["1"], rows["5"]
    assert blind["vs_chance"].startswith("at chance (±0.02, TOST p"), blind
    assert float(blind["p_tost_holm"]) < 0.05 and float(blind["p_seeds_holm"]) >= 0.05
    assert seeing["vs_chance"].startswith("above chance (p"), seeing
    assert seeing["n_solved"] == "5" and blind["n_solved"] == "0"
    assert float(blind["solved_high"]) == pytest.approx(0.5218, abs=1e-4)  # 0 of 5: the rate may still be 52%
    # a margin narrower than the seeds can resolve: the same runs are no longer shown at chance
    rows = {r["model.window"]: r for r in _rows(_report(windows, "--margin", "acc=0.0005"))}
    assert rows["1"]["vs_chance"].startswith("inconclusive (above: p"), rows["1"]
    assert "at chance ±0.0005: TOST p" in rows["1"]["vs_chance"]


def test_barely_above_chance_is_above_and_a_spread_that_shows_neither_is_inconclusive():
    table = summarise(
        _runs(
            {
                "barely": [0.150, 0.152, 0.149, 0.151, 0.153],  # 2.5 points above, every seed
                # pattern 2 at distance 1 in context_length: every seed above chance, widely spread
                "spread": [0.19, 0.29, 0.21, 0.26, 0.13],
                "flat": [0.124, 0.126, 0.125, 0.127, 0.123],
            }
        ),
        [],
    ).set_index("variant")
    assert table.loc["barely", "vs_chance"].startswith("above chance (p")
    assert table.loc["flat", "vs_chance"].startswith("at chance (±0.02, TOST p")
    assert not table.loc["spread", "vs_chance"].startswith("at chance")
    # below chance is its own claim, not "at chance" and not "inconclusive"
    below = summarise(_runs({"worse": [0.05, 0.06, 0.055, 0.052]}), []).iloc[0]
    assert below["vs_chance"].startswith("below chance (p")


def test_a_regression_at_its_chance_level_is_at_chance_within_5_percent_of_it():
    runs = _runs({"flat": [0.167, 0.166, 0.1665, 0.1668]}, chance=1 / 6).assign(metric="mse", better="lower")
    row = summarise(runs, []).iloc[0]
    assert row["vs_chance"].startswith("at chance (±5% of chance, TOST p") and row["margin"] == "5% of chance"


@pytest.fixture(scope="module")
def bimodal(tmp_path_factory):
    """Two variants as rnnexp-train logs them: one whose 5 seeds either solve the task (≥ 0.95)
    or stay at chance, one whose seeds all stay at chance."""
    tmp_path = tmp_path_factory.mktemp("bimodal")
    client = Store.parse(f"sqlite:///{tmp_path}/mlflow.db").client()
    experiment = client.create_experiment("delayed_recall")
    parent = client.create_run(experiment).info.run_id
    write(client, parent, RunRecord(sweep=True))
    scores = {"lstm": [1.0, 0.99, 0.126, 0.124, 0.998], "rnn": [0.125, 0.127, 0.124, 0.13, 0.126]}
    for cell, seeds in scores.items():
        for seed, score in enumerate(seeds):
            cfg = composed("task.distance=32", f"model.cell={cell}", f"seed={seed}")
            metrics = {"test/acc": score, "train/acc": score, "chance_level": 0.125, "n_test_scored": 640}
            metrics |= {"n_params": 1000, "wall_time_s": 1.0, "epochs_trained": 5, "updates": 20}
            log_run(client, experiment, cfg, metrics, {"val/acc": [score]}, parent_run=parent, stopped_by="plateau")
    client.set_terminated(parent, "FINISHED")
    (tmp_path / "comparisons.yaml").write_text(
        "comparisons:\n  - name: LSTM vs tanh\n    a: {cell: lstm}\n    b: {cell: rnn}\n"
    )
    return tmp_path


def test_bimodal_seeds_are_counted_and_compared_by_their_solve_rates(bimodal):
    out = _report(bimodal, "--comparisons", str(bimodal / "comparisons.yaml"))
    rows = {r["cell"]: r for r in _rows(out)}
    assert (rows["lstm"]["n_solved"], rows["rnn"]["n_solved"]) == ("3", "0")
    assert "bimodal seeds (3 of 5 solved, the others near chance)" in rows["lstm"]["flags"]
    assert "bimodal" not in rows["rnn"]["flags"]
    text = (out / "results.md").read_text()
    assert "| 3/5 [0.15, 0.95] |" in text  # the solve count, before the mean
    assert text.index("| 3/5 [0.15, 0.95] |") < text.index("acc 0.648")
    (row,) = _rows(out, "comparisons.csv")
    from scipy import stats

    assert float(row["p_solved"]) == pytest.approx(stats.barnard_exact([[3, 2], [0, 5]]).pvalue)
    assert row["verdict"].startswith("no difference in solve rate shown (3/5 vs 0/5 seeds solved, Barnard Holm p")
    assert "bimodal seeds: not the t-test" in row["verdict"]
    # the same seeds, a stricter threshold for this task: the 0.99 seed no longer counts
    out = _report(bimodal, "--solved", "delayed_recall:acc=0.995")
    assert {r["cell"]: r["n_solved"] for r in _rows(out)} == {"lstm": "2", "rnn": "0"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--margin", "acc"], "--margin='acc': give [TASK:]METRIC=VALUE, e.g. acc=0.02 or mse=5%"),
        (["--margin", "acc=-1"], "--margin='acc=-1': '-1' is not a positive number or percentage"),
        (["--solved", "acc=95%"], "--solved='acc=95%': acc is solved at a score between 0 and 1, e.g. acc=0.95"),
        (["--solved", "acc=0.1"], "--solved: delayed_recall's acc solved at 0.1 would count a seed at its chance"),
    ],
)
def test_a_bad_threshold_is_one_line_and_exit_2(bimodal, args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        _report(bimodal, *args)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err and err.count("\n") == 1, err


def test_a_task_threshold_wins_over_its_metric():
    criteria = Criteria.given(["mse=1%", "adding:mse=0.001"], [])
    assert criteria.margin("adding", "mse") == Threshold(0.001)
    assert criteria.margin("copy", "mse") == Threshold(0.01, of_chance=True)
    assert criteria.margin("copy", "acc") == Threshold(0.02)
    with pytest.raises(ReportError):
        Criteria.given([], ["acc=1.5"])


def test_a_ceiling_bound_better_reads_within_this_budget_and_strict_fails_on_it(windows, capsys):
    # every run of `windows` stopped at trainer.max_epochs=3: its comparison is about this budget
    (comparisons := windows / "comparisons.yaml").write_text(
        "comparisons:\n  - name: wide vs narrow\n    a: {model.window: 5}\n    b: {model.window: 1}\n"
    )
    out = _report(windows, "--comparisons", str(comparisons))
    (row,) = _rows(out, "comparisons.csv")
    assert row["verdict"].startswith("mlp_window, model.window=5 better within this budget (Holm p"), row
    assert "budget ran out (5 of 5 seeds)" in row["flags"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        _report(windows, "--comparisons", str(comparisons), "--strict")
    out, err = capsys.readouterr()
    assert exit.value.code == 1 and "flagged: 2 of 2 variants, 1 of 1 comparisons" in out
    flagged = "1 of 1 comparisons are flagged (wide vs narrow: their flags are in comparisons.md)"
    assert err == f"rnnexp-report: --strict: {flagged}\n"


def test_committed_runs_re_analysed_from_runs_csv_give_the_stores_numbers(windows):
    from_store = {r["model.window"]: r for r in _rows(_report(windows))}
    out = windows / "again"
    main(["--runs", str(windows / "report" / "runs.csv"), "--out", str(out)])
    again = {r["model.window"]: r for r in _rows(out)}
    for window, row in from_store.items():
        for column in ("mean", "ci95_low", "p_seeds_holm", "p_tost_holm", "n_solved", "vs_chance", "flags"):
            assert again[window][column] == row[column], column
    assert "re-analysed from" in (out / "results.md").read_text()
    assert not (out / "learning_curves.png").exists()  # the curves are in the store, not in runs.csv
    # and runs.csv itself comes back as written: a key's "5" not "5.0", git_dirty's "false" not "False"
    assert (out / "runs.csv").read_text() == (windows / "report" / "runs.csv").read_text()


@pytest.mark.parametrize("fresh", ["false", "true"])
def test_a_model_memorising_a_fixed_training_set_is_flagged_and_fresh_data_removes_the_gap(tmp_path, fresh):
    # 32 training sequences seen 40 times: a tanh RNN learns them by heart, not the rule
    proc = run_command(
        [
            TRAIN,
            "-m",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.sweep.dir={tmp_path}/multirun",
            *TINY_RUN,
            "task.distance=6",
            "task.train_size=32",
            "task.batch_size=32",
            "trainer.max_epochs=40",
            "trainer.limit_train_batches=null",
            "trainer.limit_val_batches=null",
            "optim.lr=0.01",
            f"task.fresh={fresh}",
            "seed=0,1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = _rows(_report(tmp_path))
    if fresh == "false":
        assert row["memorised"] == "True" and "memorisation: train" in row["flags"] and float(row["gap"]) > 0.1, row
    else:
        assert row["memorised"] == "False" and "memorisation" not in row["flags"], row


def test_runs_made_before_the_last_change_to_the_code_are_flagged():
    import subprocess

    from rnnexp.tracking import older_than_the_code

    root = Path(__file__).resolve().parent.parent
    first = subprocess.run(
        ["git", "-C", str(root), "rev-list", "--max-parents=0", "HEAD"], capture_output=True, text=True
    ).stdout.split()[0]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    older, unknown, change = older_than_the_code({first, head, "not-a-commit", "unknown"})
    assert change is not None and older == {first}  # HEAD has the last change (or comes after it)
    assert unknown == {"not-a-commit", "unknown"}
    runs = _runs({"old": [0.9, 0.91, 0.92, 0.93, 0.94]}).assign(git_commit=[first, first, head, "unknown", head])
    flags = summarise(runs, [], stale=older, unknown=unknown).iloc[0]["flags"]
    assert "made at a commit not in this repository's history (1 of 5 seeds)" in flags
    assert (
        "made before the last change to the model, task or training code (2 of 5 seeds)"
        in (summarise(runs, [], stale=older).iloc[0]["flags"])
    )


def test_a_rate_chosen_at_the_edge_of_its_grid_and_too_few_seeds_are_flagged():
    runs = _runs({"top": [0.9, 0.91, 0.92], "inside": [0.9, 0.91, 0.92]})
    runs["lr_grid"] = "0.001,0.003,0.01"
    runs["params.optim.lr"] = runs["variant"].map({"top": "0.01", "inside": "0.003"})
    table = summarise(runs, []).set_index("variant")
    assert "learning rate at the top of its grid" in table.loc["top", "flags"]
    assert "learning rate" not in table.loc["inside", "flags"]
    assert "fewer than 5 seeds (3)" in table.loc["inside", "flags"]
    assert "scored alike" not in table.loc["inside", "flags"]
    # stage 1 chose it where every rate scored the same (tag lr_informative=false)
    runs["lr_informative"] = runs["variant"].map({"top": "false", "inside": "true"})
    table = summarise(runs, []).set_index("variant")
    assert "learning rate chosen where every rate scored alike" in table.loc["top", "flags"]
    assert "scored alike" not in table.loc["inside", "flags"]


@pytest.mark.parametrize(
    "row, column, value, message",
    [
        (0, "score", "nan", "score='nan' is not a finite number"),
        (0, "score", "1.7", "score='1.7' is not an accuracy from 0 to 1"),
        (0, "chance", "0", "chance='0' is not a chance level above 0"),
        (0, "n_test_scored", "0", "n_test_scored='0' is not a count of scored test steps"),
        (0, "n_test_scored", "12.5", "n_test_scored='12.5' is not a count of scored test steps"),
        (0, "seed", "x", "seed='x' is not an integer"),
        (0, "seed", "1", "has seed 1 twice"),  # row 0 is seed 0 of its variant; seed 1 is the next row
        (0, "variant", "", "variant is empty"),
        (0, "task", "other", "has runs of different tasks"),
    ],
)
def test_a_tampered_runs_csv_is_one_line_naming_the_row_and_value(
    windows, tmp_path, row, column, value, message, capsys
):
    import pandas as pd

    _report(windows)
    frame = pd.read_csv(windows / "report" / "runs.csv", dtype=str, keep_default_na=False)
    frame = frame.sort_values(["variant", "seed"]).reset_index(drop=True)
    frame.loc[row, column] = value
    frame.to_csv(tampered := tmp_path / "runs.csv", index=False)
    with pytest.raises(SystemExit) as exit:
        main(["--runs", str(tampered), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err and err.count("\n") == 1, err
    assert "row 2" in err or "variant" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--margin", "delayed_recal:acc=0.02"], "--margin delayed_recal:acc=...: no run here is scored by it"),
        (["--gap", "mse=0.1"], "--gap mse=...: no run here is scored by it"),
        (["--margin", "acc=1"], "--margin='acc=1': an amount of acc below 1"),
        (["--strict"], "--strict needs --comparisons"),
    ],
)
def test_a_threshold_naming_what_the_runs_lack_or_strict_without_claims_is_one_line(windows, args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        _report(windows, *args)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and message in err and err.count("\n") == 1, err


def test_a_span_along_a_key_every_run_shares_is_one_line(windows, tmp_path, capsys):
    # one window's runs: a span needs runs at two or more windows (this crashed in the flags)
    import pandas as pd

    _report(windows)
    frame = pd.read_csv(windows / "report" / "runs.csv", dtype=str, keep_default_na=False)
    frame[frame["model.window"] == "5"].to_csv(one := tmp_path / "runs.csv", index=False)
    with pytest.raises(SystemExit) as exit:
        main(["--runs", str(one), "--span", "model.window", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1, err
    assert "--span=model.window: every run here has model.window=5; a span is fitted along a key whose" in err
    assert not (tmp_path / "out").exists()


def test_runs_and_a_store_are_one_or_the_other(windows, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--runs", str(windows / "x.csv"), "--uri", "sqlite:////tmp/other.db"])
    assert exit.value.code == 2 and "--uri with --runs" in capsys.readouterr().err


def test_solve_counts_that_cannot_differ_are_not_tested_and_a_rounded_grid_still_has_edges():
    from rnnexp.report.statistics import Comparison, _lr_edge, compare

    runs = _runs({"a": [0.2, 0.21, 0.22, 0.2, 0.19], "b": [0.3, 0.31, 0.3, 0.29, 0.3]})
    runs["model"] = runs["variant"]
    table = summarise(runs, [])
    (row,) = compare(runs, table, [Comparison("a vs b", {"model": "a"}, {"model": "b"})], []).to_dict("records")
    assert (row["solved_a"], row["solved_b"]) == (0, 0) and np.isnan(row["p_solved"])  # 0/5 vs 0/5: no test
    import pandas as pd

    logged = pd.Series({"lr_grid": "0.001,0.00316228,0.01,0.0316228", "params.optim.lr": "0.03162277660168379"})
    assert _lr_edge(logged) == "top"
