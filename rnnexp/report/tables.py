"""The report's files of text: `runs.csv`, and the markdown of `results.md` and
`comparisons.md`, with the notes that say what each column claims."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rnnexp.report.criteria import MIN_SEEDS, PARAMS_APART
from rnnexp.report.runs import in_order
from rnnexp.report.statistics import ALPHA, p_digits


def number(value: float, digits: int = 3) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A GitHub table of the cells as written: numbers are not read again (tabulate would drop
    a score's trailing zeros and right-align it)."""
    return pd.DataFrame(rows, columns=head).to_markdown(index=False, disable_numparse=True) + "\n"


def interval(row: pd.Series) -> str:
    """The 95% CI as a table cell: n/a where the seeds give none."""
    if row["n_seeds"] < 2:
        return "n/a (1 seed)"
    if pd.isna(row["ci95_low"]):
        return "n/a (every seed the same)"
    return f"[{number(row['ci95_low'])}, {number(row['ci95_high'])}]"


def solved(row: pd.Series) -> str:
    """The seeds that solved the task, with the exact 95% interval of the rate."""
    if pd.isna(row["n_solved"]):
        return "n/a"
    return f"{int(row['n_solved'])}/{int(row['n_seeds'])} [{row['solved_low']:.2f}, {row['solved_high']:.2f}]"


def binomial(row: pd.Series) -> str:
    return "" if pd.isna(row["p_binomial_holm"]) else f"p{p_digits(row['p_binomial_holm'])}"


NOTE = (
    "solved: the seeds that reached the task's solve threshold ({solved}), with the exact (Clopper-Pearson) 95% "
    "interval of the rate; where the seeds are bimodal, this is the result, not the mean. "
    "Mean ± standard deviation over seeds; 95% CI: Student t over seeds (not clipped to the metric's range). "
    "vs chance, a claim about the config whatever the seed: *above chance*: a one-sided t-test of the seeds' "
    "scores against their chance level; *at chance*: an equivalence test (TOST) that the mean lies within the "
    "margin shown ({margin}); *below chance*: the other one-sided test; *inconclusive*: none of these shown, "
    "which is not evidence of chance level. binomial: an exact one-sided test on the scored test steps of all "
    "seeds pooled (accuracy only), a claim about these trained networks on these test sets, which takes steps as "
    "independent and seeds as fixed. p-values Holm-adjusted, each test over the variants it could be run on "
    "({n_t} for the t-tests and TOST, {n_b} for the binomial); level {alpha}. "
    "Every p-value per variant is in `results.csv`, every run in `runs.csv`."
)


FLAGS_NOTE = (
    "Flags: *budget ran out*: a seed trained for all of trainer.max_epochs (tag stopped_by=budget), not "
    "to a plateau, so its score may still rise with training; *stopping not recorded*: a run older than the "
    "stopped_by tag, which may have reached the ceiling too; *did not learn in this budget*: the last "
    "training epoch's metric is itself not shown above chance (one-sided t over seeds, level {alpha}), which "
    "says nothing of what the model could learn with more training or another learning rate; *fewer than "
    "{min_seeds} seeds*: too few to carry a claim; *memorisation*: the final training score beats the held-out "
    "one (the last epoch's validation score; the test score for runs re-analysed from a runs.csv without it) by "
    "more than the gap shown; *learning rate at the edge of its grid*: "
    "the rate chosen on validation is the grid's smallest or largest, so a better one may lie beyond it; "
    "*learning rate chosen where every rate scored alike*: at the value of the key where stage 1 chose it, every "
    "rate's validation score lay within the best rate's seeds, so the choice carried no information; *made "
    "before the last change to the model, task or training code*: the runs' commit is older than that change, so "
    "this code may give another result; *made at a commit not in this repository's history*: its code cannot be "
    "checked; *bimodal seeds*: some seeds solved the task and the others stayed near "
    "chance, so the solve count is the result and a mean with its t-test describes neither group."
)


def results_markdown(table: pd.DataFrame, keys: list[str], notes: list[str], stage: str = "test") -> str:
    head = [
        "task",
        "model",
        "pattern",
        *keys,
        "parameters",
        "solved",
        f"{stage} metric: mean ± std",
        "95% CI",
        "teacher-forced",
        "chance",
        "vs chance",
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
                solved(r),
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
        NOTE.format(
            solved=_thresholds(table, "solved_at"),
            margin=", ".join(sorted({f"{r['metric']} ±{r['margin']}" for _, r in table.iterrows()})),
            n_t=int(table["p_seeds"].notna().sum()),
            n_b=int(table["p_binomial"].notna().sum()),
            alpha=ALPHA,
        ),
    ]
    if (table["flags"] != "").any():
        lines += ["", FLAGS_NOTE.format(alpha=ALPHA, min_seeds=MIN_SEEDS)]
    lines += [f"Note: {note}." for note in notes]
    return "\n".join(lines) + "\n"


def _thresholds(table: pd.DataFrame, column: str) -> str:
    """Each task's threshold, e.g. "delayed_recall: acc ≥ 0.95"."""
    out = []
    for (task, metric, better), rows in table.groupby(["task", "metric", "better"]):
        values = rows[column].dropna().unique()
        sign = "≥" if better == "higher" else "≤"
        out.append(
            f"{task}: {metric} {sign} " + ", ".join(f"{v:.3g}" for v in values) if len(values) else f"{task}: n/a"
        )
    return "; ".join(out)


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
        "solved a vs b",
        "Barnard Holm p",
        "verdict",
        "flags",
    ]
    rows = []
    for _, r in found.iterrows():
        difference = f"{r['difference']:+.3f}" + (
            f" [{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]" if not pd.isna(r["ci95_low"]) else ""
        )
        welch = "" if pd.isna(r["t"]) else f"{r['t']:.2f} ({r['df']:.1f})"
        p, holm_p = p_digits(r["p"]).lstrip("="), p_digits(r["p_holm"]).lstrip("=")
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
            "" if pd.isna(r["solved_a"]) else f"{int(r['solved_a'])}/{r['n_a']} vs {int(r['solved_b'])}/{r['n_b']}",
            p_digits(r["p_solved_holm"]).lstrip("="),
            r["verdict"],
            "" if pd.isna(r["flags"]) else r["flags"],
        ]
        rows.append(cells)
    lines = [markdown_table(head, rows).rstrip("\n")]
    lines += [
        "",
        f"Welch's t-test (two-sided) of the seeds' test scores, a against b, paired where every task, "
        f"trainer and optimiser key agrees; the 95% CI is Welch's for the difference of the means. Holm-adjusted "
        f"over the {int(found['p'].notna().sum())} row(s) with a test, level {ALPHA}; `n/a`: no test (a side "
        "with one seed, or every seed the same on both). solved a vs b: the seeds that reached the task's solve "
        "threshold, compared by Barnard's exact test (two-sided), Holm-adjusted over its own "
        f"{int(found['p_solved'].notna().sum())} row(s); where a side's seeds are bimodal (some solve, the others "
        "stay near chance) the verdict is that test's, not Welch's. flags: parameter counts more than "
        f"{PARAMS_APART:.0%} apart, and each side's flags in results.md; *better within this budget*: a side "
        "stopped at trainer.max_epochs on some seed (or its runs did not record how they stopped), so the "
        "difference may not hold with more training.",
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
    "better",
    "score",
    "teacher_forced",
    "chance",
    "n_test_scored",
    "n_params",
    "epochs_trained",
    "stopped_by",
    "train_score",
    "val_score",
    "wall_time_s",
    "variant",
    "git_commit",
    "git_dirty",
    "lr_from",
    "lr_grid",
    "lr_informative",
)


def runs_csv(runs: pd.DataFrame, keys: list[str], path: Path) -> None:
    """Each run counted: what a later `rnnexp-report --runs` needs to re-analyse it (the keys
    that tell variants apart, and every model key that varies, which a comparison names)."""
    from rnnexp.report.runs import shown_key

    tests = sorted(c for c in runs.columns if c.startswith("metrics.test/"))
    model_keys = [
        c
        for c in runs.columns
        if c.startswith("params.model.")
        and shown_key(c[len("params.") :])
        and c[len("params.") :] not in keys
        and runs[c].nunique(dropna=False) > 1
    ]
    columns = [*RUN_COLUMNS, *[f"params.{k}" for k in keys], *sorted(model_keys), *tests]
    out = runs[columns].rename(columns=lambda c: c.removeprefix("params.").removeprefix("metrics."))
    in_order(out.assign(label=runs["label"]), keys).drop(columns="label").sort_values(
        ["variant", "seed"], kind="stable"
    ).to_csv(path, index=False)


def lr_note(runs: pd.DataFrame) -> str:
    """Where the learning rates came from (the recipe of `rnnexp.tuning`)."""
    from rnnexp.tuning import RULE

    chosen = runs.drop_duplicates("variant")["lr_from"]
    sources = ", ".join(sorted(chosen.dropna().unique()))
    return (
        f"optim.lr of {int(chosen.notna().sum())} of {len(chosen)} variants chosen on validation data in experiment "
        f"{sources} (optim.lr_from; each run's tag lr_choice gives every rate's score): {RULE}"
    )


def spans_markdown(table: pd.DataFrame, found: pd.DataFrame, key: str) -> str:
    """`spans.md`: each variant's memory span along `key`, then the comparisons of spans."""
    extra = list(table.columns[2 : list(table.columns).index("metric")])
    head = ["task", "model", *extra, "params", "seeds", "runs", f"{key} run", "span [95% interval]", "flags"]
    rows = [
        [
            row["task"],
            row["label"],
            *[str(row[k]) for k in extra],
            "" if pd.isna(row["n_params"]) else f"{int(row['n_params']):,}",
            str(row["n_seeds"]),
            str(row["n_runs"]),
            row["distances"],
            row["shown"],
            row["flags"],
        ]
        for _, row in table.iterrows()
    ]
    text = (
        f"The memory span: the {key} at which the test score has fallen halfway from the variant's ceiling (its "
        "best mean score at a distance run, at most) to chance, from a logistic fit against log distance, with a "
        "95% bootstrap interval over seeds (drawn again at each tested distance) widened to "
        "the tested distances between which the mean crosses halfway; `> X`: never below halfway up to X, "
        "`< X`: never shown above chance (rnnexp/span.py). Flags: those of the runs at each distance "
        "(results.md); *seeds split*: at a distance, some runs shown above chance and some not (an exact "
        "binomial test of each run's test steps, Holm over the variant's runs): where seeds split near the "
        "span, its interval holds it less often than 95%.\n\n" + markdown_table(head, rows)
    )
    if not found.empty:
        text += (
            "\nComparisons of spans: the ratio a/b with its 95% interval and a two-sided p from bootstraps "
            "over each side's seeds, Holm-adjusted over the pairs; one span is longer only where that p is "
            f"under {ALPHA:g} and the two intervals (widened to their crossings, as the ratio's) do not overlap; "
            "where a side has only a bound, what the bounds show.\n\n"
            + markdown_table(
                ["task", "a", "b", "a's span", "b's span", "verdict", "flags"],
                [
                    [r["task"], r["a"], r["b"], r["a_span"], r["b_span"], r["verdict"], r["flags"]]
                    for _, r in found.iterrows()
                ],
            )
        )
    return text
