"""The report: runs that differ only in the seed are one variant, smoke runs and re-runs of a seed
are left out, and every interval and test is the one scipy computes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from rnnexp.report import main
from rnnexp.report.statistics import holm, summarise
from rnnexp.report.tables import results_markdown
from rnnexp.store import RunRecord
from tests.conftest import composed, log_run, table_cells
from tests.conftest import variant_runs as _runs


def _report(tmp_path: Path, *args: str, capsys) -> tuple[int, str, str]:
    """rnnexp-report in this process (a fresh one costs seconds of imports): (exit status, stdout, stderr)."""
    try:
        main(["--uri", f"sqlite:///{tmp_path}/mlflow.db", "--out", str(tmp_path / "report"), *args])
        status = 0
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sizes x two seeds, a smoke run of one of them, and seed 0 of size 16 run a second time,
    as rnnexp-train records them (`log_run`: not trained, the report reads what is logged)."""
    from rnnexp.store import Store, write

    tmp_path = tmp_path_factory.mktemp("report")
    client = Store.parse(f"sqlite:///{tmp_path}/mlflow.db").client()
    experiment = client.create_experiment("delayed_recall")
    rng = np.random.default_rng(0)

    def sweep(*jobs: tuple[int, int, str]) -> None:
        parent = client.create_run(experiment).info.run_id
        write(client, parent, RunRecord(sweep=True))
        for size, seed, trainer in jobs:
            cfg = composed("task.distance=3", f"trainer={trainer}", f"model.hidden_size={size}", f"seed={seed}")
            curve = list(np.clip(0.125 + np.cumsum(rng.uniform(0.0, 0.1, 4)), 0, 1))  # val/acc rising
            epochs = len(curve)
            metrics = {"test/acc": curve[-1] - rng.uniform(0.0, 0.05), "train/acc": curve[-1] + 0.02}
            metrics |= {"chance_level": 0.125, "n_test_scored": 640, "n_params": 100 * size, "wall_time_s": 1.0}
            metrics |= {"epochs_trained": epochs, "updates": 4 * epochs}
            log_run(
                client,
                experiment,
                cfg,
                metrics,
                {"val/acc": curve},
                parent_run=parent,
                smoke=trainer == "smoke",
                stopped_by="budget",
            )
        client.set_terminated(parent, "FINISHED")

    sweep(*[(size, seed, "default") for size in (16, 32) for seed in (0, 1)])
    # a smoke check, then a re-run of seed 0 (the latest counts): one sweep, run in this order
    sweep((16, 0, "smoke"), (16, 0, "default"))
    runs = client.search_runs([experiment], "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"])
    return tmp_path, client, [r for r in runs if not RunRecord.of(r).sweep]


def test_runs_differing_only_in_the_seed_are_one_variant_smoke_runs_and_reruns_left_out(store, capsys):
    tmp_path, _, runs = store
    assert len(runs) == 6
    smoke = [r for r in runs if RunRecord.of(r).smoke]
    assert len(smoke) == 1 and len({r.data.tags["variant_hash"] for r in runs if r not in smoke}) == 2
    (comparisons := tmp_path / "comparisons.yaml").write_text(
        "comparisons:\n  - name: wide vs narrow\n    a: {model.hidden_size: 32}\n    b: {model.hidden_size: 16}\n"
    )
    status, out, err = _report(
        tmp_path, "--experiment", "delayed_recall", "--comparisons", str(comparisons), capsys=capsys
    )
    assert status == 0, err
    assert "1 trainer=smoke run(s) left out" in out and "1 duplicate run(s)" in out
    with open(tmp_path / "report" / "results.csv") as f:
        rows = {r["model.hidden_size"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"16", "32"} and all(r["n_seeds"] == "2" for r in rows.values())
    assert (
        "model.hidden_size" in table_cells((tmp_path / "report" / "results.md").read_text())[0]
    )  # the key that varies
    counted = [r for r in runs if r not in smoke and r is not runs[0]]  # the re-run replaces the sweep's seed 0
    for size, row in rows.items():
        scores = np.array([r.data.metrics["test/acc"] for r in counted if r.data.params["model.hidden_size"] == size])
        half = stats.t.ppf(0.975, df=1) * scores.std(ddof=1) / np.sqrt(2)  # by hand: Student t, 1 df
        assert float(row["mean"]) == pytest.approx(scores.mean())
        assert (float(row["ci95_low"]), float(row["ci95_high"])) == pytest.approx(
            (scores.mean() - half, scores.mean() + half)
        )
        assert set(row["runs"].split()) == {
            r.info.run_id for r in counted if r.data.params["model.hidden_size"] == size
        }
    with open(tmp_path / "report" / "runs.csv") as f:
        per_run = list(csv.DictReader(f))
    assert len(per_run) == 4 and {
        "run_id",
        "seed",
        "model.hidden_size",
        "test/acc",
        "chance",
        "n_params",
        "epochs_trained",
        "wall_time_s",
    } <= set(per_run[0])
    # the comparison is Welch's test as scipy computes it, on the seeds' scores
    with open(tmp_path / "report" / "comparisons.csv") as f:
        (row,) = csv.DictReader(f)
    wide, narrow = (
        [r.data.metrics["test/acc"] for r in counted if r.data.params["model.hidden_size"] == s] for s in ("32", "16")
    )
    expected = stats.ttest_ind(wide, narrow, equal_var=False)
    assert float(row["p"]) == pytest.approx(expected.pvalue) and float(row["t"]) == pytest.approx(expected.statistic)
    assert (float(row["ci95_low"]), float(row["ci95_high"])) == pytest.approx(tuple(expected.confidence_interval()))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiment", "nope"], "rnnexp-report: error: --experiment='nope' is not in sqlite:///"),
        (["--parent", "0" * 32], "rnnexp-report: error: --parent='" + "0" * 32 + "': no such run in"),
        (
            ["--experiment", "delayed_recall", "--comparisons", "missing.yaml"],
            "rnnexp-report: error: --comparisons='missing.yaml': No such file or directory",
        ),
    ],
)
def test_bad_options_are_one_line_and_exit_2(store, args, message, capsys):
    status, _, err = _report(store[0], *args, capsys=capsys)
    assert status == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_a_comparison_naming_what_does_not_exist_is_one_line(store, tmp_path, capsys):
    (bad := tmp_path / "c.yaml").write_text("comparisons:\n  - {name: x, a: {cell: gru}, b: {cell: rnn}}\n")
    status, _, err = _report(store[0], "--experiment", "delayed_recall", "--comparisons", str(bad), capsys=capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert "comparison 'x': a={'cell': 'gru'} matches no variant; cell is one of ['rnn']" in err


def test_an_experiment_of_smoke_runs_only_has_nothing_to_report(store, tmp_path, capsys):
    import shutil

    shutil.copy(store[0] / "mlflow.db", tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for run in store[2]:
        if not RunRecord.of(run).smoke:
            client.delete_run(run.info.run_id)
    status, _, err = _report(tmp_path, "--experiment", "delayed_recall", capsys=capsys)
    assert status == 2 and err.strip() == (
        "rnnexp-report: error: --experiment=delayed_recall: no finished training runs to report "
        "(1 trainer=smoke run(s) left out (a check of a config, not a result))"
    )


def test_a_variant_is_flagged_when_a_seed_ran_out_of_budget_or_its_training_metric_is_at_chance():
    learned = [0.9, 0.92, 0.93, 0.91, 0.92]
    runs = _runs({"plateau": learned, "budget": learned, "at_chance": [0.12, 0.13, 0.126, 0.124, 0.127]})
    runs.loc[runs["variant"] == "budget", "stopped_by"] = ["plateau", "budget", "budget", "plateau", "plateau"]
    table = summarise(runs, []).set_index("variant")
    assert table.loc["plateau", "flags"] == ""
    assert table.loc["budget", "flags"] == "budget ran out (2 of 5 seeds)"
    assert table.loc["at_chance", "flags"] == "did not learn in this budget (training metric not shown above chance)"
    # a model that learned its training set but not the test's: trained, not "at chance in training"
    # (it memorised its training set instead: that has its own flag)
    overfit = _runs({"overfit": [0.12, 0.13, 0.126, 0.124, 0.127]}).assign(train_score=[1.0, 0.99, 1.0, 1.0, 0.98])
    assert summarise(overfit, []).iloc[0]["flags"].startswith("memorisation: train 0.994 against test 0.125")
    # MSE, lower is better: a training MSE at the constant predictor's is "did not learn"
    flat = _runs({"flat": [0.17, 0.16, 0.168]}, chance=1 / 6).assign(metric="mse", better="lower")
    assert "did not learn" in summarise(flat, []).iloc[0]["flags"]
    text = results_markdown(table.reset_index(), [], [])
    assert "budget ran out (2 of 5 seeds)" in text and "*budget ran out*: a seed trained for all of" in text


def test_the_chance_test_finds_a_perfect_model_above_chance_and_a_random_one_not():
    rng = np.random.default_rng(0)
    # a random predictor of 8 symbols: each seed's accuracy is a binomial draw around 1/8
    random = list(rng.binomial(1000, 0.125, size=5) / 1000)
    table = summarise(_runs({"random": random, "perfect": [1.0, 1.0, 0.999, 1.0, 0.998]}), []).set_index("variant")
    assert table.loc["perfect", "vs_chance"] == "above chance (p<0.0001)"
    # scored as precisely as these seeds are, a random predictor is shown at chance (TOST, ±0.02)
    assert table.loc["random", "vs_chance"].startswith("at chance (±0.02, TOST p=")
    assert table.loc["random", "p_binomial_holm"] > 0.05 and table.loc["perfect", "p_binomial_holm"] < 1e-100
    one = summarise(_runs({"alone": [0.5]}), []).iloc[0]
    assert np.isnan(one["ci95_low"]) and np.isnan(one["p_seeds"])  # one seed: no interval, no test over seeds
    assert one["vs_chance"] == "n/a (1 seed)" and one["p_binomial_holm"] < 1e-100  # the test steps still give one
    same = summarise(_runs({"same": [0.5, 0.5, 0.5]}), []).iloc[0]
    assert np.isnan(same["ci95_low"]) and same["vs_chance"] == "n/a (every seed the same)"


def test_a_regression_worse_than_chance_is_called_worse_and_a_good_one_better():
    # MSE: lower is better; a model whose MSE is above the chance level's is "worse than chance"
    runs = _runs({"worse": [0.28, 0.29, 0.27]}, chance=1 / 6).assign(metric="mse", better="lower")
    assert summarise(runs, []).iloc[0]["vs_chance"].startswith("worse than chance (p=")
    runs = _runs({"good": [0.01, 0.012, 0.011]}, chance=1 / 6).assign(metric="mse", better="lower")
    row = summarise(runs, []).iloc[0]
    assert row["vs_chance"].startswith("better than chance (p") and np.isnan(row["p_binomial"])  # no binomial for MSE


def test_the_interval_is_students_t_over_seeds():
    scores = [0.2, 0.25, 0.31, 0.22, 0.27]
    row = summarise(_runs({"v": scores}), []).iloc[0]
    expected = stats.t.interval(0.95, 4, loc=np.mean(scores), scale=stats.sem(scores))
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(expected)
    assert row["p_seeds"] == pytest.approx(stats.ttest_1samp(np.array(scores) - 0.125, 0, alternative="greater").pvalue)


def test_holms_adjustment():
    # Holm (1979): sorted p times (m - rank), then made monotone; untested (NaN) values stay out
    assert holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_a_sweeps_training_run_or_a_missing_store_is_not_a_report(store, tmp_path, capsys):
    status, _, err = _report(store[0], "--parent", store[2][0].info.run_id, capsys=capsys)
    assert status == 2 and "is not a sweep's parent run (tag sweep=true); sweeps' parent runs there: " in err
    status, _, err = _report(tmp_path / "nowhere", "--experiment", "delayed_recall", capsys=capsys)
    assert status == 2 and "no such SQLite file" in err and not (tmp_path / "nowhere").exists()  # nothing created


def _configs(**distance_by_variant: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = _runs({v: [0.5, 0.6] for v in distance_by_variant})
    runs["params.task.distance"] = runs["variant"].map(lambda v: str(distance_by_variant[v]))
    runs["params.model.hidden_size"] = "64"
    runs["model"] = runs["variant"]
    return runs, summarise(runs, [])


def test_a_comparison_pairs_variants_only_where_the_task_and_trainer_agree():
    from rnnexp.report import ReportError
    from rnnexp.report.statistics import Comparison, compare

    runs, table = _configs(tanh=3, gru=5)  # run at different distances: nothing to pair
    with pytest.raises(ReportError, match="no variant of a has a partner in b"):
        compare(runs, table, [Comparison("gru vs tanh", {"model": "gru"}, {"model": "tanh"})], [])
    runs, table = _configs(tanh=3, gru=3)
    (row,) = compare(runs, table, [Comparison("gru vs tanh", {"model": "gru"}, {"model": "tanh"})], []).to_dict(
        "records"
    )
    assert row["a"] == "gru" and row["b"] == "tanh" and row["n_a"] == 2
    mse = runs.assign(
        metric=runs["variant"].map({"tanh": "acc", "gru": "mse"}),
        better=runs["variant"].map({"tanh": "higher", "gru": "lower"}),
    )
    with pytest.raises(ReportError, match="a is scored by mse, b by acc"):
        compare(mse, summarise(mse, []), [Comparison("x", {"model": "gru"}, {"model": "tanh"})], [])


def test_rates_each_variant_took_from_one_selection_pair_as_model_keys_and_others_do_not():
    from rnnexp.report import ReportError
    from rnnexp.report.statistics import Comparison, compare

    runs, _ = _configs(tanh=3, gru=3)
    runs["params.optim.lr"] = runs["variant"].map({"tanh": "0.001", "gru": "0.03"})
    comparison = [Comparison("gru vs tanh", {"model": "gru"}, {"model": "tanh"})]
    with pytest.raises(ReportError, match="no variant of a has a partner in b"):  # rates set by hand: not comparable
        compare(runs, summarise(runs, ["optim.lr"]), comparison, ["optim.lr"])
    runs["lr_from"] = "exp_lr"  # each the rate chosen for it on validation: its own, like its width
    (row,) = compare(runs, summarise(runs, ["optim.lr"]), comparison, ["optim.lr"]).to_dict("records")
    assert row["models_differ_in"] == "optim.lr" and "optim.lr" not in row


def test_the_budget_curve_plots_the_variants_at_one_value_and_names_the_values_otherwise(store, capsys):
    from matplotlib.image import imread

    tmp_path = store[0]
    status, out, _ = _report(
        tmp_path, "--experiment", "delayed_recall", "--budget-curve", "model.hidden_size=16", capsys=capsys
    )
    assert status == 0 and (tmp_path / "report" / "budget_curve.png").stat().st_size > 10_000
    one_panel = imread(tmp_path / "report" / "budget_curve.png").shape[1]
    # given twice: a panel for each value, side by side
    status, _, err = _report(
        tmp_path,
        "--experiment",
        "delayed_recall",
        "--budget-curve",
        "model.hidden_size=16",
        "--budget-curve",
        "model.hidden_size=32",
        capsys=capsys,
    )
    assert status == 0, err
    assert 1.8 < imread(tmp_path / "report" / "budget_curve.png").shape[1] / one_panel < 2.2
    status, _, err = _report(
        tmp_path,
        "--experiment",
        "delayed_recall",
        "--budget-curve",
        "model.hidden_size=16",
        "--budget-curve",
        "model.hidden_size=8",
        capsys=capsys,
    )
    assert (
        status == 2 and "--budget-curve model.hidden_size=8: no variant has it; model.hidden_size takes 16, 32" in err
    )
    # a key every run shares (not a column of the table) is a value too: both sizes, told apart in the legend
    status, _, err = _report(
        tmp_path, "--experiment", "delayed_recall", "--budget-curve", "task.distance=3", capsys=capsys
    )
    assert status == 0, err
    status, _, err = _report(
        tmp_path, "--experiment", "delayed_recall", "--budget-curve", "task.distanse=3", capsys=capsys
    )
    assert status == 2 and "--budget-curve task.distanse=3: these runs have no key task.distanse; keys:" in err
    status, _, err = _report(
        tmp_path, "--experiment", "delayed_recall", "--evaluations", "--budget-curve", "task.distance=3", capsys=capsys
    )
    assert status == 2 and "--budget-curve with --evaluations: an evaluation has no learning curve" in err


def test_runs_left_out_are_counted_and_a_failed_report_leaves_the_last_one_whole(store, tmp_path, capsys):
    import shutil

    shutil.copy(store[0] / "mlflow.db", tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    counted = [r for r in store[2] if not RunRecord.of(r).smoke]
    client.delete_tag(counted[-1].info.run_id, "metric")  # not an rnnexp training run any more
    client.set_terminated(counted[-2].info.run_id, "FAILED")
    status, out, err = _report(tmp_path, "--experiment", "delayed_recall", capsys=capsys)
    assert status == 0, err
    assert "1 run(s) without the tags or params of an rnnexp training run" in out and "1 FAILED run(s) left out" in out
    before = {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()}
    (bad := tmp_path / "c.yaml").write_bytes(b"\xff\xfe not utf-8")
    status, _, err = _report(tmp_path, "--experiment", "delayed_recall", "--comparisons", str(bad), capsys=capsys)
    assert status == 2 and "not YAML" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()} == before  # untouched


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("comparisons:\n  - {name: x, a: {seed: 1}, b: {seed: 0}}\n", "selects by seed, which a variant does not fix"),
        (
            "comparisons:\n  - {name: x, a: {cell: rnn}, b: {model: mlp_window}}\n"
            "  - {name: y, a: {model: mlp_window}, "
            "b: {cell: rnn}}\n",
            "comparison 'y' repeats an earlier one",
        ),
    ],
)
def test_comparisons_that_cannot_mean_what_they_say_are_refused(store, tmp_path, capsys, yaml_text, message):
    (bad := tmp_path / "c.yaml").write_text(yaml_text)
    status, _, err = _report(store[0], "--experiment", "delayed_recall", "--comparisons", str(bad), capsys=capsys)
    assert status == 2 and message in err and err.count("\n") == 1, err


def test_the_distance_plot_draws_each_mean_with_its_interval_and_no_line_between_distances(tmp_path, monkeypatch):
    """A line from d=2 to d=8 would read as a score at d=4, where nothing was run."""
    import matplotlib.axes

    from rnnexp.report.plots import plot_results

    table = pd.DataFrame(
        {
            "task": "delayed_recall",
            "label": ["mlp_window", "mlp_window", "rnn_hidden (rnn)", "rnn_hidden (rnn)"],
            "task.distance": ["2", "8", "2", "8"],
            "mean": [1.0, 0.13, 1.0, 0.9],
            "ci95_low": [np.nan, 0.12, 0.99, 0.8],
            "ci95_high": [np.nan, 0.14, 1.01, 1.0],
            "chance": 0.125,
            "metric": "acc",
        }
    )
    drawn: list[tuple] = []
    errorbar = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, *a, **k: pytest.fail(f"a line drawn: {a}"))
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "errorbar",
        lambda self, x, y, **k: drawn.append((list(x), list(y), k)) or errorbar(self, x, y, **k),
    )
    assert plot_results(table, ["task.distance"], tmp_path) == ["metric_vs_distance.png"]
    assert [d[1] for d in drawn] == [[1.0, 0.13], [1.0, 0.9]]
    assert all(d[2]["fmt"] == "o" for d in drawn)  # markers only
    window, recurrent = drawn
    assert window[0] != recurrent[0]  # nudged apart, so that neither hides the other
    assert (
        np.allclose(window[2]["yerr"][:, 1], [0.01, 0.01]) and window[2]["yerr"][0, 0] == 0
    )  # no interval: none drawn


def test_a_solved_value_counts_as_given_so_it_varies_only_where_runs_were_given_it_apart():
    from rnnexp.report.runs import varying_keys

    def frame(lengths, solved):
        n = len(lengths)
        return pd.DataFrame(
            {
                "task": ["delayed_recall"] * n,
                "label": ["rnn_hidden"] * n,
                "variant": [f"v{i}" for i in range(n)],
                "params.task.distance": [str(3 + i) for i in range(n)],
                "params.task.length": lengths,
                "solved": solved,
            }
        )

    # a distance sweep: each length solved from its distance says nothing more than the distance
    assert varying_keys(frame(["28", "29"], ["task.length", "task.length"])) == ["task.distance"]
    # lengths given apart (null, 30, 50) vary, solved or not; a run read from a CSV has None
    mixed = frame(["28", "30", "50"], ["task.length", None, None])
    assert varying_keys(mixed) == ["task.distance", "task.length"]
    assert varying_keys(frame([None, "28"], [None, "task.length"])) == ["task.distance"]


def test_a_run_logged_with_its_solved_length_is_the_same_variant_as_one_logged_before(tmp_path, compose_train):
    from hydra.utils import instantiate

    from rnnexp import config, tracking
    from rnnexp.store import Store
    from tests.conftest import log_run

    client = Store.parse(f"sqlite:///{tmp_path}/m.db").client()
    experiment = client.create_experiment("e")
    cfg = compose_train("task.distance=3")
    solved = log_run(client, experiment, cfg, {})
    old = client.create_run(experiment).info.run_id  # as logged before lengths were solved: no `solved`
    task = instantiate(cfg.task, seed=0)
    tracking.log_config(client, old, cfg, [], tracking.run_record(config.check(cfg), task))
    a, b = client.get_run(solved).data, client.get_run(old).data
    assert a.params["task.length"] == "28" and b.params["task.length"] == "None"
    assert a.tags["variant_hash"] == b.tags["variant_hash"]
