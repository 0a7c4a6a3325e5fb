"""The report's statistics: per variant, the mean over seeds, its 95% confidence interval and
the tests against chance; and the comparisons a YAML file names, Welch's t-test for each, every
family Holm-adjusted."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from rnnexp.report.runs import TAG_COLUMNS, ReportError, in_order, same_value, shown_key

ALPHA = 0.05  # the level of every test in a report


CONFIDENCE = 0.95


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
    return in_order(table, keys)


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
    return "p" + p_digits(p)


def p_digits(p: float) -> str:
    """ "<0.0001", "=0.0034" or "=0.042": two significant digits below 0.01, else three decimals."""
    return "" if pd.isna(p) else "<0.0001" if p < 1e-4 else f"={p:.2g}" if p < 0.01 else f"={p:.3f}"


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
            if fixed := [k for k in side if k == "seed" or ("." in k and not shown_key(k))]:
                raise ReportError(
                    f"--comparisons={str(path)!r}: comparison {comparison.name!r} selects by "
                    f"{', '.join(fixed)}, which a variant does not fix (seeds are pooled, tracking "
                    "keys cannot change a result)"
                )
        comparisons.append(comparison)
    return comparisons


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
        mask &= configs[column].map(lambda v, wanted=value: same_value(v, wanted))
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
    params = [c for c in configs.columns if c.startswith("params.") and shown_key(c[len("params.") :])]
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
