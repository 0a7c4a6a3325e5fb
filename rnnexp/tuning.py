"""A learning rate per model variant, chosen on validation data: the fair-comparison recipe.

Stage 1, the selection (`make tune-lr EXP=NAME`): every variant of an experiment trained at each
learning rate of a log grid, with a few seeds, into the MLflow experiment `NAME_lr`. Stage 2,
the result (`make sweep EXP=NAME LR_FROM=NAME_lr`, i.e. `optim.lr_from=NAME_lr`): each run takes
the learning rate chosen for its variant by `RULE`, from the runs of stage 1 whose config is its
own but for `optim.lr` and the seed. Only the validation score each run's checkpoint was chosen
on (tag `best_val`) is read; never a test metric.

`python -m rnnexp.tuning --experiment NAME_lr` prints what stage 1 chose for every variant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnexp.store import Store, uri_option

RULE = (
    "for each learning rate, the mean over seeds of the best validation score the checkpoint is chosen on "
    "(tag best_val; the loss under trainer.select_on=loss); the best mean wins, ties to the smaller rate; "
    "a rate at which any seed failed (diverged) is out. Test data are never read"
)
# besides the seed: the keys a selection run differs in from the run that takes its choice
TUNED = ("optim.lr", "optim.lr_from", "optim.lr_shared_over")


class SelectionError(ValueError):
    """No learning rate can be chosen: the message says why, naming the experiment."""


@dataclass(frozen=True)
class Choice:
    lr: float
    grid: tuple[float, ...]
    seeds: tuple[int, ...]
    means: tuple[float, ...]  # the grid's mean best validation scores, NaN where a seed failed
    quantity: str  # what was compared: "val/loss", "val/acc", ...
    at: tuple[tuple[str, str], ...] = ()  # the value of each key the choice is shared over
    # False: every rate scored within the best rate's seeds (its range) on the task's validation
    # metric, or not even the best rate is above chance, so the choice says nothing about which
    # rate is better; None: not known
    informative: bool | None = None

    @property
    def edge(self) -> str:
        """ "bottom" or "top" where the rate chosen is the grid's smallest or largest, else ""."""
        return "bottom" if self.lr == min(self.grid) else "top" if self.lr == max(self.grid) else ""

    def describe(self, experiment: str) -> str:
        scores = ", ".join(
            f"{lr:g}: {'failed' if np.isnan(m) else f'{m:.4g}'}" for lr, m in zip(self.grid, self.means, strict=True)
        )
        where = "".join(f", chosen at {k}={v} and shared over every {k}" for k, v in self.at)
        caveats = (" at the grid's " + self.edge if self.edge else "") + (
            "; uninformative: the rates scored alike, or none above chance" if self.informative is False else ""
        )
        return (
            f"lr {self.lr:g}{caveats}, the best mean {self.quantity} over seeds {', '.join(map(str, self.seeds))} in "
            f"experiment {experiment}{where} ({scores})"
        )


def selection_key(params: Mapping[str, str], shared: tuple[str, ...] = ()) -> str:
    """What a run is, less its seed, its learning rate and the keys the choice is `shared` over:
    runs of one key are one variant's grid."""
    from rnnexp.tracking import variant_hash

    return variant_hash({k: v for k, v in params.items() if k not in TUNED and k not in shared})


def _as_given(run: Any) -> dict[str, str]:
    """A selection run's params as given (its solved keys at None), as a run choosing its rate has them."""
    from rnnexp.store import RunRecord
    from rnnexp.tracking import as_given

    return as_given(run.data.params, RunRecord.of(run))


def missing_selection(experiment: str, names: Any) -> str:
    """Why a selection experiment that the store lacks chooses nothing, and what makes it."""
    stage1 = experiment.removesuffix("_lr")
    return (
        f"no experiment {experiment!r} in the store: stage 1 writes it, run it first "
        f"(`make tune-lr EXP={stage1}`, with the same URI); experiments: {names}"
    )


def _runs(store: Store, experiment: str) -> list[Any]:
    """Stage 1's runs in `experiment`; SelectionError if there is no such experiment."""
    client = store.client()
    if (experiment_id := store.experiment_named(client, experiment)) is None:
        raise SelectionError(missing_selection(experiment, store.experiment_names(client)))
    return store.selection_runs(client, experiment_id)


def _number(run: Any, key: str, value: str, kind: type = float) -> Any:
    """A number read from the store: a value that is not one (a tampered or hand-edited store)
    chooses nothing."""
    from rnnexp.config import OptimConfig

    try:
        number = kind(value)
    except ValueError:
        number = None
    low, high = (
        (f.metadata["low"], f.metadata["high"])
        if key == "optim.lr" and (f := OptimConfig.__dataclass_fields__["lr"])
        else (-np.inf, np.inf)
    )
    if number is None or not np.isfinite(number) or not low <= number <= high:
        allowed = f"a finite number from {low:g} to {high:g}" if key == "optim.lr" else f"a finite {kind.__name__}"
        raise SelectionError(f"run {run.info.run_id} has {key}={value!r}, not {allowed}: a store edited by hand?")
    return number


def choose(runs: list[Any], experiment: str) -> Choice:
    """The learning rate `RULE` picks among one variant's selection runs."""
    from rnnexp.store import RunRecord

    first = RunRecord.of(runs[0])
    if first.monitor is None:  # what best_val is the best of (rnnexp.train.monitor)
        raise SelectionError(f"run {runs[0].info.run_id} has no monitor tag: run stage 1 again")
    lower = first.monitor_mode == "min"
    latest: dict[tuple[float, int], Any] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):  # a re-run of a seed replaces it
        lr, seed = (
            _number(run, "optim.lr", run.data.params["optim.lr"]),
            _number(run, "seed", run.data.params["seed"], int),
        )
        try:
            best_val = RunRecord.of(run, strict={"best_val"}).best_val
        except ValueError as err:
            raise SelectionError(
                f"run {run.info.run_id} has {err}, not a finite float: a store edited by hand?"
            ) from None
        if run.info.status == "FINISHED" and best_val is not None:
            latest[lr, seed] = _number(run, "best_val", str(best_val))
        elif run.info.status == "FINISHED":
            latest[lr, seed] = "FINISHED without its best_val tag"
        else:  # FAILED (diverged, say): the rate is out; RUNNING, KILLED: not done yet
            latest[lr, seed] = float("nan") if run.info.status == "FAILED" else run.info.status
    grid = tuple(sorted({lr for lr, _ in latest}))
    seeds = tuple(sorted({seed for _, seed in latest}))
    problems = [
        f"lr {lr:g} lacks seed {s}" if (lr, s) not in latest else f"lr {lr:g} seed {s} is {latest[lr, s]}"
        for lr in grid
        for s in seeds
        if isinstance(latest.get((lr, s)), (str, type(None)))
    ]
    if problems or len(grid) < 2:
        why = "; ".join(problems) or f"it has runs at {len(grid)} learning rate"
        raise SelectionError(
            f"the selection in experiment {experiment} is incomplete for this variant: {why} (every "
            "rate needs every seed, and at least 2 rates)"
        )
    by_lr = {lr: {s: latest[lr, s] for s in seeds} for lr in grid}
    means = tuple(float(np.mean([by_lr[lr][s] for s in seeds])) for lr in grid)
    finite = [i for i, m in enumerate(means) if not np.isnan(m)]
    if not finite:
        raise SelectionError(
            f"the selection in experiment {experiment} chose nothing for this variant: every learning rate failed"
        )
    best = min(finite, key=lambda i: (means[i] if lower else -means[i], grid[i]))
    return Choice(grid[best], grid, seeds, means, first.monitor, informative=_informative(runs, grid, seeds, best))


def _metric_by_lr(runs: list[Any], grid: tuple[float, ...], name: str) -> dict[float, list[float]] | None:
    """Each rate's seeds' last value of the metric `name` (FINISHED runs, the latest per seed);
    None where a run did not log it."""
    latest: dict[tuple[float, int], float] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        metrics = getattr(run.data, "metrics", {}) or {}
        if run.info.status != "FINISHED":
            continue
        if name not in metrics:
            return None
        latest[float(run.data.params["optim.lr"]), int(run.data.params["seed"])] = float(metrics[name])
    return {lr: [v for (r, _), v in latest.items() if r == lr] for lr in grid}


def _informative(runs: list[Any], grid: tuple[float, ...], seeds: tuple[int, ...], best: int) -> bool | None:
    """Whether the rates differ on the task's validation metric (the last epoch's): False when
    every other rate's mean lies within the range of the best rate's seeds, as where every rate
    scores 1.00, or when not even the best rate is above chance (the rates differ by noise); None
    where the runs did not log it."""
    from rnnexp.store import RunRecord

    metric = RunRecord.of(runs[0]).metric
    by_lr = _metric_by_lr(runs, grid, f"val/{metric}") if metric else None
    if by_lr is None or not by_lr[grid[best]]:
        return None
    if _chance(runs) is not None and not _beyond_chance(runs, by_lr[grid[best]]):
        return False
    low, high = min(by_lr[grid[best]]), max(by_lr[grid[best]])
    others = [float(np.mean(v)) for lr, v in by_lr.items() if lr != grid[best] and v]
    return not all(low - 1e-12 <= m <= high + 1e-12 for m in others)


def _chance(runs: list[Any]) -> float | None:
    """The runs' chance level (metric chance_level), None where none logged it."""
    chances = [
        float(r.data.metrics["chance_level"])
        for r in runs
        if r.info.status == "FINISHED" and "chance_level" in (getattr(r.data, "metrics", {}) or {})
    ]
    return float(np.mean(chances)) if chances else None


def _beyond_chance(runs: list[Any], scores: list[float]) -> bool:
    """Every score beyond the runs' chance level by the report's margin of "at chance"
    (`rnnexp.report.criteria.MARGINS`)."""
    from rnnexp.report.criteria import Criteria
    from rnnexp.store import RunRecord

    record, chance = RunRecord.of(runs[0]), _chance(runs)
    if not scores or chance is None:
        return False
    margin = Criteria().margin(record.task or "", record.metric or "").amount(chance)
    if record.better == "lower":
        return all(s < chance - margin for s in scores)
    return all(s > chance + margin for s in scores)


def above_chance(runs: list[Any]) -> bool:
    """Whether the best rate of these runs (one variant at one value of a shared key) scores above
    chance on validation: every seed's last validation metric beyond its chance level by the
    report's margin of "at chance"."""
    from rnnexp.store import RunRecord

    choice = choose(runs, "")
    scores = (_metric_by_lr(runs, choice.grid, f"val/{RunRecord.of(runs[0]).metric}") or {}).get(choice.lr, [])
    return _beyond_chance(runs, scores)


def chosen_lr(store: Store, experiment: str, params: Mapping[str, str], shared: tuple[str, ...] = ()) -> Choice:
    """The learning rate chosen in `experiment` for the run whose flattened config is `params`;
    with `shared` keys, the one chosen at the single value of each that stage 1 ran at."""
    runs = _runs(store, experiment)
    key = selection_key(params, shared)
    mine = [r for r in runs if selection_key(_as_given(r), shared) == key]
    if not mine:
        but = ", ".join(("optim.lr", "the seed", *shared))
        raise SelectionError(
            f"none of the {len(runs)} runs of experiment {experiment} has this run's config but for "
            f"{but} (stage 1 must run the same sweep: `make tune-lr EXP=...`)"
        )
    at = []
    for name in shared:  # one choice for every value, made at one value of each shared key
        value = hardest_above_chance(mine, name)
        mine = [r for r in mine if r.data.params.get(name, "None") == value]
        at.append((name, value))
    choice = choose(mine, experiment)
    return Choice(choice.lr, choice.grid, choice.seeds, choice.means, choice.quantity, tuple(at), choice.informative)


def hardest_above_chance(runs: list[Any], name: str) -> str:
    """Of the values of `name` stage 1 ran (a larger one is harder: a longer distance or
    sequence), the largest at which the best rate still scores above chance on validation: where
    the rates can differ. With one value, that one."""
    from rnnexp.report.runs import sort_value

    values = sorted({r.data.params.get(name, "None") for r in runs}, key=sort_value)
    if len(values) == 1:
        return values[0]
    above = [v for v in values if above_chance([r for r in runs if r.data.params.get(name, "None") == v])]
    if not above:
        raise SelectionError(
            f"stage 1 ran this variant at {name} = {', '.join(values)}, and at none of them does its best "
            f"rate score above chance on validation: no value of {name} tells the rates apart"
        )
    return above[-1]


def _variants(store: Store, experiment: str) -> dict[str, list[Any]]:
    """Stage 1's runs grouped by variant: each group one grid of rates and seeds."""
    groups: dict[str, list[Any]] = {}
    for run in _runs(store, experiment):
        groups.setdefault(selection_key(_as_given(run)), []).append(run)
    return groups


def table(store: Store, experiment: str) -> tuple[list[str], int]:
    """A line per variant of a selection experiment: its grid's means, the chosen rate starred;
    and how many variants have no choice (their line says why)."""
    groups = _variants(store, experiment)
    lines, unchosen = [], 0
    from rnnexp.store import RunRecord

    def base(group: list[Any]) -> str:
        record = RunRecord.of(group[0])
        cell = "" if record.cell in (None, "none") else f" ({record.cell})"
        distance = "" if record.distance in (None, "none") else f" d={record.distance}"
        return f"{record.model}{cell} on {record.task}{distance}"

    def apart(group: list[Any]) -> str:  # what else tells it from a variant of the same name (task.read=pixels)
        same = [g for g in groups.values() if base(g) == base(group)]
        params = group[0].data.params
        keys = sorted(
            k
            for k in params
            if k not in ("seed", "optim.lr", "task.distance")
            and not k.startswith(("tracking.", "model.hidden_size"))
            and len({g[0].data.params.get(k) for g in same}) > 1
        )
        return "".join(f" {k}={params[k]}" for k in keys)

    for group in groups.values():
        name = base(group) + apart(group)
        try:
            choice = choose(group, experiment)
        except SelectionError as err:
            lines.append(f"{name}: {err}")
            unchosen += 1
            continue
        scores = "  ".join(
            f"{'*' if lr == choice.lr else ' '}{lr:g}={'failed' if np.isnan(m) else f'{m:.4f}'}"
            for lr, m in zip(choice.grid, choice.means, strict=True)
        )
        caveats = "".join(
            [
                f"  (at the grid's {choice.edge}: a better rate may lie beyond it)" if choice.edge else "",
                "  (uninformative: the rates scored alike, or none above chance; choose where they differ, e.g. "
                "at a longer task.distance if every rate is perfect, a shorter one if every rate is at chance)"
                if choice.informative is False
                else "",
            ]
        )
        lines.append(f"{name}: {choice.quantity} {scores}{caveats}")
    return sorted(lines), unchosen


# how far `make tune-lr` extends a grid whose choice lies at an edge (LR_BOUND)
BOUND = (1e-5, 1.0)


def beyond_edges(store: Store, experiment: str, bound: tuple[float, float] = BOUND) -> list[float]:
    """The rates one grid step beyond every choice at its grid's edge (the step: the ratio of the
    edge's two nearest rates), within `bound`: what `make tune-lr` runs next, until every choice is
    interior or at the bound."""
    wanted = set()
    for group in _variants(store, experiment).values():
        try:
            choice = choose(group, experiment)
        except SelectionError:
            continue  # its line in the table says why; no rate to add
        grid = choice.grid
        if choice.edge == "bottom":
            step = grid[0] * grid[0] / grid[1]
        elif choice.edge == "top":
            step = grid[-1] * grid[-1] / grid[-2]
        else:
            continue
        if bound[0] * (1 - 1e-9) <= step <= bound[1] * (1 + 1e-9):
            wanted.add(float(f"{step:.3g}"))
    return sorted(wanted)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rnnexp.tuning",
        description="The learning rate stage 1 of the recipe chose for each variant "
        "(starred), with each rate's mean best validation score over seeds. Rule: " + RULE + ".",
        parents=[uri_option()],
    )
    parser.add_argument("--experiment", required=True, help="the selection's MLflow experiment (EXP_lr)")
    parser.add_argument(
        "--beyond-edge",
        metavar="LOW,HIGH",
        help="print instead the rates one grid step beyond every choice at its grid's edge, within "
        f"LOW to HIGH (`make tune-lr` runs them next; e.g. {BOUND[0]:g},{BOUND[1]:g}), comma-separated, or nothing",
    )
    args = parser.parse_args(argv)
    from rnnexp import config, store
    from rnnexp.tracking import quiet_store_logs

    quiet_store_logs()
    if args.beyond_edge is not None:
        try:
            low, high = (float(v) for v in args.beyond_edge.split(","))
            if not 0 < low < high:
                raise ValueError
        except ValueError:
            parser.exit(2, f"{parser.prog}: error: --beyond-edge={args.beyond_edge!r}: give LOW,HIGH, 0 < LOW < HIGH\n")
        try:
            print(",".join(f"{lr:g}" for lr in beyond_edges(store.opened(args.uri), args.experiment, (low, high))))
        except (config.ConfigError, SelectionError) as err:
            parser.exit(2, f"{parser.prog}: error: --experiment={args.experiment}: {err}\n")
        return
    try:
        lines, unchosen = table(store.opened(args.uri), args.experiment)
    except config.ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except SelectionError as err:
        parser.exit(2, f"{parser.prog}: error: --experiment={args.experiment}: {err}\n")
    print("\n".join(lines) if lines else f"no selection runs in experiment {args.experiment}")
    if not lines or unchosen:
        sys.exit(1)  # a variant whose stage 2 would be refused


if __name__ == "__main__":
    main(sys.argv[1:])
