"""The report's files of text: `runs.csv`, and the markdown of `results.md` and
`comparisons.md`, with the notes that say what each column claims."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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


def binomial(row: pd.Series) -> str:
    return "" if pd.isna(row["p_binomial_holm"]) else f"p{p_digits(row['p_binomial_holm'])}"


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
