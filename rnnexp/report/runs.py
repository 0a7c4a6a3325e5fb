"""The runs a report counts: MLflow's rows of an experiment or a sweep, the training (or
evaluation) runs among them one row each, and the config keys that tell their variants apart."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# the tags that name a variant in a table, before the config keys that vary
TAG_COLUMNS = ("task", "model", "cell", "pattern")


class ReportError(Exception):
    """Bad input to the report: one line naming the option, the value and what exists."""


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


def counted_runs(frame: pd.DataFrame, evaluations: bool = False) -> tuple[pd.DataFrame, list[str]]:
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
    runs["val_score"] = runs.apply(lambda row: row.get(f"metrics.val/{row['metric']}", np.nan), axis=1)
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
    notes += dirty_notes(runs)
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


def runs_from_csv(path) -> pd.DataFrame:
    """The counted runs of an earlier report, from its `runs.csv`: what the statistics need, to
    re-analyse committed results without their store (no learning curves: those are in the store)."""
    try:
        # every column as written (a key's "1" stays "1", not 1.0; git_dirty's "false" stays so),
        # the numbers converted below; "None" is a value (model.forget_bias=null), not a missing one
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except OSError as err:
        raise ReportError(f"--runs={str(path)!r}: {err.strerror}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ReportError(f"--runs={str(path)!r}: not a CSV file ({' '.join(str(err).split())})") from None
    needed = {"run_id", "seed", "task", "model", "cell", "pattern", "metric", "score", "chance", "variant"}
    if missing := sorted(needed - set(frame.columns)):
        raise ReportError(f"--runs={str(path)!r}: not a runs.csv of rnnexp-report (no column {', '.join(missing)})")
    if frame.empty:
        raise ReportError(f"--runs={str(path)!r}: no runs in it (a header only)")
    _check_csv(frame, str(path))
    from rnnexp.report.criteria import HIGHER

    runs = frame.copy()
    runs["seed"] = frame["seed"].astype(float).astype(int)
    for column in ("score", "chance"):
        runs[column] = pd.to_numeric(frame[column])
    for column in ("teacher_forced", "n_test_scored", "n_params", "epochs_trained", "train_score", "val_score"):
        runs[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    for column in ("stopped_by", "git_commit", "lr_from", "lr_grid", "lr_informative", "git_dirty"):
        runs[column] = frame[column] if column in frame else None
    runs["wall_time_s"] = pd.to_numeric(frame["wall_time_s"], errors="coerce") if "wall_time_s" in frame else np.nan
    if "better" not in frame:
        runs["better"] = frame["metric"].map(lambda m: "higher" if m in HIGHER else "lower")
    for column in [c for c in frame.columns if c.startswith(("test/", "eval/"))]:
        runs[f"metrics.{column}"] = pd.to_numeric(frame[column], errors="coerce")
    keys = [c for c in frame.columns if "." in c and "/" not in c]  # task.distance, optim.lr, ...
    for key in keys:
        runs[f"params.{key}"] = frame[key].map(lambda v: None if pd.isna(v) else str(v))
    runs["cell"] = runs["cell"].fillna("none")
    runs["label"] = runs["model"].where(runs["cell"] == "none", runs["model"] + " (" + runs["cell"] + ")")
    runs["smoke"] = False
    return runs


def dirty_notes(runs: pd.DataFrame) -> list[str]:
    """A note where runs were made from a working tree with changes."""
    dirty = int((runs["git_dirty"].astype(str).str.lower() == "true").sum())
    if not dirty:
        return []
    return [
        f"{dirty} run(s) were made from a working tree with changes (tag git_dirty=true): their git commit "
        "does not alone identify the code"
    ]


def _check_csv(frame: pd.DataFrame, path: str) -> None:
    """What the store's path guarantees, checked on a runs.csv (a file anyone can edit): numbers
    where numbers belong, in range; one task, model and metric per variant; one run per seed."""
    from rnnexp.report.criteria import HIGHER

    def where(i: int) -> str:
        return f"--runs={path!r}: row {i + 2} (run {frame['run_id'].iloc[i]})"

    def bad(i: int, column: str, allowed: str) -> ReportError:
        return ReportError(f"{where(i)}: {column}={str(frame[column].iloc[i])!r} is not {allowed}")

    for column in ("variant", "task", "model", "metric"):
        for i, value in enumerate(frame[column]):
            if pd.isna(value) or not str(value).strip():
                raise ReportError(f"{where(i)}: {column} is empty")
    for i, value in enumerate(frame["seed"]):
        try:
            if float(value) != int(float(value)):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise bad(i, "seed", "an integer") from None
    for column in ("score", "chance", "n_params", "n_test_scored", "epochs_trained", "train_score"):
        if column not in frame:
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        for i, (value, number) in enumerate(zip(frame[column], numbers, strict=True)):
            if column not in ("score", "chance") and pd.isna(value):
                continue  # an optional column left empty
            if pd.isna(number) or not np.isfinite(number):
                raise bad(i, column, "a finite number")
            accuracy = frame["metric"].iloc[i] in HIGHER
            if column in ("score", "chance", "train_score") and (number < 0 or (accuracy and number > 1)):
                raise bad(i, column, "an accuracy from 0 to 1" if accuracy else "a loss of 0 or more")
            if column == "chance" and number == 0:
                raise bad(i, column, "a chance level above 0")
            if column == "n_test_scored" and (number < 1 or number != int(number)):
                raise bad(i, column, "a count of scored test steps, a whole number of at least 1")
    for column in ("task", "model", "cell", "metric", *(["better"] if "better" in frame else [])):
        mixed = frame.groupby("variant")[column].nunique(dropna=False)
        if (mixed > 1).any():
            raise ReportError(
                f"--runs={path!r}: variant {mixed.index[mixed > 1][0]} has runs of different {column}s: "
                "a runs.csv edited by hand"
            )
    seeds = frame["seed"].astype(float).astype(int)
    twice = frame.assign(seed=seeds).duplicated(["variant", "seed"])
    if twice.any():
        i = int(np.flatnonzero(twice.to_numpy())[0])
        raise ReportError(
            f"--runs={path!r}: row {i + 2}: variant {frame['variant'].iloc[i]} has seed {seeds.iloc[i]} twice "
            "(a report counts one run per variant and seed)"
        )


def shown_key(key: str) -> bool:
    from rnnexp.store import is_variant_key

    # (an evaluation's overrides, `evaluated_with`: their keys are columns of their own)
    return is_variant_key(key) and not key.endswith("_target_") and key != "evaluated_with"


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """The config keys that tell a table's rows apart: a task's or trainer's key (`task.distance`,
    `optim.lr`, `trainer.max_epochs`, ...) that differs between variants of one task, and a model's
    key (`model.hidden_size`, ...) that differs between variants of one task and model. (A model's
    own keys, such as `model.window`, come with the model; sizes show in the parameter count.) A
    value a run solved from the others (`task.length` from the distance) counts as given, None:
    it tells nothing the others do not."""
    keys: set[str] = set()
    params = [c for c in runs.columns if c.startswith("params.") and shown_key(c[len("params.") :])]
    if "solved" in runs:
        runs = runs.copy()
        for i, solved in runs["solved"].dropna().items():
            for key in filter(None, str(solved).split(",")):
                if f"params.{key}" in runs:
                    runs.at[i, f"params.{key}"] = "None"
    for by, prefix in ((["task"], None), (["task", "label"], "model.")):
        for _, same in runs.groupby(by):
            variants = same.drop_duplicates("variant")
            for column in params:
                key = column[len("params.") :]
                # None as read back from a CSV, "None" as from the store
                if (key.startswith("model.") == (prefix is not None)) and variants[column].fillna("None").nunique() > 1:
                    keys.add(key)
    return sorted(keys, key=lambda k: (k != "task.distance", k))


def same_value(value: Any, wanted: str) -> bool:
    """A logged value against one from the YAML file: `1e-2` is `0.01`, `15` is `15.0`."""
    if pd.isna(value):
        return wanted in ("None", "null")
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == wanted


def sort_value(value: Any) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def in_order(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    order = sorted(
        range(len(table)),
        key=lambda i: (table["task"].iloc[i], table["label"].iloc[i], *[sort_value(table[k].iloc[i]) for k in keys]),
    )
    return table.iloc[order].reset_index(drop=True)
