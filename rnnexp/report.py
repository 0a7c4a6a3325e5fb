"""`rnnexp-report`: the results of an experiment or a sweep, as tables and plots.

Reads the FINISHED runs of an MLflow experiment (or the children of one sweep's parent run) and
writes into `--out`:

- `results.md` and `results.csv`: per task x model x distance, the mean and standard deviation
  over seeds of the final test metric (free-running for pattern 2, with its teacher-forced score
  alongside), the chance level, and the number of seeds;
- `metric_vs_distance.png`: the test metric against the distance, one line per model with a band
  of one standard deviation over seeds, and the chance level dashed, one panel per task;
- `learning_curves.png`: the validation metric per epoch, one panel per task and model, one line
  per distance (mean over seeds).

The same files are logged as artifacts (under `report/`) on the sweeps' parent runs, so they
show in the MLflow UI.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

PROG = "rnnexp-report"


@dataclass
class Group:
    """The runs of one task x model x distance, over seeds."""

    task: str
    model: str
    pattern: str
    distance: str
    metric: str
    scores: list[float] = field(default_factory=list)
    teacher_forced: list[float] = field(default_factory=list)
    chances: list[float] = field(default_factory=list)  # per run: a split drawn by the seed can move it
    run_ids: list[str] = field(default_factory=list)

    @property
    def chance(self) -> float:
        return statistics.fmean(self.chances) if self.chances else float("nan")

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def std(self) -> float:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else 0.0


def model_label(tags: dict[str, str]) -> str:
    cell = tags.get("cell", "none")
    return tags["model"] if cell == "none" else f"{tags['model']} ({cell})"


def _distance_key(distance: str) -> tuple[int, float]:
    return (1, 0.0) if distance == "none" else (0, float(distance))


def collect(runs) -> list[Group]:
    """Group finished runs by task, model and distance."""
    groups: dict[tuple[str, str, str], Group] = {}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        metric = tags.get("metric")
        if metric is None or f"test/{metric}" not in metrics:
            continue  # not a training run of this project (e.g. a sweep's parent)
        key = (tags["task"], model_label(tags), tags.get("distance", "none"))
        group = groups.setdefault(key, Group(*key[:2], tags.get("pattern", "?"), key[2], metric))
        group.scores.append(metrics[f"test/{metric}"])
        if f"test/{metric}_tf" in metrics:
            group.teacher_forced.append(metrics[f"test/{metric}_tf"])
        if "chance_level" in metrics:
            group.chances.append(metrics["chance_level"])
        group.run_ids.append(run.info.run_id)
    return sorted(groups.values(), key=lambda g: (g.task, g.model, _distance_key(g.distance)))


def write_tables(groups: list[Group], out: Path) -> None:
    header = ["task", "model", "pattern", "distance", "metric", "mean", "std", "teacher_forced_mean", "chance", "seeds"]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for g in groups:
            tf = f"{statistics.fmean(g.teacher_forced):.6g}" if g.teacher_forced else ""
            writer.writerow([g.task, g.model, g.pattern, g.distance, g.metric, f"{g.mean:.6g}", f"{g.std:.6g}", tf,
                             f"{g.chance:.6g}", len(g.scores)])
    lines = ["| task | model | pattern | distance | test metric (mean ± std) | teacher-forced | chance | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        tf = f"{statistics.fmean(g.teacher_forced):.3f}" if g.teacher_forced else ""
        lines.append(f"| {g.task} | {g.model} | {g.pattern} | {g.distance} | {g.metric} {g.mean:.3f} ± {g.std:.3f} "
                     f"| {tf} | {g.chance:.3f} | {len(g.scores)} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot_metric_vs_distance(groups: list[Group], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({g.task for g in groups})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [g for g in groups if g.task == task]
        by_model: dict[str, list[Group]] = defaultdict(list)
        for g in mine:
            by_model[g.model].append(g)
        distances = {g.distance for g in mine}
        with_distance = len(distances) > 1 and "none" not in distances  # else one bar per model
        for i, (model, gs) in enumerate(sorted(by_model.items())):
            means, stds = [g.mean for g in gs], [g.std for g in gs]
            if with_distance:
                x = [float(g.distance) for g in gs]
                ax.plot(x, means, marker="o", label=model)
                low, high = (0.0, 1.0) if gs[0].metric == "acc" else (float("-inf"), float("inf"))
                ax.fill_between(x, [max(low, m - s) for m, s in zip(means, stds)],
                                [min(high, m + s) for m, s in zip(means, stds)], alpha=0.2)
            else:
                ax.bar(i, means[0], yerr=stds[0], label=model)
        ax.axhline(mine[0].chance, color="grey", linestyle="--", label="chance")
        if with_distance:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("task.distance")
        else:
            ax.set_xticks(range(len(by_model)), sorted(by_model), fontsize=8)
            if distances != {"none"}:
                ax.set_xlabel(f"task.distance {distances.pop()}")
        ax.set_ylabel(f"test {mine[0].metric}")
        ax.set_title(task)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metric_vs_distance.png", dpi=110)
    plt.close(fig)


def plot_learning_curves(client, groups: list[Group], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    panels = sorted({(g.task, g.model) for g in groups})
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (task, model) in zip(axes.flat, panels):
        for g in (g for g in groups if (g.task, g.model) == (task, model)):
            curves = [[m.value for m in sorted(client.get_metric_history(r, f"val/{g.metric}"), key=lambda m: m.step)]
                      for r in g.run_ids]
            epochs = min(len(c) for c in curves)
            if epochs:
                ax.plot(range(1, epochs + 1), [statistics.fmean(c[e] for c in curves) for e in range(epochs)],
                        label=f"distance {g.distance}" if g.distance != "none" else None)
        ax.set_title(f"{task}: {model}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"val {groups[0].metric}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)


def report(uri: str, experiment: str | None, parent: str | None, out: Path) -> list[Group]:
    from rnnexp.tracking import open_client

    client = open_client(uri)
    if parent is not None:
        try:
            experiment_id = client.get_run(parent).info.experiment_id
        except Exception:
            raise SystemExit(f"{PROG}: error: --parent={parent!r}: no such run in {uri}") from None
        where, parents = f"tags.mlflow.parentRunId = '{parent}'", [parent]
    else:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(sorted(e.name for e in client.search_experiments()))
            raise SystemExit(f"{PROG}: error: --experiment={experiment!r} is not in {uri}; experiments: {names or 'none'}")
        experiment_id, where = found.experiment_id, ""
        parents = [r.info.run_id for r in client.search_runs([experiment_id], "tags.sweep = 'true'")]
    finished = "attributes.status = 'FINISHED'"
    runs = client.search_runs([experiment_id], f"{where} and {finished}" if where else finished, max_results=50000)
    groups = collect(runs)
    if not groups:
        raise SystemExit(f"{PROG}: error: no finished training runs in {'--parent=' + parent if parent else '--experiment=' + experiment}")
    out.mkdir(parents=True, exist_ok=True)
    write_tables(groups, out)
    plot_metric_vs_distance(groups, out)
    plot_learning_curves(client, groups, out)
    for run_id in parents:
        client.log_artifacts(run_id, str(out), "report")
    return groups


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description="Tables and plots from the runs of an experiment or a sweep.",
                                     epilog="Example: rnnexp-report --experiment context_length --out experiments/context_length/results")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="an MLflow experiment's name: all its finished runs")
    which.add_argument("--parent", help="a sweep's parent run id: its finished children")
    parser.add_argument("--uri", default="sqlite:///mlflow.db", help="the tracking store (default: sqlite:///mlflow.db)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for the files (default: ./report)")
    args = parser.parse_args(argv)
    groups = report(args.uri, args.experiment, args.parent, args.out)
    print((args.out / "results.md").read_text(), end="")
    print(f"{len(groups)} rows from {sum(len(g.scores) for g in groups)} runs -> {args.out}/: "
          "results.md, results.csv, metric_vs_distance.png, learning_curves.png")


if __name__ == "__main__":
    main(sys.argv[1:])
