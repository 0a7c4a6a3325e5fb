"""The learning-rate recipe: stage 1 selects on validation, stage 2 takes each variant's choice."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from rnnexp.store import RunRecord
from rnnexp.tuning import SelectionError, choose
from tests.conftest import BIN, TRAIN, log_run, run_command

TINY = [
    "task.length=10",
    "task.distance=3",
    "task.train_size=256",
    "task.val_size=128",
    "task.test_size=128",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _run(
    lr: float, seed: int, best_val: float | None, status: str = "FINISHED", select_on: str = "metric", start: int = 0
):
    tags = {
        "better": "higher",
        "metric": "acc",
        "pattern": "1",  # as rnnexp.train.monitor names them
        "monitor": "val/loss" if select_on == "loss" else "val/acc",
        "monitor_mode": "min" if select_on == "loss" else "max",
    }
    if best_val is not None:
        tags["best_val"] = repr(best_val)
    return SimpleNamespace(
        info=SimpleNamespace(status=status, start_time=start, run_id=f"r{lr}-{seed}"),
        data=SimpleNamespace(
            params={"optim.lr": str(lr), "seed": str(seed), "trainer.select_on": select_on}, tags=tags
        ),
    )


def test_the_rate_with_the_best_mean_validation_score_wins_and_a_diverged_rate_is_out():
    runs = [
        _run(1e-3, 0, 0.50),
        _run(1e-3, 1, 0.60),
        _run(1e-2, 0, 0.70),
        _run(1e-2, 1, 0.52),
        _run(1e-1, 0, 0.99),
        _run(1e-1, 1, None, status="FAILED"),
    ]
    choice = choose(runs, "exp_lr")
    assert choice.lr == 1e-2 and choice.grid == (1e-3, 1e-2, 1e-1) and choice.seeds == (0, 1)
    assert choice.means[:2] == pytest.approx((0.55, 0.61)) and math.isnan(choice.means[2])
    assert choice.quantity == "val/acc"
    assert "lr 0.01, the best mean val/acc over seeds 0, 1 in experiment exp_lr" in choice.describe("exp_lr")
    # on the loss, lower is better; a tie goes to the smaller rate
    loss = [
        _run(1e-3, 0, 0.4, select_on="loss"),
        _run(1e-2, 0, 0.3, select_on="loss"),
        _run(1e-1, 0, 0.3, select_on="loss"),
    ]
    assert choose(loss, "exp_lr").lr == 1e-2 and choose(loss, "exp_lr").quantity == "val/loss"
    # a re-run of a seed replaces the earlier run
    rerun = [_run(1e-3, 0, 0.9, start=1), _run(1e-2, 0, 0.5, start=2), _run(1e-3, 0, 0.1, start=3)]
    assert choose(rerun, "exp_lr").lr == 1e-2


@pytest.mark.parametrize(
    "runs,expected",
    [
        ([_run(1e-3, 0, 0.5), _run(1e-3, 1, 0.6), _run(1e-2, 0, 0.7)], "lr 0.01 lacks seed 1"),
        ([_run(1e-3, 0, 0.5), _run(1e-3, 1, 0.6)], "it has runs at 1 learning rate"),
        ([_run(1e-3, 0, 0.5), _run(1e-2, 0, None, status="KILLED")], "lr 0.01 seed 0 is KILLED"),
    ],
)
def test_an_incomplete_selection_chooses_nothing(runs, expected):
    with pytest.raises(SelectionError, match=expected):
        choose(runs, "exp_lr")


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("best_val", "abc", "has best_val='abc', not a finite float"),
        ("best_val", "inf", "has best_val='inf', not a finite float"),
        ("optim.lr", "-0.01", "has optim.lr='-0.01', not a finite number from 1e-08 to 10"),
        ("optim.lr", "1e9", "has optim.lr='1e9', not a finite number from 1e-08 to 10"),
        ("seed", "1.0", "has seed='1.0', not a finite int"),
    ],
)
def test_a_value_of_the_store_that_is_no_number_or_out_of_range_chooses_nothing(key, value, expected):
    # a tampered or hand-edited store: one reason, naming the run, never a traceback or a silent choice
    runs = [_run(1e-3, 0, 0.5), _run(1e-2, 0, 0.7)]
    (runs[1].data.tags if key == "best_val" else runs[1].data.params)[key] = value
    with pytest.raises(SelectionError, match=re.escape(f"run r0.01-0 {expected}")):
        choose(runs, "exp_lr")
    older = [_run(1e-3, 0, 0.5), _run(1e-2, 0, 0.7)]
    del older[0].data.tags["monitor"]  # a run from before the tag: what its best_val is the best of is unknown
    with pytest.raises(SelectionError, match="has no monitor tag"):
        choose(older, "exp_lr")
    untagged = [_run(1e-3, 0, 0.5), _run(1e-2, 0, None)]
    with pytest.raises(SelectionError, match="lr 0.01 seed 0 is FINISHED without its best_val tag"):
        choose(untagged, "exp_lr")


def _train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    flags = [o for o in overrides if o.startswith("-")]  # before the overrides: argparse takes them so
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    return run_command(
        [
            TRAIN,
            *flags,
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.run.dir={tmp_path}/out",
            f"hydra.sweep.dir={tmp_path}/multirun",
            *TINY,
            *overrides,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _stage_1(tmp_path: Path, compose_train, scores: dict[float, tuple[float, ...]]) -> str:
    """Stage 1 as rnnexp-train records it, written straight into the store (what stage 2 reads of
    it: each run's params, the run's resolved config, and its record's monitor and best_val), one
    FINISHED run per rate and seed; the experiment's id."""
    from rnnexp.store import Store

    client = Store.parse(f"sqlite:///{tmp_path}/mlflow.db").client()
    experiment = client.create_experiment("recall_lr")
    for lr, per_seed in scores.items():
        for seed, best_val in enumerate(per_seed):
            cfg = compose_train(*TINY, f"optim.lr={lr}", f"seed={seed}", "tracking.experiment=recall_lr")
            log_run(client, experiment, cfg, {}, monitor="val/acc", monitor_mode="max", best_val=best_val)
    return experiment


def test_stage_2_takes_the_rate_stage_1_chose_on_validation_for_its_variant(tmp_path, compose_train):
    experiment = _stage_1(tmp_path, compose_train, {0.0003: (0.31, 0.35), 0.03: (0.52, 0.47)})
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    expected = 0.03  # the higher mean val/acc

    proc = _train(tmp_path, "-m", "optim.lr_from=recall_lr", "seed=2", "tracking.experiment=recall")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = client.search_runs([client.get_experiment_by_name("recall").experiment_id])
    (parent,) = [r for r in runs if RunRecord.of(r).sweep]
    (run,) = [r for r in runs if not RunRecord.of(r).sweep]
    assert float(run.data.params["optim.lr"]) == expected and run.data.params["optim.lr_from"] == "recall_lr"
    assert run.data.tags["lr_choice"].startswith(
        f"lr {expected:g} at the grid's top, the best mean val/acc over seeds 0, 1"
    )  # a grid of two: every choice is at an edge, and the record says which grid it came from
    assert run.data.tags["lr_grid"] == "0.0003,0.03"
    assert "Test data are never read" in parent.data.tags["lr_rule"] and parent.data.tags["lr_from"] == "recall_lr"
    assert re.search(rf"  lr +{expected:g} +\(chosen on validation in experiment recall_lr\)", proc.stdout)

    # a variant stage 1 did not run, and an experiment that does not exist: one line, exit 2, no run
    for override, message in (
        ("task.distance=4", "none of the 4 runs of experiment recall_lr has this run's config"),
        ("optim.lr_from=nowhere", "no experiment 'nowhere' in the store"),
        # into the selection itself: it would count as one of its runs
        ("tracking.experiment=recall_lr", "another experiment than the one this run is tracked"),
    ):
        proc = _train(tmp_path, "optim.lr_from=recall_lr", "tracking.experiment=refused", override)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("rnnexp-train: error: optim.lr_from=")
        assert message in lines[0], lines[0]
        assert client.get_experiment_by_name("refused") is None
    assert len(client.search_runs([experiment])) == 4  # the selection's 4 runs, untouched
    # a sweep taking its rates from a selection the store lacks: refused before its parent run exists
    proc = _train(tmp_path, "-m", "optim.lr_from=nowhere_lr", "tracking.experiment=refused", "seed=0,1")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "rnnexp-train: error: optim.lr_from='nowhere_lr' is not allowed: no experiment 'nowhere_lr' in the "
        "store: stage 1 writes it, run it first (`make tune-lr EXP=nowhere`, with the same URI); "
        f"experiments: {', '.join(sorted(e.name for e in client.search_experiments()))}"
    ], proc.stderr[-2000:]
    assert client.get_experiment_by_name("refused") is None
    # a rate shared over the distance: chosen at stage 1's one distance, taken at another
    proc = _train(
        tmp_path,
        "optim.lr_from=recall_lr",
        "optim.lr_shared_over=[task.distance]",
        "task.distance=4",
        "tracking.experiment=shared",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert float(run.data.params["optim.lr"]) == expected and run.data.params["task.distance"] == "4"
    assert "chosen at task.distance=3 and shared over every task.distance" in run.data.tags["lr_choice"]
    proc = _train(tmp_path, "optim.lr_from=recall_lr", "optim.lr_shared_over=[task.distanse]", "tracking.experiment=x")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "rnnexp-train: error: optim.lr_shared_over='task.distanse' is not allowed: "
        "a key of the run's config other than the seed and optim.lr*, "
        "e.g. task.distance"
    )
    proc = _train(
        tmp_path,
        "optim.lr_from=recall_lr",
        "optim.lr_shared_over=[task.distance,task.distance]",
        "tracking.experiment=x",
    )
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "rnnexp-train: error: optim.lr_shared_over=['task.distance', 'task.distance'] is not allowed: each key once"
    )
    # an lr given beside optim.lr_from is refused, even the default: the lr is what stage 1 chose
    proc = _train(tmp_path, "optim.lr_from=recall_lr", "optim.lr=0.003")
    assert proc.returncode == 2 and "optim.lr='0.003'" in proc.stderr and "optim.lr_from" in proc.stderr

    printed = run_command(
        [
            sys.executable,
            "-m",
            "rnnexp.tuning",
            "--experiment",
            "recall_lr",
            "--uri",
            f"sqlite:///{tmp_path}/mlflow.db",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    assert (
        printed.stdout.startswith("rnn_hidden (rnn) on delayed_recall d=3: val/acc")
        and f"*{expected:g}=" in printed.stdout
    )

    report = run_command(
        [
            str(BIN / "rnnexp-report"),
            "--experiment",
            "recall",
            "--uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "--out",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    assert "optim.lr of 1 of 1 variants chosen on validation data in experiment recall_lr" in report.stdout
    assert " optim.lr " in report.stdout.splitlines()[0]  # the chosen rate is a column of the table


def test_a_run_logs_the_length_its_task_solved_and_still_takes_the_rate_chosen_where_it_was_solved_apart(
    tmp_path, compose_train
):
    """task.length=None is solved as distance + 25: stage 1 at distance 3 logged 28, a run at
    distance 4 logs 29, and the choice shared over the distance still reaches it."""
    from rnnexp.store import Store

    unsized = [o for o in TINY if not o.startswith("task.length")]
    client = Store.parse(f"sqlite:///{tmp_path}/mlflow.db").client()
    experiment = client.create_experiment("recall_lr")
    for lr, per_seed in {0.0003: (0.31, 0.35), 0.03: (0.52, 0.47)}.items():
        for seed, best_val in enumerate(per_seed):
            cfg = compose_train(*unsized, f"optim.lr={lr}", f"seed={seed}", "tracking.experiment=recall_lr")
            log_run(client, experiment, cfg, {}, monitor="val/acc", monitor_mode="max", best_val=best_val)
    (selected, *_) = client.search_runs([experiment])
    assert selected.data.params["task.length"] == "28" and selected.data.tags["solved"] == "task.length"
    proc = _train(
        tmp_path,
        "task.length=null",
        "task.distance=4",
        "optim.lr_from=recall_lr",
        "optim.lr_shared_over=[task.distance]",
        "tracking.experiment=shared",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert run.data.params["task.length"] == "29" and run.data.tags["length"] == "29"
    assert float(run.data.params["optim.lr"]) == 0.03 and run.data.tags["solved"] == "task.length"
    # the config the run replays with keeps the length to be solved: at another distance, another length
    config_yaml = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert "length: null" in config_yaml.read_text()


def _scored(run, val: float, chance: float = 0.125):
    """`run` with the last validation accuracy and chance level a training run logs."""
    run.data.metrics = {"val/acc": val, "chance_level": chance}
    run.data.tags["task"] = "delayed_recall"
    return run


def test_a_choice_where_every_rate_scores_alike_is_uninformative_and_one_at_the_edge_says_so():
    alike = [_scored(_run(lr, s, 0.9 + 0.01 * s + lr), 1.0) for lr in (1e-3, 1e-2, 1e-1) for s in (0, 1)]
    choice = choose(alike, "exp_lr")
    assert choice.informative is False and choice.edge == "top"  # best_val ranks them; accuracy cannot
    assert "lr 0.1 at the grid's top; uninformative: the rates scored alike" in choice.describe("exp_lr")
    differ = [_scored(_run(lr, s, v), v) for lr, v in ((1e-3, 0.3), (1e-2, 0.9), (1e-1, 0.5)) for s in (0, 1)]
    choice = choose(differ, "exp_lr")
    assert choice.informative is True and choice.edge == "" and choice.lr == 1e-2
    assert choose([_run(1e-3, 0, 0.5), _run(1e-2, 0, 0.7)], "exp_lr").informative is None  # no val/acc logged
    # every rate at chance (a window that cannot see the symbol): the rates differ only by noise
    noise = [_scored(_run(lr, s, v), v) for lr, v in ((1e-3, 0.126), (1e-2, 0.131), (1e-1, 0.124)) for s in (0, 1)]
    assert choose(noise, "exp_lr").informative is False


def test_a_rate_shared_over_a_key_is_chosen_at_the_hardest_value_where_the_best_rate_is_above_chance(monkeypatch):
    from rnnexp import tuning

    # distance 8: every rate perfect; 32: the rates differ, 0.01 above chance; 64: all at chance
    grid = {"8": (1.0, 1.0), "32": (0.13, 0.6), "64": (0.125, 0.126)}
    runs = [
        _scored(_run(lr, s, v), v)
        for d, scores in grid.items()
        for lr, v in zip((1e-3, 1e-2), scores, strict=True)
        for s in (0, 1)
    ]
    for run, d in zip(runs, [d for d in grid for _ in range(4)], strict=True):
        run.data.params["task.distance"] = d
    monkeypatch.setattr(tuning, "_runs", lambda store, experiment: runs)
    mine = {"optim.lr": "0.003", "seed": "4", "trainer.select_on": "metric", "task.distance": "64"}
    choice = tuning.chosen_lr(None, "exp_lr", mine, ("task.distance",))
    assert choice.at == (("task.distance", "32"),) and choice.lr == 1e-2 and choice.informative is True
    with pytest.raises(SelectionError, match="none of the 12 runs"):  # not shared: distance 16 is not in stage 1
        tuning.chosen_lr(None, "exp_lr", mine | {"task.distance": "16"})
    del runs[4:8]  # no distance but 8 and 64: 8 is the hardest above chance, and uninformative
    choice = tuning.chosen_lr(None, "exp_lr", mine, ("task.distance",))
    assert choice.at == (("task.distance", "8"),) and choice.informative is False
    del runs[:4]  # only distance 64, at chance: one value is still its own choice
    assert tuning.chosen_lr(None, "exp_lr", mine, ("task.distance",)).at == (("task.distance", "64"),)
    for run in runs:
        run.data.params["task.distance"] = "64" if run.data.params["seed"] == "0" else "65"
    with pytest.raises(SelectionError, match="at none of them does its best rate score above chance"):
        tuning.chosen_lr(None, "exp_lr", mine, ("task.distance",))


def test_a_choice_at_the_grids_edge_asks_for_one_step_beyond_it_within_the_bound(monkeypatch):
    from rnnexp import tuning

    top = [_run(lr, 0, v) for lr, v in ((1e-3, 0.2), (1e-2, 0.5))]
    bottom = [_run(lr, 0, v) for lr, v in ((1e-3, 0.9), (1e-2, 0.5))]
    for run in bottom:
        run.data.params["model.cell"] = "gru"
    inside = [_run(lr, 0, v) for lr, v in ((1e-3, 0.2), (3e-3, 0.9), (1e-2, 0.5))]
    for run in inside:
        run.data.params["model.cell"] = "lstm"
    monkeypatch.setattr(tuning, "_runs", lambda store, experiment: top + bottom + inside)
    assert tuning.beyond_edges(None, "exp_lr") == [1e-4, 0.1]
    assert tuning.beyond_edges(None, "exp_lr", (1e-3, 1e-2)) == []  # the bound is reached: no more


def test_a_run_that_takes_its_rate_keeps_its_identity_when_the_rate_is_set(compose_train):
    # a resumed sweep finds its FINISHED jobs by config_hash, before the rate is chosen
    from rnnexp.tracking import config_hash

    cfg = compose_train("optim.lr_from=recall_lr")
    before = config_hash(cfg)
    cfg.optim.lr = 0.03
    assert config_hash(cfg) == before
    assert config_hash(compose_train("optim.lr_from=other_lr")) != before  # where it comes from is the identity


def test_a_stage_1_whose_every_rate_is_at_chance_is_reported_uninformative(tmp_path):
    # real runs: an MLP seeing 1 step cannot recall the symbol 3 back, whatever its rate
    proc = _train(
        tmp_path,
        "-m",
        "model=mlp_window",
        "model.window=1",
        "task.test_size=512",
        "task.val_size=512",
        "optim.lr=0.001,0.01",
        "seed=0,1",
        "tracking.experiment=blind_lr",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = run_command(
        [sys.executable, "-m", "rnnexp.tuning", "--experiment", "blind_lr", "--uri", f"sqlite:///{tmp_path}/mlflow.db"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert table.returncode == 0, table.stderr
    (line,) = [line for line in table.stdout.splitlines() if line.startswith("mlp_window on delayed_recall")]
    assert "(uninformative: the rates scored alike, or none above chance; choose where they differ" in line, line
