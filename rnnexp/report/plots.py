"""The report's plots: the metric against the distance (or by model) with its 95% CI, the
learning curves, and the budget curve. Matplotlib's Agg backend: no display needed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from rnnexp.report.runs import ReportError, same_value, shown_key


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
                # points and their intervals, each series nudged sideways so that none hides
                # another; no line between them, which would claim scores at distances not run
                lines = list(mine.groupby(mine.apply(_line_label, axis=1, series=series), sort=True))
                for i, (label, line) in enumerate(lines):
                    line = line.assign(x=line[axis].astype(float)).sort_values("x")
                    error = np.array([line["mean"] - line["ci95_low"], line["ci95_high"] - line["mean"]])
                    nudge = 2 ** (0.06 * (i - (len(lines) - 1) / 2))
                    ax.errorbar(
                        line["x"] * nudge,
                        line["mean"],
                        yerr=np.nan_to_num(error),
                        fmt="o",
                        capsize=3,
                        ms=4,
                        label=label,
                    )
                ax.set_xscale("log", base=2)
                ticks = sorted(set(mine[axis].astype(float)))
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
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
            "mean over seeds; error bars: 95% CI (Student t over seeds)",
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
        colours: dict[str, str] = {}  # one colour per value of the series keys, across the panels (one legend)
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
                    name = ", ".join(f"{k}={variant[k]}" for k in series) or "mean over seeds"
                    (line,) = ax.plot(
                        range(epochs),  # the logged step: epochs count from 0, as in MLflow's charts and Lightning's
                        mean,
                        marker="o" if epochs < 4 else None,
                        color=colours.setdefault(name, f"C{len(colours) % 10}"),
                        label=name,
                    )
                    if own_chance:
                        ax.axhline(variant["chance"], color=line.get_color(), linestyle=":", linewidth=1)
            if own_chance:
                ax.plot([], [], color="grey", linestyle=":", label="chance (dotted, in each curve's colour)")
            else:
                ax.axhline(chance, color="grey", linestyle="--", label="chance")
            ax.set_title(f"{task}: {label}", fontsize=9)
            ax.set_xlabel("epoch (from 0)")
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
                c[len("params.") :] for c in runs.columns if c.startswith("params.") and shown_key(c[len("params.") :])
            )
            raise ReportError(f"--budget-curve {key}={value}: these runs have no key {key}; keys: {', '.join(known)}")
        at = runs[column].map(lambda logged, value=value: same_value(logged, value))  # 3e-3 is 0.003, 03 is 3
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


def plot_spans(runs: pd.DataFrame, table: pd.DataFrame, found: list, key: str, out: Path, columns: int = 3) -> None:
    """`span_curves.png`: a panel per variant of the span table: every run's score (dots), the
    mean at each distance, the fitted curve, chance dashed, and the span with its interval."""
    from rnnexp.span import logistic

    plt = _pyplot()
    rows = -(-len(table) // columns)
    fig, axes = plt.subplots(
        rows, min(columns, len(table)), figsize=(4 * min(columns, len(table)), 3 * rows), squeeze=False
    )
    column = f"params.{key}"
    extra = list(table.columns[2 : list(table.columns).index("metric")])
    for ax, (_, row), span in zip(axes.flat, table.iterrows(), found, strict=False):
        mine = (runs["task"] == row["task"]) & (runs["label"] == row["label"])
        for k in extra:
            mine &= runs[f"params.{k}"].astype(str) == str(row[k])
        group = runs[mine]
        distance = pd.to_numeric(group[column], errors="coerce")
        ax.scatter(distance, group["score"], s=8, alpha=0.5, color="tab:blue", label="a run")
        means = group.groupby(distance)["score"].mean()
        ax.plot(means.index, means.values, "o", color="tab:blue", markerfacecolor="white", label="mean")
        chance = group.groupby(distance)["chance"].mean()
        ax.plot(chance.index, chance.values, "--", color="grey", label="chance")
        sign = 1 if group["better"].iloc[0] != "lower" else -1
        if span.estimate is not None and not np.isnan(span.slope):
            grid = np.geomspace(distance.min(), distance.max(), 200)
            level = np.interp(grid, chance.index, chance.values)
            gain = logistic(np.log(grid), span.amplitude, span.slope, np.log(span.estimate))
            ax.plot(grid, level + sign * gain, color="tab:orange", label="fit")
            low = span.low if span.low is not None else distance.min()
            high = span.high if span.high is not None else distance.max()
            ax.axvspan(low, high, color="tab:orange", alpha=0.15, label="span, 95% interval")
            ax.axvline(span.estimate, color="tab:orange", lw=1)
        ax.set_xscale("log")
        tasks = table["task"].nunique() > 1
        name = " ".join([*([row["task"] + ":"] if tasks else []), row["label"], *[f"{k}={row[k]}" for k in extra]])
        label = "\n".join(textwrap.wrap(name, 48))  # a long label would run into its neighbours'
        ax.set_title(f"{label}\nspan {row['shown']}", fontsize=8)
        ax.set_xlabel(key)
        ax.set_ylabel(f"test/{row['metric']}")
    for ax in list(axes.flat)[len(table) :]:
        ax.axis("off")
    _legend(fig, axes)
    fig.tight_layout()
    fig.savefig(out / "span_curves.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
