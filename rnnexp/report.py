"""`rnnexp-report`: the results of an experiment or a sweep, as tables, tests and plots.

Reads the FINISHED training runs of an MLflow experiment (or the children of one sweep's parent
run) and groups them by **variant**: runs whose logged config is identical but for the seed
(the `variant_hash` tag; see `rnnexp.tracking.variant_hash`). Runs of `trainer=smoke` (tag
`smoke=true`) are left out, and of two runs of one variant and seed (a re-run) only the latest
counts. It writes into `--out`:

- `runs.csv`: one row per run counted: its id, seed, config keys, final test metrics, chance
  level, parameters, epochs and wall time;
- `results.csv` and `results.md`: per variant, the number of seeds, mean, standard deviation and
  95% confidence interval (Student t over seeds) of the test metric, the chance level, and two
  one-sided tests against it: a t-test over the seeds and, for accuracy, an exact binomial test
  on the scored test steps of all seeds pooled; p-values Holm-adjusted over the report's variants;
  the last epoch's training metric, and flags: *budget ran out* (a seed stopped at
  trainer.max_epochs, not at a plateau: tag `stopped_by`) and *did not learn in this budget* (the
  training metric itself not above chance);
- `comparisons.md` and `comparisons.csv` (with `--comparisons FILE`): each comparison the file
  names, at every value of the other keys: the difference of the means with its 95% CI, Welch's
  t-test, Holm-adjusted over all the comparisons;
- `metric_vs_distance.png` (tasks swept over `task.distance`) or `metric_by_model.png` (tasks
  without a distance axis): the test metric with a band or bar of its 95% CI, and chance dashed;
- `learning_curves.png`: the validation metric per epoch (mean over seeds), one row of panels
  per task on one y-axis, chance dashed (dotted in each curve's colour where it moves with a
  key, as copy memory's does with T);
- `budget_curve.png` (with `--budget-curve KEY=VALUE`, once or more): for the variants at that
  value, each seed's validation metric against optimizer updates, and its test score where it
  stopped; a panel per value and task.

The files are logged as artifacts (under `report/`) on the sweeps' parent runs, so they show in
the MLflow UI. Evaluation runs of `rnnexp-eval` (tag `evaluation=true`) are left out; with
`--evaluations` they are reported instead, scored by their `eval/` metric, the x axis of the
plot `task.length` where it varies (`metric_vs_length.png`), and no learning curves.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

PROG = "rnnexp-report"
ALPHA = 0.05  # the level of every test in a report
CONFIDENCE = 0.95
# the tags that name a variant in a table, before the config keys that vary
TAG_COLUMNS = ("task", "model", "cell", "pattern")
# every file a report writes: those a new report of the same folder does not write again are removed
FILES = (
    "runs.csv",
    "results.csv",
    "results.md",
    "comparisons.csv",
    "comparisons.md",
    "metric_vs_distance.png",
    "metric_vs_length.png",
    "metric_by_model.png",
    "learning_curves.png",
    "budget_curve.png",
)


class ReportError(Exception):
    """Bad input to the report: one line naming the option, the value and what exists."""


# ---------------------------------------------------------------- runs -> one row per run


def runs_frame(client, store, experiment: str | None, parent: str | None) -> tuple[pd.DataFrame, list[str]]:
    """The runs of `experiment` (or of the sweep `parent`), one row each, as MLflow's search gives
    them (`params.*`, `metrics.*` columns) with their records (`rnnexp.store.record_columns`); and,
    for `parent`, the run to log the report on (a report of a whole experiment is not one sweep's:
    it is not logged on any)."""
    from rnnexp.store import RunRecord

    if parent is not None:
        sweeps = store.sweep_parents(client)
        listed = f"{', '.join(sweeps) or 'none'}{' ...' if len(sweeps) == 5 else ''}"
        try:
            run = client.get_run(parent)
        except Exception:
            raise ReportError(
                f"--parent={parent!r}: no such run in {store.shown}; sweeps' parent runs there: {listed}"
            ) from None
        if not RunRecord.of(run).sweep:
            raise ReportError(
                f"--parent={parent!r} is not a sweep's parent run (tag sweep=true); sweeps' parent runs there: {listed}"
            )
        return store.runs_frame(run.info.experiment_id, parent), [parent]
    if (experiment_id := store.experiment_named(client, experiment)) is None:
        raise ReportError(
            f"--experiment={experiment!r} is not in {store.shown}; experiments: {store.experiment_names(client)}"
        )
    return store.runs_frame(experiment_id), []


def training_runs(frame: pd.DataFrame, evaluations: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """One row per counted training run, with the columns the report uses; and notices of what
    was left out. With `evaluations`, the runs of `rnnexp-eval` instead, scored by their `eval/`
    metric."""
    notes: list[str] = []
    if frame.empty:
        return pd.DataFrame(), notes
    frame = frame[frame["kind"] != "sweep"]
    evaluated = frame["kind"] == "evaluation"
    if evaluated.any() and not evaluations:
        notes.append(
            f"{int(evaluated.sum())} evaluation run(s) of rnnexp-eval left out (`rnnexp-report --evaluations` "
            "reports them)"
        )
    frame = frame[evaluated] if evaluations else frame[~evaluated]
    stage = "eval" if evaluations else "test"
    whole = frame[["metric", "task", "model", "variant_hash"]].notna().all(axis=1)
    whole &= frame["params.seed"].notna() if "params.seed" in frame else False
    if (~whole).any():
        notes.append(
            f"{int((~whole).sum())} run(s) without the tags or params of an rnnexp training run (metric, "
            "task, model, variant_hash, seed) left out"
        )
    runs = frame[whole].copy()
    unfinished = runs["status"] != "FINISHED"
    if unfinished.any():
        counts = ", ".join(f"{n} {status}" for status, n in runs[unfinished]["status"].value_counts().items())
        notes.append(f"{counts} run(s) left out: only FINISHED runs count")
        runs = runs[~unfinished]

    def metric(row: pd.Series, suffix: str = "") -> float:
        return row.get(f"metrics.{stage}/{row['metric']}{suffix}", np.nan)

    if runs.empty:
        return runs, notes
    runs["score"] = runs.apply(metric, axis=1)
    runs["teacher_forced"] = runs.apply(metric, axis=1, suffix="_tf")
    # the last training epoch's metric (pattern 2: teacher-forced): did the model learn at all?
    runs["train_score"] = runs.apply(lambda row: row.get(f"metrics.train/{row['metric']}", np.nan), axis=1)
    if (untested := runs["score"].isna()).any():
        notes.append(f"{int(untested.sum())} FINISHED run(s) without their test metric left out")
        runs = runs[~untested]
    smoke = runs["smoke"].astype(bool)  # an evaluation of a smoke run is one too
    if smoke.any():
        notes.append(f"{int(smoke.sum())} trainer=smoke run(s) left out (a check of a config, not a result)")
    runs = runs[~smoke]
    if runs.empty:
        return runs, notes
    runs["variant"] = runs["variant_hash"]
    runs["seed"] = runs["params.seed"].astype(int)
    runs = runs.sort_values("start_time")
    duplicates = runs.duplicated(["variant", "seed"], keep="last")
    if duplicates.any():
        notes.append(
            f"{int(duplicates.sum())} duplicate run(s) of a variant and seed (re-runs) left out: the latest "
            "of each counts"
        )
        runs = runs[~duplicates]
    runs["cell"] = runs["cell"].fillna("none")
    mixed = runs.groupby("variant")[["metric", "better"]].nunique().max(axis=1) > 1
    if mixed.any():
        raise ReportError(
            f"variant {mixed.index[mixed][0]} has runs scored by different metrics (metric, "
            "better): a tampered or hand-edited store"
        )
    if (runs["git_dirty"] == "true").any():
        notes.append(
            f"{int((runs['git_dirty'] == 'true').sum())} run(s) were made from a working tree with "
            "changes (tag git_dirty=true): their git commit does not alone identify the code"
        )
    if (runs.groupby("variant")["dataset_digest"].nunique() > 1).any():
        notes.append("some variants pool runs on data with different digests (tag dataset_digest)")
    runs["label"] = runs["model"].where(runs["cell"] == "none", runs["model"] + " (" + runs["cell"] + ")")
    for column, logged in (
        ("chance", "chance_level"),
        ("n_params", "n_params"),
        ("wall_time_s", "wall_time_s"),
        ("n_test_scored", f"n_{stage}_scored"),
        ("epochs_trained", "epochs_trained"),
    ):
        runs[column] = runs.get(f"metrics.{logged}", pd.Series(np.nan, index=runs.index))
    return runs.reset_index(drop=True), notes


def _shown(key: str) -> bool:
    from rnnexp.store import is_variant_key

    # (an evaluation's overrides, `evaluated_with`: their keys are columns of their own)
    return is_variant_key(key) and not key.endswith("_target_") and key != "evaluated_with"


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """The config keys that tell a table's rows apart: a task's or trainer's key (`task.distance`,
    `optim.lr`, `trainer.max_epochs`, ...) that differs between variants of one task, and a model's
    key (`model.hidden_size`, ...) that differs between variants of one task and model. (A model's
    own keys, such as `model.window`, come with the model; sizes show in the parameter count.)"""
    keys: set[str] = set()
    params = [c for c in runs.columns if c.startswith("params.") and _shown(c[len("params.") :])]
    for by, prefix in ((["task"], None), (["task", "label"], "model.")):
        for _, same in runs.groupby(by):
            variants = same.drop_duplicates("variant")
            for column in params:
                key = column[len("params.") :]
                if (key.startswith("model.") == (prefix is not None)) and variants[column].nunique(dropna=False) > 1:
                    keys.add(key)
    return sorted(keys, key=lambda k: (k != "task.distance", k))


# ---------------------------------------------------------------- statistics


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values; NaN (no test) stays NaN
    and does not count in the family. Controls the family-wise error rate at any dependence."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _spread(values: np.ndarray) -> bool:
    return len(values) > 1 and bool(np.ptp(values) > 0)


def summarise(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per variant: its seeds' mean, std, 95% CI and the tests against chance."""
    rows = []
    for variant, group in runs.groupby("variant", sort=False):
        first = group.iloc[0]
        scores = group["score"].to_numpy(float)
        gains = scores - group["chance"].to_numpy(float)  # each seed against its own chance level
        n = len(scores)
        higher = first["better"] == "higher"
        row: dict[str, Any] = {column: first[column] for column in TAG_COLUMNS}
        row.update(
            {
                "label": first["label"],
                **{k: first.get(f"params.{k}") for k in keys},
                "metric": first["metric"],
                "better": first["better"],
                "n_seeds": n,
                "mean": scores.mean(),
                "std": scores.std(ddof=1) if n > 1 else np.nan,
                "ci95_low": np.nan,
                "ci95_high": np.nan,
                "chance": group["chance"].mean() if group["chance"].notna().all() else np.nan,
                "teacher_forced_mean": group["teacher_forced"].mean(),
                "train_mean": group["train_score"].mean(),
                "n_budget": int((group["stopped_by"] == "budget").sum()),
                "n_diverged": int((group["stopped_by"] == "diverged").sum()),
                "p_seeds": np.nan,
                "p_binomial": np.nan,
                "n_params": first["n_params"],
                "epochs_trained": group["epochs_trained"].mean(),
                "wall_time_s": group["wall_time_s"].mean(),
                "git_commits": group["git_commit"].nunique(),
                "variant": variant,
                "runs": " ".join(group["run_id"]),
            }
        )
        if _spread(scores):  # else no interval: one seed, or every seed the same score
            low, high = stats.t.interval(CONFIDENCE, n - 1, loc=scores.mean(), scale=stats.sem(scores))
            row.update(ci95_low=low, ci95_high=high)
        if _spread(gains) and not np.isnan(gains).any():
            row["p_seeds"] = stats.ttest_1samp(gains, 0.0, alternative="greater" if higher else "less").pvalue
        row["learned"] = _learned(group["train_score"].to_numpy(float) - group["chance"].to_numpy(float), higher)
        scored = group["n_test_scored"].to_numpy(float)
        if first["metric"] == "acc" and not np.isnan(scored).any() and not np.isnan(row["chance"]):
            hits = int(np.round(scores * scored).sum())
            # each seed's steps at its own chance level: the pooled rate is their weighted mean
            rate = float((group["chance"].to_numpy(float) * scored).sum() / scored.sum())
            row["p_binomial"] = stats.binomtest(hits, int(scored.sum()), rate, alternative="greater").pvalue
        rows.append(row)
    table = pd.DataFrame(rows)
    table["p_seeds_holm"] = holm(table["p_seeds"])
    table["p_binomial_holm"] = holm(table["p_binomial"])
    table["vs_chance"] = table.apply(_verdict, axis=1)
    table["flags"] = table.apply(flags, axis=1)
    return _sorted(table, keys)


def _learned(gains: np.ndarray, higher: bool) -> bool | None:
    """Whether the training metric beats chance: a one-sided t-test over seeds at level ALPHA
    (not adjusted: it flags, it claims nothing), or with no spread to test, every seed on the
    right side of chance. None: no training metric logged."""
    if len(gains) == 0 or np.isnan(gains).any():
        return None
    if _spread(gains):
        return bool(stats.ttest_1samp(gains, 0.0, alternative="greater" if higher else "less").pvalue < ALPHA)
    return bool(((gains > 0) if higher else (gains < 0)).all())


def flags(row: pd.Series) -> str:
    """What a reader must know before taking a score as what the model can do."""
    out = []
    if row["n_budget"]:
        out.append(f"budget ran out ({row['n_budget']} of {row['n_seeds']} seeds)")
    if row["n_diverged"]:
        out.append(f"validation score not finite ({row['n_diverged']} of {row['n_seeds']} seeds)")
    if row["learned"] is False:
        out.append("did not learn in this budget (training metric at chance)")
    return "; ".join(out)


def _verdict(row: pd.Series) -> str:
    """Against chance: the one-sided t-test over seeds (the claim is about the config, whatever
    the seed). The binomial test, a claim about the trained networks' test steps, has its own column."""
    if pd.isna(row["chance"]):
        return "n/a (a seed without its chance level)"
    if np.isnan(row["p_seeds_holm"]):
        return f"n/a ({row['n_seeds']} seed)" if row["n_seeds"] < 2 else "n/a (every seed the same)"
    p = row["p_seeds_holm"]
    if p < ALPHA:
        return f"{'above' if row['better'] == 'higher' else 'better than'} chance ({format_p(p)})"
    on_the_wrong_side = (row["mean"] < row["chance"]) == (row["better"] == "higher")
    if on_the_wrong_side and row["mean"] != row["chance"]:  # one-sided: it says "not better", no more
        return f"not {'above' if row['better'] == 'higher' else 'better than'} chance ({format_p(p)})"
    return f"not distinguishable from chance ({format_p(p)})"


def format_p(p: float) -> str:
    return "p" + _p(p)


def _p(p: float) -> str:
    """ "<0.0001", "=0.0034" or "=0.042": two significant digits below 0.01, else three decimals."""
    return "" if pd.isna(p) else "<0.0001" if p < 1e-4 else f"={p:.2g}" if p < 0.01 else f"={p:.3f}"


def _sort_value(value: Any) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _sorted(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    order = sorted(
        range(len(table)),
        key=lambda i: (table["task"].iloc[i], table["label"].iloc[i], *[_sort_value(table[k].iloc[i]) for k in keys]),
    )
    return table.iloc[order].reset_index(drop=True)


# ---------------------------------------------------------------- comparisons


@dataclass
class Comparison:
    """`a` against `b`, each a selector {key: value} over the table's columns (task, model,
    cell, pattern) and config keys, at every value of the other keys."""

    name: str
    a: dict[str, str]
    b: dict[str, str]


def read_comparisons(path: Path) -> list[Comparison]:
    try:
        spec = yaml.safe_load(path.read_text())  # safe: a tag cannot construct an object
    except OSError as err:
        raise ReportError(f"--comparisons={str(path)!r}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ReportError(f"--comparisons={str(path)!r}: not YAML ({' '.join(str(err).split())})") from None
    items = spec.get("comparisons") if isinstance(spec, dict) else None
    if not isinstance(items, list) or not items:
        raise ReportError(
            f"--comparisons={str(path)!r}: expected a list under `comparisons:`, each "
            "{name: ..., a: {KEY: VALUE, ...}, b: {KEY: VALUE, ...}}"
        )
    comparisons: list[Comparison] = []
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or set(item) != {"name", "a", "b"}
            or not all(isinstance(item[s], dict) and item[s] for s in "ab")
        ):
            raise ReportError(
                f"--comparisons={str(path)!r}: comparisons[{i}] must have exactly name, a and b, "
                f"a and b each a non-empty mapping KEY: VALUE; got {item!r}"
            )
        comparison = Comparison(
            str(item["name"]),
            {str(k): str(v) for k, v in item["a"].items()},
            {str(k): str(v) for k, v in item["b"].items()},
        )
        if comparison.name in {c.name for c in comparisons}:
            raise ReportError(
                f"--comparisons={str(path)!r}: comparisons[{i}]: the name {comparison.name!r} is "
                "used twice; names tell the rows apart"
            )
        if comparison.a == comparison.b:
            raise ReportError(f"--comparisons={str(path)!r}: comparison {comparison.name!r}: a and b are the same")
        if any(
            (c.a, c.b) in ((comparison.a, comparison.b), (comparison.b, comparison.a)) for c in comparisons
        ):  # Holm would count it twice
            raise ReportError(f"--comparisons={str(path)!r}: comparison {comparison.name!r} repeats an earlier one")
        for side in (comparison.a, comparison.b):
            if fixed := [k for k in side if k == "seed" or ("." in k and not _shown(k))]:
                raise ReportError(
                    f"--comparisons={str(path)!r}: comparison {comparison.name!r} selects by "
                    f"{', '.join(fixed)}, which a variant does not fix (seeds are pooled, tracking "
                    "keys cannot change a result)"
                )
        comparisons.append(comparison)
    return comparisons


def _same(value: Any, wanted: str) -> bool:
    """A logged value against one from the YAML file: `1e-2` is `0.01`, `15` is `15.0`."""
    if pd.isna(value):
        return wanted in ("None", "null")
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == wanted


def _select(configs: pd.DataFrame, selector: dict[str, str], comparison: Comparison, side: str) -> pd.Index:
    """The variants whose tags (task, model, cell, pattern) or config keys match `selector`."""
    mask = pd.Series(True, index=configs.index)
    for key, value in selector.items():
        column = key if key in TAG_COLUMNS else f"params.{key}"
        if column not in configs:
            known = [*TAG_COLUMNS, *sorted(c[len("params.") :] for c in configs.columns if c.startswith("params."))]
            raise ReportError(
                f"comparison {comparison.name!r}: {side} names {key!r}, which these runs do not have; "
                f"keys: {', '.join(known)}"
            )
        mask &= configs[column].map(lambda v, wanted=value: _same(v, wanted))
    if not mask.any():
        exists = "; ".join(
            f"{k} is one of {sorted(set(configs[k if k in TAG_COLUMNS else 'params.' + k].astype(str)))}"
            for k in selector
        )
        raise ReportError(f"comparison {comparison.name!r}: {side}={selector} matches no variant; {exists}")
    return configs.index[mask]


def compare(runs: pd.DataFrame, table: pd.DataFrame, comparisons: list[Comparison], keys: list[str]) -> pd.DataFrame:
    """Each comparison at every value of the keys its selectors do not name: Welch's t-test of
    the seeds' scores, the difference of the means (a - b) with its 95% CI; p Holm-adjusted over
    every row. Two variants are paired only where every task, trainer and optimiser key agrees
    (unless a side names it); a model's keys may differ, and the row says which do. A learning
    rate each variant took from the same selection (tag lr_from) is its own, as a model key is."""
    rows = []
    configs = runs.drop_duplicates("variant").set_index("variant")
    params = [c for c in configs.columns if c.startswith("params.") and _shown(c[len("params.") :])]
    scores = runs.groupby("variant")["score"].apply(lambda s: s.to_numpy(float))
    rows_by_variant = table.set_index("variant")
    for comparison in comparisons:
        a_side = _select(configs, comparison.a, comparison, "a")
        b_side = _select(configs, comparison.b, comparison, "b")
        named = {f"params.{k}" for k in (*comparison.a, *comparison.b)}
        paired = [c for c in params if not c.startswith("params.model.") and c not in named]
        found = 0
        for a_variant in a_side:
            a_config = configs.loc[a_variant]

            def tuned(
                b: str, a_config: pd.Series = a_config
            ) -> bool:  # both rates chosen on validation by one selection: each model's own
                return (
                    "lr_from" in configs
                    and not pd.isna(a_config["lr_from"])
                    and configs.loc[b, "lr_from"] == a_config["lr_from"]
                )

            partners = [
                b
                for b in b_side
                if b != a_variant
                and configs.loc[b, "task"] == a_config["task"]
                and all(
                    _equal(configs.loc[b, c], a_config[c]) for c in paired if not (c == "params.optim.lr" and tuned(b))
                )
            ]
            if len(partners) > 1:
                differ = [c[len("params.") :] for c in params if len({str(configs.loc[b, c]) for b in partners}) > 1]
                raise ReportError(
                    f"comparison {comparison.name!r}: b matches {len(partners)} variants beside one "
                    f"of a (task {a_config['task']}): they differ in {', '.join(differ) or 'tags'}; "
                    "name it in b"
                )
            if not partners:
                continue
            a, b = rows_by_variant.loc[a_variant], rows_by_variant.loc[partners[0]]
            if (a["metric"], a["better"]) != (b["metric"], b["better"]):
                raise ReportError(f"comparison {comparison.name!r}: a is scored by {a['metric']}, b by {b['metric']}")
            found += 1
            x, y = scores[a_variant], scores[partners[0]]
            # a model's keys both sides have, with other values (the cell, if a side names it, goes without saying)
            said = named | {f"params.model.{k}" for k in ("cell",) if k in comparison.a or k in comparison.b}
            model_keys = [
                c[len("params.") :]
                for c in params
                if c.startswith("params.model.")
                and c not in said
                and not pd.isna(configs.loc[partners[0], c])
                and not pd.isna(a_config[c])
                and not _equal(configs.loc[partners[0], c], a_config[c])
            ]
            if tuned(partners[0]) and not _equal(
                configs.loc[partners[0], "params.optim.lr"], a_config["params.optim.lr"]
            ):
                model_keys.append("optim.lr")
            row = {
                "comparison": comparison.name,
                "task": a["task"],
                **{
                    k: a[k]
                    for k in keys
                    if k not in {c[len("params.") :] for c in named} and not (k == "optim.lr" and tuned(partners[0]))
                },
                "a": _side_label(a, comparison.a),
                "b": _side_label(b, comparison.b),
                "models_differ_in": " ".join(model_keys),
                "metric": a["metric"],
                "better": a["better"],
                "n_a": len(x),
                "n_b": len(y),
                "mean_a": x.mean(),
                "mean_b": y.mean(),
                "difference": x.mean() - y.mean(),
                "ci95_low": np.nan,
                "ci95_high": np.nan,
                "t": np.nan,
                "df": np.nan,
                "p": np.nan,
            }
            if len(x) > 1 and len(y) > 1 and (_spread(x) or _spread(y)):
                with warnings.catch_warnings():  # one side without spread is fine for Welch
                    warnings.simplefilter("ignore", RuntimeWarning)
                    result = stats.ttest_ind(x, y, equal_var=False)
                    low, high = result.confidence_interval(CONFIDENCE)
                row.update(t=result.statistic, df=result.df, p=result.pvalue, ci95_low=low, ci95_high=high)
            rows.append(row)
        if not found:
            raise ReportError(
                f"comparison {comparison.name!r}: no variant of a has a partner in b on the same task "
                "with the same task, trainer and optimiser keys (name a key in a and b where they "
                "must differ)"
            )
    found_rows = pd.DataFrame(rows)
    if found_rows.empty:
        return found_rows
    found_rows["p_holm"] = holm(found_rows["p"])
    found_rows["verdict"] = found_rows.apply(_comparison_verdict, axis=1)
    return found_rows


def _equal(x: Any, y: Any) -> bool:
    return (pd.isna(x) and pd.isna(y)) or (not pd.isna(x) and not pd.isna(y) and str(x) == str(y))


def _side_label(row: pd.Series, selector: dict[str, str]) -> str:
    return ", ".join([row["label"], *[f"{k}={v}" for k, v in selector.items() if "." in k]])


def _comparison_verdict(row: pd.Series) -> str:
    if np.isnan(row["p_holm"]):
        return "n/a (1 seed)" if min(row["n_a"], row["n_b"]) < 2 else "n/a (every seed the same on both sides)"
    if row["p_holm"] >= ALPHA:
        return f"no difference shown (Holm {format_p(row['p_holm'])})"
    a_better = (row["difference"] > 0) == (row["better"] == "higher")
    return f"{row['a'] if a_better else row['b']} better (Holm {format_p(row['p_holm'])})"


# ---------------------------------------------------------------- files


def number(value: float, digits: int = 3) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def interval(row: pd.Series) -> str:
    """The 95% CI as a table cell: n/a where the seeds give none."""
    if row["n_seeds"] < 2:
        return "n/a (1 seed)"
    if pd.isna(row["ci95_low"]):
        return "n/a (every seed the same)"
    return f"[{number(row['ci95_low'])}, {number(row['ci95_high'])}]"


def binomial(row: pd.Series) -> str:
    return "" if pd.isna(row["p_binomial_holm"]) else f"p{_p(row['p_binomial_holm'])}"


NOTE = (
    "Mean ± standard deviation over seeds; 95% CI: Student t over seeds (not clipped to the metric's range). "
    "vs chance: a one-sided t-test of the seeds' "
    "scores against their chance level, a claim about the config whatever the seed (`not above chance`: the mean is "
    "below it, and a one-sided test says no more). binomial: an exact one-sided test on the scored test steps of all "
    "seeds pooled (accuracy only), a claim about these trained networks on these test sets, which takes steps as "
    "independent and seeds as fixed. p-values Holm-adjusted, each test over the variants it could be run on "
    "({n_t} for the t-test, {n_b} for the binomial); level {alpha}. "
    "Every p-value per variant is in `results.csv`, every run in `runs.csv`."
)


FLAGS_NOTE = (
    "Flags: *budget ran out*: a seed trained for all of trainer.max_epochs (tag stopped_by=budget), not "
    "to a plateau, so its score may still rise with training; *did not learn in this budget*: the last "
    "training epoch's metric is itself not above chance (one-sided t over seeds, level {alpha}), which "
    "says nothing of what the model could learn with more training or another learning rate."
)


def results_markdown(table: pd.DataFrame, keys: list[str], notes: list[str], stage: str = "test") -> str:
    head = [
        "task",
        "model",
        "pattern",
        *keys,
        "parameters",
        f"{stage} metric: mean ± std",
        "95% CI",
        "teacher-forced",
        "chance",
        "vs chance (t over seeds)",
        "binomial (pooled steps)",
        "seeds",
        "epochs",
        "train",
        "flags",
    ]
    rows = []
    for _, r in table.iterrows():
        n = int(r["n_seeds"])
        spread = f"{r['metric']} {number(r['mean'])}" + (f" ± {number(r['std'])}" if n > 1 else "")
        rows.append(
            [
                r["task"],
                r["label"],
                str(r["pattern"]),
                *[str(r[k]) for k in keys],
                number(r["n_params"], 0),
                spread,
                interval(r),
                number(r["teacher_forced_mean"]),
                number(r["chance"]),
                r["vs_chance"],
                binomial(r),
                str(n),
                number(r["epochs_trained"], 0),
                number(r["train_mean"]),
                r["flags"],
            ]
        )
    lines = [
        markdown_table(head, rows).rstrip("\n"),
        "",
        NOTE.format(n_t=int(table["p_seeds"].notna().sum()), n_b=int(table["p_binomial"].notna().sum()), alpha=ALPHA),
    ]
    if (table["flags"] != "").any():
        lines += ["", FLAGS_NOTE.format(alpha=ALPHA)]
    lines += [f"Note: {note}." for note in notes]
    return "\n".join(lines) + "\n"


def comparisons_markdown(found: pd.DataFrame, keys: list[str]) -> str:
    at = [k for k in ("task", *keys) if k in found.columns and found[k].notna().any()]
    differ = (found["models_differ_in"] != "").any()
    head = [
        "comparison",
        *at,
        "a",
        "b",
        *(["models differ in"] if differ else []),
        "mean a",
        "mean b",
        "a - b [95% CI]",
        "Welch t (df)",
        "p",
        "Holm p",
        "verdict",
    ]
    rows = []
    for _, r in found.iterrows():
        difference = f"{r['difference']:+.3f}" + (
            f" [{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]" if not pd.isna(r["ci95_low"]) else ""
        )
        welch = "" if pd.isna(r["t"]) else f"{r['t']:.2f} ({r['df']:.1f})"
        p, holm_p = _p(r["p"]).lstrip("="), _p(r["p_holm"]).lstrip("=")
        cells = [
            r["comparison"],
            *["" if pd.isna(r[k]) else str(r[k]) for k in at],
            r["a"],
            r["b"],
            *([r["models_differ_in"]] if differ else []),
            f"{r['mean_a']:.3f} (n={r['n_a']})",
            f"{r['mean_b']:.3f} (n={r['n_b']})",
            difference,
            welch,
            p,
            holm_p,
            r["verdict"],
        ]
        rows.append(cells)
    lines = [markdown_table(head, rows).rstrip("\n")]
    lines += [
        "",
        f"Welch's t-test (two-sided) of the seeds' test scores, a against b, paired where every task, "
        f"trainer and optimiser key agrees; the 95% CI is Welch's for the difference of the means. Holm-adjusted "
        f"over the {int(found['p'].notna().sum())} row(s) with a test, level {ALPHA}; `n/a`: no test (a side "
        "with one seed, or every seed the same on both).",
    ]
    return "\n".join(lines) + "\n"


RUN_COLUMNS = (
    "run_id",
    "seed",
    "task",
    "model",
    "cell",
    "pattern",
    "metric",
    "score",
    "teacher_forced",
    "chance",
    "n_test_scored",
    "n_params",
    "epochs_trained",
    "stopped_by",
    "train_score",
    "wall_time_s",
    "variant",
    "git_commit",
)


def runs_csv(runs: pd.DataFrame, keys: list[str], path: Path) -> None:
    tests = sorted(c for c in runs.columns if c.startswith("metrics.test/"))
    out = runs[[*RUN_COLUMNS, *[f"params.{k}" for k in keys], *tests]].rename(
        columns=lambda c: c.removeprefix("params.").removeprefix("metrics.")
    )
    _sorted(out.assign(label=runs["label"]), keys).drop(columns="label").sort_values(
        ["variant", "seed"], kind="stable"
    ).to_csv(path, index=False)


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(table: pd.DataFrame, keys: list[str], axis: str = "task.distance") -> list[str]:
    """The keys besides the x axis (the distance) that split a task's variants into lines."""
    return [k for k in keys if k != axis and table[k].nunique(dropna=False) > 1]


def _line_label(row: pd.Series, series: list[str]) -> str:
    return ", ".join([row["label"], *[f"{k}={row[k]}" for k in series]])


def _limits(metric: str, values: list[float], chance: float) -> tuple[float, float]:
    if metric == "acc":
        return 0.0, 1.02
    top = max([v for v in values if not np.isnan(v)] + [chance])
    return 0.0, top * 1.08 if top > 0 else 1.0


def _legend(fig, axes) -> None:
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label], labels = h, labels + [label]
    if handles:  # beside the panels, never over the data
        fig.legend([handles[k] for k in labels], labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def plot_results(
    table: pd.DataFrame, keys: list[str], out: Path, axis: str = "task.distance", stage: str = "test"
) -> list[str]:
    """The `stage` metric with its 95% CI, against `axis` (the distance) where a task sweeps it,
    else as bars."""
    plt = _pyplot()
    written = []
    curve = f"metric_vs_{axis.rsplit('.', 1)[-1]}.png"
    distance = pd.to_numeric(table[axis], errors="coerce") if axis in keys else None
    with_distance = [
        t
        for t, g in table.groupby("task")
        if distance is not None and distance[g.index].notna().all() and g[axis].nunique() > 1
    ]
    for name, tasks in (
        (curve, with_distance),
        ("metric_by_model.png", sorted(set(table["task"]) - set(with_distance))),
    ):
        if not tasks:
            continue
        fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=False):
            mine = table[table["task"] == task]
            series = _series(mine, keys, axis)
            chance = mine["chance"].mean()
            if name == curve:
                for label, line in mine.groupby(mine.apply(_line_label, axis=1, series=series), sort=True):
                    line = line.assign(x=line[axis].astype(float)).sort_values("x")
                    ax.plot(line["x"], line["mean"], marker="o", label=label)
                    ax.fill_between(line["x"], line["ci95_low"], line["ci95_high"], alpha=0.2)
                ax.set_xscale("log", base=2)
                ax.set_xlabel(axis)
            else:
                labels = list(mine.apply(_line_label, axis=1, series=series))
                error = np.array([mine["mean"] - mine["ci95_low"], mine["ci95_high"] - mine["mean"]])
                ax.bar(range(len(mine)), mine["mean"], yerr=np.nan_to_num(error), capsize=3, color="C0")
                ax.set_xticks(range(len(mine)), labels, rotation=30, ha="right", fontsize=8)
            ax.axhline(chance, color="grey", linestyle="--", label="chance")
            ax.set_ylim(*_limits(mine["metric"].iloc[0], list(mine["ci95_high"].fillna(mine["mean"])), chance))
            ax.set_ylabel(f"{stage} {mine['metric'].iloc[0]}")
            ax.set_title(task)
        _legend(fig, axes)
        fig.suptitle(
            "mean over seeds;\n" + ("bands" if name == curve else "error bars") + ": 95% CI (Student t over seeds)",
            fontsize=9,
        )
        fig.tight_layout()
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(name)
    return written


def plot_learning_curves(client, table: pd.DataFrame, keys: list[str], out: Path, columns: int = 4) -> None:
    """The validation metric per epoch, mean over seeds: a panel per task and model (a task's
    panels in rows of `columns`, all on one y-axis), a line per distance and other varying keys."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    tasks = sorted(set(table["task"]))
    labels = {t: sorted(set(table[table["task"] == t]["label"])) for t in tasks}
    rows_of = {t: -(-len(labels[t]) // columns) for t in tasks}
    cols = min(columns, max(len(v) for v in labels.values()))
    fig, axes = plt.subplots(
        sum(rows_of.values()), cols, figsize=(4.0 * cols, 3.2 * sum(rows_of.values())), squeeze=False
    )
    first_row = 0
    for task in tasks:
        mine = table[table["task"] == task]
        metric, chance = mine["metric"].iloc[0], mine["chance"].mean()
        # chance that moves with a key (copy memory's with T) is drawn per variant, in its colour
        own_chance = mine["chance"].max() - mine["chance"].min() > 0.05 * abs(chance)
        series = [k for k in keys if mine[k].nunique(dropna=False) > 1]
        block = axes[first_row : first_row + rows_of[task]].ravel()
        tops = []
        for ax, label in zip(block, labels[task], strict=False):
            for _, variant in mine[mine["label"] == label].iterrows():
                curves = [
                    [m.value for m in sorted(client.get_metric_history(r, f"val/{metric}"), key=lambda m: m.step)]
                    for r in variant["runs"].split()
                ]
                epochs = min(len(c) for c in curves)
                if epochs:
                    mean = np.mean([c[:epochs] for c in curves], axis=0)
                    tops.append(float(mean.max()))
                    (line,) = ax.plot(
                        range(1, epochs + 1),
                        mean,
                        marker="o" if epochs < 4 else None,
                        label=", ".join(f"{k}={variant[k]}" for k in series) or "mean over seeds",
                    )
                    if own_chance:
                        ax.axhline(variant["chance"], color=line.get_color(), linestyle=":", linewidth=1)
            if own_chance:
                ax.plot([], [], color="grey", linestyle=":", label="chance (dotted, in each curve's colour)")
            else:
                ax.axhline(chance, color="grey", linestyle="--", label="chance")
            ax.set_title(f"{task}: {label}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"val {metric}")
        for ax in block[: len(labels[task])]:  # one y-axis for the task: noise is not stretched into a swing
            ax.set_ylim(*_limits(metric, tops, mine["chance"].max() if own_chance else chance))
        for ax in block[len(labels[task]) :]:
            ax.axis("off")
        first_row += rows_of[task]
    _legend(fig, axes)
    fig.suptitle("validation metric per epoch,\nmean over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_budget_curve(
    client, runs: pd.DataFrame, table: pd.DataFrame, keys: list[str], ats: list[tuple[str, str]], out: Path
) -> None:
    """Would more training change the ranking? For the variants at each of `ats` (a key and its
    value, e.g. task.distance=32, whether or not the key varies): each seed's validation metric
    against the optimizer updates it had made (metric `updates`), and its test score where it
    stopped. A panel per value and task; one colour per variant, the same in every
    panel."""
    plt = _pyplot()
    panels, label_of = [], {}
    for key, value in ats:
        column = f"params.{key}"
        if column not in runs:
            known = sorted(
                c[len("params.") :] for c in runs.columns if c.startswith("params.") and _shown(c[len("params.") :])
            )
            raise ReportError(f"--budget-curve {key}={value}: these runs have no key {key}; keys: {', '.join(known)}")
        at = runs[column].map(lambda logged, value=value: _same(logged, value))  # 3e-3 is 0.003, 03 is 3
        chosen = table[table["variant"].isin(set(runs.loc[at, "variant"]))]
        if chosen.empty:
            taken = sorted(set(runs[column].astype(str).str.removesuffix(".0")))
            raise ReportError(f"--budget-curve {key}={value}: no variant has it; {key} takes {', '.join(taken)}")
        # what tells the chosen variants of a task apart, besides the model: in the label
        apart = [
            k
            for k in keys
            if k != key and k in chosen and chosen.groupby(["task", "label"])[k].nunique(dropna=False).max() > 1
        ]
        label_of.update(
            {v["variant"]: ", ".join([v["label"], *[f"{k}={v[k]}" for k in apart]]) for _, v in chosen.iterrows()}
        )
        panels += [(f"{task}, {key}={value}", chosen[chosen["task"] == task]) for task in sorted(set(chosen["task"]))]
    colour_of = {label: f"C{i % 10}" for i, label in enumerate(sorted(set(label_of.values())))}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), squeeze=False)
    for ax, (title, mine) in zip(axes[0], panels, strict=False):
        metric, chance = mine["metric"].iloc[0], mine["chance"].mean()
        for _, variant in sorted(mine.iterrows(), key=lambda item: label_of[item[1]["variant"]]):
            label = label_of[variant["variant"]]
            for n, run_id in enumerate(variant["runs"].split()):
                run = client.get_run(run_id)
                curve = [
                    m.value for m in sorted(client.get_metric_history(run_id, f"val/{metric}"), key=lambda m: m.step)
                ]
                per_epoch = _updates_per_epoch(run, len(curve))
                updates = [per_epoch * (e + 1) for e in range(len(curve))]
                ax.plot(
                    updates, curve, color=colour_of[label], alpha=0.55, linewidth=1, label=label if n == 0 else None
                )
                if curve and f"test/{metric}" in run.data.metrics:
                    ax.plot(
                        updates[-1],
                        run.data.metrics[f"test/{metric}"],
                        marker="o",
                        color=colour_of[label],
                        markeredgecolor="black",
                        linestyle="none",
                    )
        ax.axhline(chance, color="grey", linestyle="--", label="chance")
        if metric != "acc" and ax.dataLim.y0 > 0 and ax.dataLim.y1 > 100 * ax.dataLim.y0:
            ax.set_yscale("log")  # an error falling by orders of magnitude (adding's MSE)
        ax.set_xlabel("optimizer updates")
        ax.set_ylabel(f"val {metric} (lines), test {metric} where it stopped (dots)")
        ax.set_title(title, fontsize=9)
        if metric == "acc":
            ax.set_ylim(0.0, 1.02)
    _legend(fig, axes)
    fig.suptitle(
        "budget curve: each seed's validation metric per epoch against updates;\n"
        "dots: its test metric (best checkpoint) at the update it stopped",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out / "budget_curve.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _updates_per_epoch(run, epochs: int) -> float:
    """Optimizer updates an epoch of `run` made: its `updates` over its epochs."""
    metrics = run.data.metrics
    if "updates" not in metrics or not epochs:
        raise ReportError(f"--budget-curve: run {run.info.run_id} logged no `updates`")
    return metrics["updates"] / metrics.get("epochs_trained", epochs)


# ---------------------------------------------------------------- the command


@dataclass
class Report:
    runs: pd.DataFrame
    table: pd.DataFrame
    comparisons: pd.DataFrame
    keys: list[str]
    notes: list[str]
    files: list[str]


def report(
    uri: str,
    experiment: str | None,
    parent: str | None,
    out: Path,
    comparisons: Path | None = None,
    evaluations: bool = False,
    budget_curves: list[tuple[str, str]] | tuple = (),
) -> Report:
    from rnnexp import config, store

    if evaluations and budget_curves:
        raise ReportError(
            "--budget-curve with --evaluations: an evaluation has no learning curve (its trained run "
            "has); draw it from a report of the training runs"
        )
    wanted = read_comparisons(comparisons) if comparisons is not None else []
    try:
        tracked = store.opened(uri)
    except config.ConfigError as err:
        raise ReportError(str(err)) from None
    client = tracked.client()
    frame, parents = runs_frame(client, tracked, experiment, parent)
    runs, notes = training_runs(frame, evaluations)
    if runs.empty:
        which = f"--parent={parent}" if parent else f"--experiment={experiment}"
        raise ReportError(
            f"{which}: no finished {'evaluation' if evaluations else 'training'} runs to report"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    keys = varying_keys(runs)
    if evaluations:
        notes.append(
            "evaluation runs of rnnexp-eval: each trained run's best checkpoint scored on the task as the "
            "columns say (metric eval/<metric>); parameters and epochs are the trained model's"
        )
    if runs["lr_from"].notna().any():  # each variant's own lr: show it
        keys = keys if "optim.lr" in keys else [*keys, "optim.lr"]
        notes.append(lr_note(runs))
    table = summarise(runs, keys)
    if mixed := int((table["git_commits"] > 1).sum()):  # same config, other code: say so, it may matter
        notes.append(
            f"{mixed} variant(s) pool runs made at different git commits (column git_commits in "
            "results.csv; runs.csv has each run's)"
        )
    found = compare(runs, table, wanted, keys)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"--out={str(out)!r}: cannot be a folder ({err.strerror})") from None
    # written beside, then moved in: a report that fails half-way leaves the last one whole
    with tempfile.TemporaryDirectory(dir=out, prefix=".report-") as tmp:
        new = Path(tmp)
        runs_csv(runs, keys, new / "runs.csv")
        table.to_csv(new / "results.csv", index=False)
        (new / "results.md").write_text(results_markdown(table, keys, notes, "eval" if evaluations else "test"))
        files = ["runs.csv", "results.csv", "results.md"]
        if not found.empty:
            found.to_csv(new / "comparisons.csv", index=False)
            (new / "comparisons.md").write_text(comparisons_markdown(found, keys))
            files += ["comparisons.csv", "comparisons.md"]
        axis = "task.length" if evaluations and "task.length" in keys else "task.distance"
        files += plot_results(table, keys, new, axis, "eval" if evaluations else "test")
        if not evaluations:  # an evaluation has no curve: its model's is the trained run's
            plot_learning_curves(client, table, keys, new)
            files.append("learning_curves.png")
        if budget_curves:
            plot_budget_curve(client, runs, table, keys, budget_curves, new)
            files.append("budget_curve.png")
        for name in files:
            os.replace(new / name, out / name)
    for stale in set(FILES) - set(files):  # from an earlier report: it no longer says what these runs say
        (out / stale).unlink(missing_ok=True)
    for run_id in parents:  # the sweep's own report, in the UI beside its runs
        for name in files:
            client.log_artifact(run_id, str(out / name), "report")
    return Report(runs, table, found, keys, notes, files)


def lr_note(runs: pd.DataFrame) -> str:
    """Where the learning rates came from (the recipe of `rnnexp.tuning`)."""
    from rnnexp.tuning import RULE

    chosen = runs.drop_duplicates("variant")["lr_from"]
    sources = ", ".join(sorted(chosen.dropna().unique()))
    return (
        f"optim.lr of {int(chosen.notna().sum())} of {len(chosen)} variants chosen on validation data in experiment "
        f"{sources} (optim.lr_from; each run's tag lr_choice gives every rate's score): {RULE}"
    )


def main(argv: list[str] | None = None) -> None:
    from rnnexp.store import uri_option

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tables, tests and plots from the finished runs of an experiment or a sweep: runs that "
        "differ only in the seed are one variant; trainer=smoke runs and re-runs of a seed are left out.",
        epilog="Example: rnnexp-report --experiment context_length --out experiments/context_length/results "
        "--comparisons experiments/context_length/comparisons.yaml",
        parents=[uri_option()],
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="an MLflow experiment's name: all its finished runs")
    which.add_argument("--parent", help="a sweep's parent run id: its finished children")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for the files (default: ./report)")
    parser.add_argument(
        "--evaluations",
        action="store_true",
        help="report the runs of rnnexp-eval (scored by their eval/ metric) instead of the training runs",
    )
    parser.add_argument(
        "--budget-curve",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="also budget_curve.png: for the variants at KEY=VALUE (e.g. task.distance=32), each "
        "seed's validation metric against optimizer updates and its test score where it stopped; "
        "give it again for more panels",
    )
    parser.add_argument(
        "--comparisons",
        type=Path,
        help="a YAML file of comparisons to test: comparisons: [{name: "
        "..., a: {KEY: VALUE}, b: {KEY: VALUE}}, ...], KEY a column (task, model, cell, pattern) or "
        "a config key (model.hidden_size, ...)",
    )
    args = parser.parse_args(argv)
    from rnnexp.tracking import quiet_store_logs

    quiet_store_logs()
    try:
        ats = []
        for given in args.budget_curve:
            key, eq, value = given.partition("=")
            if not eq or not key or not value:
                raise ReportError(f"--budget-curve={given!r}: give KEY=VALUE, e.g. task.distance=32")
            ats.append((key, value))
        result = report(args.uri, args.experiment, args.parent, args.out, args.comparisons, args.evaluations, ats)
    except ReportError as err:
        parser.exit(2, f"{PROG}: error: {err}\n")
    print((args.out / "results.md").read_text(), end="")
    if not result.comparisons.empty:
        print()
        print((args.out / "comparisons.md").read_text(), end="")
    seeds = result.table["n_seeds"]
    print(
        f"{len(result.table)} variants ({int(seeds.min())}-{int(seeds.max())} seeds) from {len(result.runs)} runs -> "
        f"{args.out}/: {', '.join(result.files)}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
