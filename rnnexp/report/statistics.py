"""The report's statistics: per variant, the mean over seeds, its 95% confidence interval, the
tests against chance (above it, at it within a margin, or neither) and the count of seeds that
solved the task; and the comparisons a YAML file names, Welch's t-test and an exact test of the
solve rates for each, every family Holm-adjusted."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from rnnexp.report.criteria import MIN_SEEDS, PARAMS_APART, Criteria
from rnnexp.report.runs import TAG_COLUMNS, ReportError, in_order, same_value, shown_key, sort_value

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


def summarise(
    runs: pd.DataFrame,
    keys: list[str],
    criteria: Criteria | None = None,
    stale: frozenset[str] = frozenset(),
    unknown: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """One row per variant: its seeds' mean, std, 95% CI, the tests against chance, its solve count
    and the threats to reading its score (`flags`); `stale`: the commits older than the code."""
    criteria = criteria or Criteria()
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
                # an older run that did not record how it stopped: it may have hit the ceiling
                "n_stop_unknown": int(group["stopped_by"].isna().sum()),
                "p_seeds": np.nan,
                "p_below": np.nan,
                "margin": str(criteria.margin(first["task"], first["metric"])),
                "p_tost": np.nan,
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
            row["p_below"] = stats.ttest_1samp(gains, 0.0, alternative="less" if higher else "greater").pvalue
            row["p_tost"] = _tost(gains, criteria.margin(first["task"], first["metric"]).amount(row["chance"]))
        row.update(_solved(scores, group["chance"].to_numpy(float), first, criteria))
        row.update(_gap(group, first, criteria, higher))
        row["lr_edge"] = _lr_edge(first)
        row["lr_uninformative"] = str(first.get("lr_informative")) == "false"
        row["n_stale"] = int(group["git_commit"].isin(stale).sum())
        row["n_unknown_commit"] = int(group["git_commit"].isin(unknown).sum() + group["git_commit"].isna().sum())
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
    table["p_below_holm"] = holm(table["p_below"])
    table["p_tost_holm"] = holm(table["p_tost"])
    table["p_binomial_holm"] = holm(table["p_binomial"])
    table["vs_chance"] = table.apply(_verdict, axis=1)
    table["flags"] = table.apply(flags, axis=1)
    return in_order(table, keys)


def _tost(gains: np.ndarray, margin: float) -> float:
    """Two one-sided tests (Schuirmann 1987): the seeds' mean gain over chance lies within
    ±margin when both "above -margin" and "below +margin" are shown; p is the larger of the two."""
    above = stats.ttest_1samp(gains, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(gains, margin, alternative="less").pvalue
    return float(max(above, below))


def _solved(scores: np.ndarray, chances: np.ndarray, first: pd.Series, criteria: Criteria) -> dict[str, Any]:
    """How many seeds solved the task (reached its threshold), the exact 95% interval of that
    rate (Clopper-Pearson: with none solved, how high the rate may still be), and whether the
    seeds are bimodal: some solved, and every other one nearer chance than the threshold."""
    threshold = criteria.solved_at(first["task"], first["metric"])
    higher = first["better"] == "higher"
    at = threshold.amount(np.nanmean(chances)) if threshold.of_chance else threshold.value
    if np.isnan(at):  # a fraction of a chance level that is not known
        return {"solved_at": at, "n_solved": np.nan, "solved_low": np.nan, "solved_high": np.nan, "bimodal": False}
    if not np.isnan(chances).any() and ((at <= chances) if higher else (at >= chances)).any():
        raise ReportError(
            f"--solved: {first['task']}'s {first['metric']} solved at {at:g} would count a seed at its chance "
            f"level ({np.nanmean(chances):g}) as solved; give --solved {first['task']}:{first['metric']}=VALUE"
        )
    solved = (scores >= at) if higher else (scores <= at)
    k, n = int(solved.sum()), len(scores)
    interval = stats.binomtest(k, n).proportion_ci(CONFIDENCE, method="exact")
    halfway = (chances + at) / 2
    near_chance = (scores < halfway) if higher else (scores > halfway)
    return {
        "solved_at": at,
        "n_solved": k,
        "solved_low": interval.low,
        "solved_high": interval.high,
        "bimodal": bool(0 < k < n and near_chance[~solved].all()),
    }


def _gap(group: pd.DataFrame, first: pd.Series, criteria: Criteria, higher: bool) -> dict[str, Any]:
    """The final training score against the held-out one (the last epoch's validation score; the
    test score where a run logged none), and the gap beyond which the variant memorised."""
    train = group["train_score"].to_numpy(float)
    val = group["val_score"].to_numpy(float) if "val_score" in group else np.full(len(group), np.nan)
    on = "validation" if not np.isnan(val).any() else "test"
    held = val if on == "validation" else group["score"].to_numpy(float)
    gap = float(np.mean(train - held if higher else held - train)) if not np.isnan(train).any() else np.nan
    limit = criteria.gap(first["task"], first["metric"]).amount(group["chance"].mean())
    return {"gap": gap, "gap_on": on, "gap_limit": limit, "memorised": bool(gap > limit)}


def _lr_edge(first: pd.Series) -> str:
    """Where the variant's learning rate lies in the grid it was chosen from: bottom, top or ''."""
    grid_text, lr = first.get("lr_grid"), first.get("params.optim.lr")
    if pd.isna(grid_text) or not grid_text or pd.isna(lr):
        return ""
    grid = [float(g) for g in str(grid_text).split(",")]
    if len(grid) < 2:
        return ""
    # the grid is logged to 6 digits, the rate in full: equal within that rounding
    return "bottom" if float(lr) <= min(grid) * (1 + 1e-5) else "top" if float(lr) >= max(grid) * (1 - 1e-5) else ""


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
    if row["n_stop_unknown"]:
        out.append(
            f"stopping not recorded ({row['n_stop_unknown']} of {row['n_seeds']} seeds): the budget may have run out"
        )
    if row["n_diverged"]:
        out.append(f"validation score not finite ({row['n_diverged']} of {row['n_seeds']} seeds)")
    if row["learned"] is False:
        out.append("did not learn in this budget (training metric not shown above chance)")
    if row["n_seeds"] < MIN_SEEDS:
        out.append(f"fewer than {MIN_SEEDS} seeds ({row['n_seeds']})")
    if row["memorised"]:
        out.append(
            f"memorisation: train {row['train_mean']:.3g} against {row['gap_on']} {row['train_mean'] - row['gap']:.3g} "
            f"(gap {row['gap']:.3g} > {row['gap_limit']:.3g})"
            if row["better"] == "higher"
            else f"memorisation: gap {row['gap']:.3g} between train and {row['gap_on']} > {row['gap_limit']:.3g}"
        )
    if row["lr_edge"]:
        out.append(f"learning rate at the {row['lr_edge']} of its grid")
    if row["lr_uninformative"]:
        out.append("learning rate chosen where every rate scored alike")
    if row["n_unknown_commit"]:
        out.append(
            f"made at a commit not in this repository's history ({row['n_unknown_commit']} of {row['n_seeds']} "
            "seeds): its code cannot be checked"
        )
    if row["n_stale"]:
        out.append(
            f"made before the last change to the model, task or training code ({row['n_stale']} of "
            f"{row['n_seeds']} seeds)"
        )
    if row["bimodal"]:
        out.append(
            f"bimodal seeds ({row['n_solved']} of {row['n_seeds']} solved, the others near chance): "
            "read the solve count, not the mean and its t-test"
        )
    return "; ".join(out)


def _verdict(row: pd.Series) -> str:
    """Against chance, over seeds (the claim is about the config, whatever the seed), one of:
    above it (one-sided t-test), below it (the other side), at it (TOST within the margin: an
    equivalence shown, not a difference missed), or inconclusive (none of these shown). The
    binomial test, a claim about the trained networks' test steps, has its own column."""
    if pd.isna(row["chance"]):
        return "n/a (a seed without its chance level)"
    if np.isnan(row["p_seeds_holm"]):
        return f"n/a ({row['n_seeds']} seed)" if row["n_seeds"] < 2 else "n/a (every seed the same)"
    above = "above" if row["better"] == "higher" else "better than"
    p, tost = row["p_seeds_holm"], row["p_tost_holm"]
    if p < ALPHA:
        return f"{above} chance ({format_p(p)})"
    if tost < ALPHA:
        return f"at chance (±{row['margin']}, TOST {format_p(tost)})"
    if row["p_below_holm"] < ALPHA:
        return f"{'below' if row['better'] == 'higher' else 'worse than'} chance ({format_p(row['p_below_holm'])})"
    return f"inconclusive ({above}: {format_p(p)}; at chance ±{row['margin']}: TOST {format_p(tost)})"


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
                "solved_a": a["n_solved"],
                "solved_b": b["n_solved"],
                "p_solved": np.nan,
                "bimodal": bool(a["bimodal"] or b["bimodal"]),
                "flags": _comparison_flags(a, b),
                "ceiling": bool(a["n_budget"] or b["n_budget"] or a["n_stop_unknown"] or b["n_stop_unknown"]),
            }
            if (
                not pd.isna(a["n_solved"])
                and not pd.isna(b["n_solved"])
                and not (a["n_solved"] == b["n_solved"] and a["n_solved"] in (0, len(x)) and len(x) == len(y))
            ):  # (none, or every seed, solved on both sides: no test could tell them apart, none run)
                ka, kb = int(a["n_solved"]), int(b["n_solved"])
                # Barnard's exact test (unconditional, more powerful than Fisher's at a few seeds)
                row["p_solved"] = stats.barnard_exact([[ka, len(x) - ka], [kb, len(y) - kb]]).pvalue
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
    # in the file's order, then by task and the keys' values: the same table whatever the runs' order
    order = {c.name: i for i, c in enumerate(comparisons)}
    shown = [k for k in keys if k in found_rows]
    found_rows = found_rows.iloc[
        sorted(
            range(len(found_rows)),
            key=lambda i: (
                order[found_rows["comparison"].iloc[i]],
                found_rows["task"].iloc[i],
                *[sort_value(found_rows[k].iloc[i]) for k in shown],
            ),
        )
    ].reset_index(drop=True)
    found_rows["p_holm"] = holm(found_rows["p"])
    found_rows["p_solved_holm"] = holm(found_rows["p_solved"])
    found_rows["verdict"] = found_rows.apply(_comparison_verdict, axis=1)
    return found_rows


def _equal(x: Any, y: Any) -> bool:
    return (pd.isna(x) and pd.isna(y)) or (not pd.isna(x) and not pd.isna(y) and str(x) == str(y))


def _side_label(row: pd.Series, selector: dict[str, str]) -> str:
    return ", ".join([row["label"], *[f"{k}={v}" for k, v in selector.items() if "." in k]])


def _comparison_flags(a: pd.Series, b: pd.Series) -> str:
    """The threats to a comparison: each side's (see `flags`), and sizes that are not matched."""
    out = []
    if not pd.isna(a["n_params"]) and not pd.isna(b["n_params"]):
        apart = abs(a["n_params"] - b["n_params"]) / min(a["n_params"], b["n_params"])
        if apart > PARAMS_APART:
            out.append(f"parameter counts {apart:.0%} apart ({int(a['n_params']):,} vs {int(b['n_params']):,})")
    for side, row in (("a", a), ("b", b)):
        if row["flags"]:
            out.append(f"{side}: {row['flags']}")
    return "; ".join(out)


def _comparison_verdict(row: pd.Series) -> str:
    """Welch's t-test on the means; where a side's seeds are bimodal, Barnard's test on the solve
    counts instead (a mean of solved and failed seeds describes neither)."""
    if row["bimodal"] and not np.isnan(row["p_solved_holm"]):
        counts = f"{int(row['solved_a'])}/{row['n_a']} vs {int(row['solved_b'])}/{row['n_b']} seeds solved"
        p = format_p(row["p_solved_holm"])
        if row["p_solved_holm"] >= ALPHA:
            return f"no difference in solve rate shown ({counts}, Barnard Holm {p}; bimodal seeds: not the t-test)"
        winner = row["a"] if row["solved_a"] / row["n_a"] > row["solved_b"] / row["n_b"] else row["b"]
        within = " within this budget" if row["ceiling"] else ""
        return f"{winner} solves more often{within} ({counts}, Barnard Holm {p}; bimodal seeds: not the t-test)"
    if np.isnan(row["p_holm"]):
        return "n/a (1 seed)" if min(row["n_a"], row["n_b"]) < 2 else "n/a (every seed the same on both sides)"
    if row["p_holm"] >= ALPHA:
        return f"no difference shown (Holm {format_p(row['p_holm'])})"
    a_better = (row["difference"] > 0) == (row["better"] == "higher")
    # a side stopped by max_epochs may still have been rising: the claim is about this budget
    within = " within this budget" if row["ceiling"] else ""
    return f"{row['a'] if a_better else row['b']} better{within} (Holm {format_p(row['p_holm'])})"
