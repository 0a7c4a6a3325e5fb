"""Did each seed's curve flatten within the budget? For every run of the experiment: its mean
validation loss over the last 50 epochs against the 50 before (a fall of a few percent on a
noisy curve is not a trend; the means smooth it), the epoch of its lowest validation loss, and
its test score, from the MLflow store, into a CSV beside the README's results:

    .venv/bin/python experiments/copy_memory_budget/last_epochs.py [sqlite:///mlflow.db] \
        > experiments/copy_memory_budget/results/last_epochs.csv
"""

from __future__ import annotations

import csv
import sys

from mlflow.tracking import MlflowClient


def main(uri: str = "sqlite:///mlflow.db", experiment: str = "copy_memory_budget") -> None:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"last_epochs.py: no experiment {experiment!r} in {uri}")
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(
        ["cell", "forget_bias", "seed", "epochs", "mean_val_201_250", "mean_val_251_300", "change", "best_epoch"]
    )
    rows = []
    for run in client.search_runs([found.experiment_id], "attributes.status = 'FINISHED'"):
        params = run.data.params
        if "seed" not in params:  # the sweep's parent run
            continue
        val = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val/loss"), key=lambda m: m.step)]
        if len(val) < 100:
            continue
        before, last = sum(val[-100:-50]) / 50, sum(val[-50:]) / 50
        best = min(range(len(val)), key=val.__getitem__) + 1
        rows.append(
            [
                params["model.cell"],
                params.get("model.forget_bias"),
                int(params["seed"]),
                len(val),
                f"{before:.4f}",
                f"{last:.4f}",
                f"{last / before - 1:+.1%}",
                best,
            ]
        )
    out.writerows(sorted(rows, key=lambda r: (r[0], str(r[1]), r[2])))


if __name__ == "__main__":
    main(*sys.argv[1:2])
