"""Memory span: the fit (rnnexp.span) on curves whose span is known, and the span sweeper
(hydra/sweeper=span) on real runs of a model whose span is known: `mlp_window` recalls exactly
the symbols inside its window (distance <= window - 1) and is at chance beyond."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from rnnexp.span import Design, Span, fit
from rnnexp.store import RunRecord, Store
from tests.conftest import TRAIN, one_error_line, run_command

CHANCE = 0.125


def _runs(curve, distances, seeds=5, noise=0.02, chance=CHANCE, rng_seed=0):
    """Arrays (distance, seed, score, chance) of runs whose mean score at d is curve(d)."""
    rng = np.random.default_rng(rng_seed)
    rows = [(d, s, max(0.0, curve(d) + rng.normal(0, noise)), chance) for d in distances for s in range(seeds)]
    return [np.array(column) for column in zip(*rows, strict=True)]


def _step(last: int):
    return lambda d: 1.0 if d <= last else CHANCE


def test_a_step_between_two_tested_distances_puts_the_span_between_them():
    span = fit(*_runs(_step(4), [1, 2, 4, 5, 8, 16]), higher=True)
    assert not span.bound and 4 < span.estimate < 5
    assert span.low == 4 and span.high == 5  # the fit cannot place a step more precisely than its neighbours


def test_a_smooth_fall_is_located_within_its_interval():
    curve = lambda d: CHANCE + 0.85 / (1 + (d / 12) ** 3)  # noqa: E731
    span = fit(*_runs(curve, [1, 4, 8, 10, 12, 14, 16, 32, 64]), higher=True)
    assert span.low < 12 < span.high and span.width < 1.6
    assert span.estimate == pytest.approx(12, rel=0.1)


def test_a_variant_at_its_ceiling_throughout_gets_a_lower_bound_not_a_number():
    span = fit(*_runs(lambda d: 0.99, [1, 4, 16, 64]), higher=True)
    assert span.bound == "above" and span.estimate is None and span.text() == "> 64"


def test_a_variant_at_chance_throughout_gets_an_upper_bound_not_a_number():
    span = fit(*_runs(lambda d: CHANCE, [1, 4, 16, 64]), higher=True)
    assert span.bound == "below" and span.estimate is None and span.text() == "< 1"


def test_a_loss_rises_to_its_chance_level_and_a_moving_chance_level_is_each_runs_own():
    d, s, score, chance = _runs(lambda d: 0.1 if d <= 6 else 2.0, [1, 3, 6, 7, 12], chance=2.0)
    span = fit(d, s, score, chance, higher=False)
    assert span.low == 6 and span.high == 7
    # chance moves with the distance (a gain of 0.5 over it until 6, none after): the same span
    moving = 0.2 + d / 100
    span = fit(d, s, moving + np.where(d <= 6, 0.5, 0.0), moving, higher=True)
    assert span.low == 6 and span.high == 7


def test_an_interval_beyond_the_tested_range_is_open_there():
    # halfway at 64, the range's end: with this much noise some resamples of the seeds put it beyond
    curve = lambda d: CHANCE + 0.85 / (1 + (d / 64) ** 2)  # noqa: E731
    span = fit(*_runs(curve, [1, 8, 32, 64], noise=0.1), higher=True)
    assert span.low == 32 and span.high is None and span.text().endswith("[32, > 64]")


def test_the_design_brackets_the_range_then_divides_the_interval_until_narrow_or_spent():
    design = Design(low=1, high=64, seeds=5, bracket=4, batch=2, factor=1.5, max_runs=40)
    assert design.first() == [1, 4, 16, 64]
    span = Span(10.0, 4.0, 16.0, "", tested=(1, 4, 16, 64), runs=20, seeds=5)
    assert design.next(span, 20) == [6, 10]  # 4 * 2**(2/3), 4 * 2**(4/3): the interval in thirds
    assert design.done(span, 20) == ""
    assert design.next(span, 35) == [8]  # room for one distance's runs left
    assert design.done(span, 40) == "the budget of 40 runs is spent"
    assert design.done(Span(10.0, 9.0, 12.0, "", tested=(1, 9, 12), runs=15, seeds=5), 15).startswith("the interval")
    assert design.done(Span(None, None, None, "above", tested=(1, 64), runs=10, seeds=5), 10).endswith("> 64")
    # a step between neighbours: nothing left to place
    step = Span(4.5, 4.0, 5.0, "", tested=(1, 4, 5, 16), runs=20, seeds=5)
    assert Design(low=1, high=16, seeds=5, factor=1.1).done(step, 20).startswith("nothing is left to run")


def test_the_design_divides_the_crossing_then_runs_its_two_ends_with_more_seeds():
    # one run a distance: the mean crosses halfway between 8 and 23, the interval open on the right
    design = Design(low=1, high=64, seeds=1, bracket=5, batch=2, factor=2, max_runs=14, replicates=5)
    counts = {1: 1, 3: 1, 8: 1, 23: 1, 64: 1}
    span = Span(12.0, 5.0, None, "", tested=(1, 3, 8, 23, 64), runs=5, seeds=5, crossing=(8.0, 23.0))
    assert design.next(span, 5, counts) == [11, 16]  # the crossing in thirds, not the open interval's
    # the crossing between neighbours: its ends again, with seeds they have not run
    step = Span(12.0, 5.0, None, "", tested=(1, 3, 8, 9, 23, 64), runs=20, seeds=5, crossing=(8.0, 9.0))
    filled = {d: 1 for d in step.tested}
    assert design.next(step, 6, filled) == [8, 9]
    assert design.next(step, 10, {**filled, 8: 5, 9: 3}) == [9]
    assert design.next(step, 13, {**filled, 8: 5, 9: 3}) == [9]  # room for one run
    # both ends with every seed: the rest of the interval, as before
    assert design.next(step, 12, {**filled, 8: 5, 9: 5}) == [12, 27]  # 5..64 in thirds
    assert design.done(step, 14, {**filled, 8: 5, 9: 5}) == "the budget of 14 runs is spent"


def test_a_narrow_interval_resting_on_one_run_at_each_end_runs_those_ends_again_before_it_ends():
    # one run a distance: the mean crosses halfway between 16 and 18, an interval within the factor
    design = Design(low=1, high=64, seeds=1, bracket=5, batch=2, factor=2, max_runs=12, replicates=5)
    narrow = Span(17.0, 11.0, 18.0, "", tested=(1, 3, 8, 16, 18, 23, 64), runs=7, seeds=5, crossing=(16.0, 18.0))
    counts = {d: 1 for d in (1, 3, 8, 16, 18, 23, 64)}
    assert design.done(narrow, 7, counts) == "" and design.next(narrow, 7, counts) == [16, 18]
    assert design.next(narrow, 8, {**counts, 16: 2}) == [18]
    assert design.done(narrow, 9, {**counts, 16: 2, 18: 2}).startswith("the interval is within a factor 2")
    assert design.done(narrow, 12, counts) == (  # no room left: it ends as it is, and says so
        "the budget of 12 runs is spent, the interval within a factor 2 but its crossing's ends and ceiling not each "
        "run 2 times"
    )
    assert Design(low=1, high=64, seeds=1, factor=2, replicates=1).done(narrow, 7, counts).startswith("the interval")


def test_a_narrow_interval_runs_its_ceilings_distance_again_before_it_ends():
    # halfway is measured from the ceiling: one run there is one seed's luck, and no spread to resample
    design = Design(low=1, high=64, seeds=1, bracket=5, batch=2, factor=2, max_runs=12, replicates=5)
    narrow = Span(
        17.0, 16.0, 18.0, "", tested=(1, 3, 8, 16, 18, 64), runs=8, seeds=5, crossing=(16.0, 18.0), ceiling_at=1.0
    )
    counts = {1: 1, 3: 1, 8: 1, 16: 2, 18: 2, 64: 1}
    assert design.done(narrow, 8, counts) == "" and design.next(narrow, 8, counts) == [1]
    assert design.done(narrow, 9, {**counts, 1: 2}).startswith("the interval is within a factor 2")


# The bag of embeddings' 12 runs on delayed_recall at 58fe130 (experiments/memory_span), one run a
# distance but at 25: its score sinks about 0.02 a doubling, and halfway from its ceiling (0.3005,
# distance 1) to chance is 0.2127, crossed between 25 and 26.
BAG = {  # distance: [(seed, test accuracy)]
    1: [(0, 0.3005)], 4: [(1, 0.2719)], 16: [(2, 0.2180)], 25: [(1, 0.2146), (0, 0.2141)], 26: [(4, 0.2126)],
    28: [(0, 0.2103)], 29: [(2, 0.2076)], 34: [(3, 0.2009)], 40: [(1, 0.1963)], 64: [(3, 0.1849)],
    256: [(4, 0.1584)],
}  # fmt: skip


def test_the_bootstrap_draws_seeds_again_at_each_distance_so_no_resample_loses_the_ceilings_only_run():
    rows = [(d, s, score, CHANCE) for d, runs in BAG.items() for s, score in runs]
    span = fit(*[np.array(c) for c in zip(*rows, strict=True)], higher=True)
    # resampling whole seeds dropped seed 0, and with it distance 1, from a resample in three: the
    # ceiling then came from distance 4 and halfway moved out, to an interval of [23.7, 149]
    assert span.crossing == (25.0, 26.0) and span.ceiling_at == 1.0
    assert span.low <= 25 and span.high >= 26 and span.width < 2, span.text()


def test_the_bootstrap_is_as_wide_as_the_seeds_disagree_at_a_distance():
    def span(second_at_ceiling):
        runs = {**BAG, 1: [(0, 0.3005), (3, second_at_ceiling)]}
        rows = [(d, s, score, CHANCE) for d, r in runs.items() for s, score in r]
        return fit(*[np.array(c) for c in zip(*rows, strict=True)], higher=True)

    agree, disagree = span(0.3001), span(0.2600)  # halfway from 0.28 on average: 0.2027, crossed near 34
    assert agree.width < 1.2 and disagree.high > 40 and disagree.width > 1.5, (agree.text(), disagree.text())


def test_a_crossing_whose_end_rests_on_runs_that_disagree_widens_to_where_a_resample_moves_it():
    # at 16 one seed recalls (0.95) and one does not (0.25): their mean is above halfway (0.5625),
    # but a resample of the two seeds at 16 can put it below, and the crossing at 8 to 16
    rows = [(1, 0, 1.0), (1, 1, 1.0), (4, 2, 1.0), (8, 3, 1.0), (8, 4, 1.0), (16, 0, 0.95), (16, 1, 0.25)]
    rows += [(32, 2, CHANCE), (32, 3, CHANCE), (64, 4, CHANCE)]
    span = fit(*[np.array(c) for c in zip(*rows, strict=True)], [CHANCE] * len(rows), higher=True)
    assert span.crossing == (16.0, 32.0) and (span.low, span.high) == (8.0, 32.0), span.text()


def test_the_ceiling_is_the_best_score_measured_not_one_extrapolated_below_the_range():
    # a bag of embeddings: the score sinks with log distance and still climbs below distance 1;
    # a free ceiling would sit above every score seen and put halfway above the data
    curve = lambda d: 0.30 - 0.025 * np.log2(d)  # noqa: E731, 0.30 at 1, 0.175 at 32, 0.15 at 64
    span = fit(*_runs(curve, [1, 4, 8, 16, 24, 32, 48, 64], seeds=2, noise=0.003), higher=True)
    assert span.amplitude <= 0.30 - CHANCE + 0.01, span.amplitude
    # halfway from 0.30 to chance: 0.2125 at d = 2**(0.0875 / 0.025), about 11.3
    assert not span.bound and span.low is not None and span.low < 11.3 < span.high, span.text()


def test_the_fit_refuses_runs_it_cannot_place_rather_than_give_a_number():
    d, s, score, chance = _runs(_step(4), [1, 2, 4, 8])
    for bad, match in (
        ((d, s, np.where(d == 2, np.nan, score), chance), "finite"),  # a diverged run: left out by its caller
        ((d, s, np.where(d == 2, np.inf, score), chance), "finite"),
        ((np.where(d == 2, 0.0, d), s, score, chance), "above 0"),
        ((d[:-1], s, score, chance), "equal number"),
        (([], [], [], []), "at least one"),
    ):
        with pytest.raises(ValueError, match=match):
            fit(*bad, higher=True)


def test_a_bound_from_one_run_a_distance_runs_its_distance_again_before_the_design_ends_on_it():
    # one run a distance: "< 1" rests on one seed at distance 1, which may be its luck
    design = Design(low=1, high=64, seeds=1, bracket=5, batch=2, factor=2, max_runs=12, replicates=5)
    below = Span(None, None, 1.0, "below", tested=(1, 3, 8, 23, 64), runs=5, seeds=5)
    counts = {1: 1, 3: 1, 8: 1, 23: 1, 64: 1}
    assert design.done(below, 5, counts) == "" and design.next(below, 5, counts) == [1]
    assert design.done(below, 9, {**counts, 1: 5}) == "a one-sided bound: < 1"  # every seed there: it stands
    assert design.done(below, 12, {**counts, 1: 4}) == "a one-sided bound: < 1"  # or the budget is spent
    above = Span(None, 64.0, None, "above", tested=(1, 3, 8, 23, 64), runs=5, seeds=5)
    assert design.next(above, 5, counts) == [64]
    assert design.done(below, 5) == "a one-sided bound: < 1"  # runs a distance not given: the bound ends it


def test_a_bound_confirmed_at_its_distance_by_every_seed_can_become_a_span():
    # a score above chance at distance 1 in every seed, none beyond: not "< 1" once all seeds ran there
    d, s, score, chance = _runs(lambda d: 0.21 if d == 1 else CHANCE, [1], noise=0.03)
    rest = [
        np.array(c)
        for c in zip(
            *[(x, i, CHANCE + 0.01 * (i % 2 - 0.5), CHANCE) for i, x in enumerate([3, 8, 23, 64])], strict=True
        )
    ]
    span = fit(*(np.concatenate([a, b]) for a, b in zip((d, s, score, chance), rest, strict=True)), higher=True)
    assert not span.bound and span.estimate < 3 and span.high is not None and span.high < 8


SWEEP = [
    "hydra/sweeper=span",
    "trainer.max_epochs=3",
    "trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "task.train_size=256",
    "task.val_size=64",
    "task.test_size=256",
    "model=mlp_window",
    "model.window=5",
    "hydra.sweeper.high=16",
    "hydra.sweeper.seeds=[0,1]",
]


def _command(tmp_path: Path, *overrides: str) -> list[str]:
    return [
        TRAIN,
        "-m",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"hydra.sweep.dir={tmp_path}/multirun",
        *SWEEP,
        *overrides,
    ]


def _parent(client: MlflowClient):
    experiment = client.get_experiment_by_name("delayed_recall")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if RunRecord.of(r).sweep]
    return (parents[0] if parents else None), [r for r in runs if not RunRecord.of(r).sweep]


def _design(client: MlflowClient, parent) -> dict:
    return json.loads(Path(client.download_artifacts(parent.info.run_id, "span.json")).read_text())


@pytest.fixture(scope="module")
def window_span(tmp_path_factory):
    """A span sweep of an MLP that sees 5 steps, through the joblib launcher (2 workers)."""
    tmp_path = tmp_path_factory.mktemp("span")
    proc = run_command(
        _command(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent, children = _parent(client)
    return proc, client, parent, children


def test_the_span_of_a_window_is_its_window_measured_through_the_joblib_launcher(window_span):
    proc, client, parent, children = window_span
    metrics = client.get_run(parent.info.run_id).data.metrics
    assert metrics["span_low"] <= 5 <= metrics["span_high"], metrics  # recalls d <= 4, at chance from d = 5
    assert metrics["span_runs"] == len(children)
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    pids = {RunRecord.of(r).pid for r in children}
    assert len(pids) == 2  # the runs ran in joblib's two worker processes
    design = _design(client, parent)
    (variant,) = design["variants"]
    ran = {(r.data.params["task.distance"], r.data.params["seed"]) for r in children}
    assert ran == {(str(d), str(s)) for d, s in variant["runs"]}  # every run placed ran, once
    assert design["variants"][0]["rounds"][0]["runs"] == 8  # the bracket: 1, 3, 6, 16 x 2 seeds
    assert "span sweep, round 1:" in proc.stdout


def test_a_stopped_span_sweep_resumed_runs_nothing_twice_and_reaches_the_same_design(tmp_path, window_span):
    _, reference_client, reference, _ = window_span
    client = Store.parse(f"sqlite:///{tmp_path}/mlflow.db").client()
    command = _command(tmp_path)
    first = subprocess.Popen(
        command, cwd=tmp_path, stdout=open(tmp_path / "out", "w"), stderr=open(tmp_path / "err", "w")
    )
    deadline = time.monotonic() + 300
    try:
        while sum(r.info.status == "FINISHED" for r in _parent(client)[1]) < 5:  # within round 0's 8 runs
            assert first.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.3)
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    finally:
        first.kill()
    parent, before = _parent(client)
    assert parent.info.status == "FAILED"
    finished_before = {r.info.run_id for r in before if r.info.status == "FINISHED"}
    # another command cannot resume it: its design would mix two sweeps
    other = run_command(
        [*command, "model.window=3", f"resume_sweep={parent.info.run_id}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1].startswith(
        f"rnnexp-train: error: resume_sweep='{parent.info.run_id}' is not allowed: the parent of a span sweep made by "
        "the same command"
    ), other.stderr[-2000:]
    assert client.get_run(parent.info.run_id).info.status == "FAILED"
    assert {r.info.run_id for r in _parent(client)[1]} == {r.info.run_id for r in before}  # nothing ran
    resumed = run_command(
        command + [f"resume_sweep={parent.info.run_id}"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("skipped: this job already FINISHED") == len(finished_before)
    _, children = _parent(client)
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len({r.data.tags["config_hash"] for r in finished}) == len(finished)  # none twice
    assert finished_before <= {r.info.run_id for r in finished}
    placed = [
        {k: v[k] for k in ("label", "runs", "rounds", "span", "done")} for v in _design(client, parent)["variants"]
    ]
    assert placed == [
        {k: v[k] for k in ("label", "runs", "rounds", "span", "done")}
        for v in _design(reference_client, reference)["variants"]
    ]
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    "override, error",
    [
        (
            "hydra.sweeper.key=model.dropout",
            "hydra.sweeper.key='model.dropout' is not allowed: an integer key of the config (task.distance, "
            "task.length); model.dropout is 0.0 here",
        ),
        ("hydra.sweeper.key=optim.lr", "hydra.sweeper.key='optim.lr' is not allowed: a key of the task or model"),
        ("hydra.sweeper.key=task.nothing", "task.nothing is not a key of the config"),
        ("hydra.sweeper.low=0", "hydra.sweeper.low=0 is not allowed: an integer of at least 1"),
        (
            "hydra.sweeper.max_runs=7",
            "hydra.sweeper.max_runs=7 is not allowed: at least 8, the bracket's runs (4 distances x 2 runs)",
        ),
        ("task.distance=3,4", "task.distance='3,4' is not allowed: set by the span sweeper: give its range as"),
        ("hydra.sweeper.key=seed", "hydra.sweeper.key='seed' is not allowed: a key of the task or model"),
        ("hydra.sweeper.factor=nan", "hydra.sweeper.factor=nan is not allowed: a number above 1"),
        ("hydra.sweeper.seeds=[0,4294967296]", "is not allowed: distinct integers from 0 to 4294967295"),
        (
            "hydra.sweeper.key=task",
            "hydra.sweeper.key='task' is not allowed: an integer key of the config (task.distance, "
            "task.length); task is a group of keys here",
        ),
        (
            "task=adding hydra.sweeper.high=60",  # adding's length is 50
            "hydra.sweeper.high=60 is not allowed: a task.distance this config takes (task.distance=60 is not",
        ),
    ],
)
def test_a_span_sweep_that_cannot_run_is_one_line_and_leaves_no_parent_run(tmp_path, override, error):
    proc = run_command(_command(tmp_path, *override.split()), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert error in one_error_line(proc)
    assert not (tmp_path / "mlflow.db").exists() or _parent(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"))[0] is None


def test_the_report_of_a_span_sweep_gives_the_span_table_and_its_curves(window_span, tmp_path):
    from rnnexp.report import main as report_main

    _, client, parent, _ = window_span
    uri = client.tracking_uri
    for which in (["--parent", parent.info.run_id], ["--experiment", "delayed_recall"]):  # found by its tag
        out = tmp_path / which[0].strip("-")
        report_main(["--uri", uri, *which, "--out", str(out)])
        (row,) = csv.DictReader(open(out / "spans.csv"))
        assert row["label"] == "mlp_window" and float(row["span_low"]) <= 5 <= float(row["span_high"]), row
        assert row["flags"].startswith("fewer than 5 seeds (2)")
        assert (out / "span_curves.png").stat().st_size > 10_000
        assert "| delayed_recall | mlp_window |" in (out / "spans.md").read_text()
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/spans.md" in logged and "report/span_curves.png" in logged


def _frame(curves: dict[str, float], seeds: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and a results table of variants (model labels) whose score falls as a logistic with
    the span given, at distances 1 to 64."""
    rng = np.random.default_rng(0)
    rows = []
    for label, span in curves.items():
        for d in (1, 2, 4, 8, 16, 32, 64):
            for s in range(seeds):
                score = min(1.0, CHANCE + 0.85 / (1 + (d / span) ** 4) + rng.normal(0, 0.02))  # an accuracy
                rows.append(
                    {
                        "task": "delayed_recall",
                        "label": label,
                        "params.task.distance": str(d),
                        "task.distance": str(d),
                        "seed": s,
                        "score": score,
                        "chance": CHANCE,
                        "better": "higher",
                        "metric": "acc",
                        "n_params": 1000,
                        "n_test_scored": 12800,
                        "variant": f"{label}-{d}",
                    }
                )
    runs = pd.DataFrame(rows)
    table = runs.drop_duplicates("variant").assign(flags="")
    return runs, table


def test_spans_apart_are_told_apart_and_alike_are_not():
    from rnnexp.report.spans import compare_spans, spans

    runs, table = _frame({"long": 24.0, "short": 6.0, "also short": 6.0})
    found, fits = spans(runs, table, ["task.distance"], "task.distance")
    assert list(found["label"]) == ["also short", "long", "short"]
    compared = compare_spans(found, fits).set_index(["a", "b"])
    assert compared.loc[("also short", "long"), "verdict"].startswith("b longer (")
    assert compared.loc[("long", "short"), "verdict"].startswith("a longer (")
    assert compared.loc[("long", "short"), "ratio"] == pytest.approx(4, rel=0.15)
    assert compared.loc[("also short", "short"), "verdict"].startswith("no difference shown (")
    assert (compared["p_holm"] >= compared["p"]).all()


def test_spans_whose_refits_differ_inside_one_crossing_are_not_told_apart():
    # both fall between the tested distances 8 and 16: each refit keeps its fit's placement there,
    # so the bootstrap tells 10 from 12 where the runs cannot
    from rnnexp.report.spans import compare_spans, spans

    runs, table = _frame({"ten": 10.0, "twelve": 12.0})
    found, fits = spans(runs, table, ["task.distance"], "task.distance")
    assert [(f.low, f.high) for f in fits] == [(8, 16), (8, 16)], [f.text() for f in fits]
    row = compare_spans(found, fits).iloc[0]
    assert row["p_holm"] < 0.05 and row["ratio_low"] <= 0.5 and row["ratio_high"] >= 2, row
    assert row["verdict"].startswith("no difference shown (") and row["verdict"].endswith("the intervals overlap)")


def test_spans_whose_intervals_meet_at_a_distance_are_not_told_apart():
    from rnnexp.report.spans import compare_spans

    table = pd.DataFrame({"task": ["t", "t"], "label": ["long", "short"], "shown": ["", ""], "metric": ["acc"] * 2})
    long = Span(28.0, 23.0, 32.0, "", tested=(1, 23, 32, 64), runs=8, seeds=5, samples=(3.3,) * 1000)
    short = Span(19.0, 16.0, 23.0, "", tested=(1, 16, 23, 64), runs=8, seeds=5, samples=(2.9,) * 1000)
    row = compare_spans(table, [long, short]).iloc[0]
    assert row["verdict"].startswith("no difference shown (") and row["ratio_low"] == 1.0, row["verdict"]
    apart = Span(28.0, 24.0, 32.0, "", tested=(1, 24, 32, 64), runs=8, seeds=5, samples=(3.3,) * 1000)
    assert compare_spans(table, [apart, short]).iloc[0]["verdict"].startswith("a longer (")


def test_seeds_that_split_at_a_distance_are_flagged_and_the_comparisons_carry_the_flag():
    # at distance 16 one run recalls (0.55 of 1,000 steps) and one is at chance (0.13): the mean
    # crosses halfway there, on runs that disagree; elsewhere the runs agree, so no other flag
    from rnnexp.report.spans import compare_spans, spans

    scores = {"splits": {1: (1.0, 1.0), 4: (0.99, 1.0), 16: (0.55, 0.13), 64: (0.12, 0.13)}}
    scores["agrees"] = {1: (1.0, 1.0), 4: (0.99, 1.0), 16: (0.55, 0.57), 64: (0.12, 0.13)}
    rows = [
        {"task": "delayed_recall", "label": label, "params.task.distance": str(d), "task.distance": str(d),
         "seed": s, "score": score, "chance": CHANCE, "better": "higher", "metric": "acc", "n_params": 1000,
         "n_test_scored": 1000, "variant": f"{label}-{d}"}
        for label, curve in scores.items() for d, pair in curve.items() for s, score in enumerate(pair)
    ]  # fmt: skip
    runs = pd.DataFrame(rows)
    found, fits = spans(runs, runs.drop_duplicates("variant").assign(flags=""), ["task.distance"], "task.distance")
    flags = dict(zip(found["label"], found["flags"], strict=True))
    assert flags["splits"] == "fewer than 5 seeds (2); seeds split (runs above chance at distance 16: 1 of 2)"
    assert flags["agrees"] == "fewer than 5 seeds (2)"
    (row,) = compare_spans(found, fits).to_dict("records")
    assert row["flags"] == f"a: {flags['agrees']}; b: {flags['splits']}"
    # a loss has no hits to count: no split is claimed from it
    losses = runs.assign(metric="xent", better="lower")
    found, _ = spans(losses, losses.drop_duplicates("variant").assign(flags=""), ["task.distance"], "task.distance")
    assert not found["flags"].str.contains("seeds split").any()


def test_the_span_table_gives_the_runs_at_each_distance():
    from rnnexp.report.spans import _runs_at

    assert _runs_at(np.array([1.0, 16, 1, 4, 16, 16])) == "1 ×2, 4, 16 ×3"


def test_one_run_a_distance_still_shows_the_fall_and_a_ceiling_no_accuracy_can_pass():
    # the design of experiments/memory_span (per_distance: 1): a window of 2 recalls distance 1 only
    span = fit([1, 3, 6, 16], [0, 1, 0, 1], [1.0, 0.12, 0.125, 0.118], [CHANCE] * 4, higher=True)
    assert not span.bound and (span.low or 0) <= 2 <= span.high, span.text()
    span = fit([1, 3, 8, 23, 64], range(5), [0.99, 0.60, 0.14, 0.12, 0.13], [CHANCE] * 5, higher=True)
    assert not span.bound and 3 <= span.high and span.estimate > 2, span.text()
    # near the ceiling at both distances run: the ceiling is at most 1 - chance, so no fall is seen
    assert fit([1, 2], [0, 0], [0.992, 0.961], [CHANCE] * 2, higher=True).text() == "> 2"
    assert fit([1, 3, 8, 23, 64], range(5), [0.126, 0.124, 0.125, 0.127, 0.123], [CHANCE] * 5, True).bound == "below"


def test_a_span_sweep_s_params_set_the_runs_config_never_hydra_s(tmp_path):
    """Each job gets the params' values: a Hydra setting there (a folder outside the sweep's, a
    log handler naming code) would pass by the checks the command line gets."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "evil.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n"
        "      hydra.sweep.subdir: ../../outside,../../elsewhere\n"
    )
    proc = run_command(
        [TRAIN, "-m", "--config-dir", str(tmp_path / "conf"), *_command(tmp_path)[2:], "experiment=evil"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "rnnexp-train: error: hydra.sweeper.params.hydra.sweep.subdir='../../outside,../../elsewhere' is not "
        "allowed: a key of the run's config, not Hydra's"
    ]
    assert not (tmp_path.parent / "outside").exists()
    assert not (tmp_path / "mlflow.db").exists() or _parent(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"))[0] is None
