"""Each design at each distance on fixed training data (context_length's pronoun runs) beside
fresh (this experiment's), from the two committed runs.csv files: the mean test and training
accuracy over seeds, their gap (train − test here; the report flags memorisation where its own
gap, train − validation on fresh data, passes 0.1), and the seeds solved
(test accuracy 0.95 or more), each under the plateau rule. The two sets differ in more than the
data (the LSTM's forget-gate bias and rate, the code), so the table sets them side by side and
tests nothing:

    .venv/bin/python experiments/pronoun_fresh/against_fixed.py \
        > experiments/pronoun_fresh/results/against_fixed.md
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SETS = {
    "fixed": HERE.parent / "context_length" / "results" / "runs.csv",
    "fresh": HERE / "results" / "runs.csv",
}
SOLVED = 0.95


def summary(path: Path) -> pd.DataFrame:
    runs = pd.read_csv(path)
    runs = runs[runs["task"] == "pronoun_reference"]
    if "trainer.early_stopping.patience" in runs:  # the runs under the plateau rule, as the fixed ones were
        runs = runs[pd.to_numeric(runs["trainer.early_stopping.patience"], errors="coerce").notna()]
    runs = runs.assign(
        design=runs["model"].where(runs["cell"].fillna("none") == "none", runs["model"] + " (" + runs["cell"] + ")")
    )
    grouped = runs.groupby(["design", "task.distance"])
    return pd.DataFrame(
        {
            "seeds": grouped.size(),
            "test": grouped["score"].mean(),
            "train": grouped["train_score"].mean(),
            "solved": grouped["score"].apply(lambda s: int((s >= SOLVED).sum())),
            "lr": grouped["optim.lr"].first(),
        }
    ).assign(gap=lambda t: t["train"] - t["test"])


def main() -> None:
    fixed, fresh = (summary(path) for path in SETS.values())
    table = fixed.add_suffix(" fixed").join(fresh.add_suffix(" fresh"), how="outer").reset_index()
    sides = [f"{what}, {data}" for data in SETS for what in ("test", "train − test", "solved")]
    print("| design | distance | " + " | ".join(sides) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for _, r in table.iterrows():
        cells = [
            f"{r['test fixed']:.3f}",
            f"{r['gap fixed']:+.3f}",
            f"{int(r['solved fixed'])}/{int(r['seeds fixed'])}",
            f"{r['test fresh']:.3f}",
            f"{r['gap fresh']:+.3f}",
            f"{int(r['solved fresh'])}/{int(r['seeds fresh'])}",
        ]
        print(f"| `{r['design']}` | {int(r['task.distance'])} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
