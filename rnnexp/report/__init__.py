"""`rnnexp-report`: the results of an experiment or a sweep, as tables, tests and plots.

Reads the FINISHED training runs of an MLflow experiment (or the children of one sweep's parent
run) and groups them by **variant**: runs whose logged config is identical but for the seed
(the `variant_hash` tag; see `rnnexp.tracking.variant_hash`). Runs of `trainer=smoke` (tag
`smoke=true`) are left out, and of two runs of one variant and seed (a re-run) only the latest
counts. It writes into `--out`:

- `runs.csv`: one row per run counted: its id, seed, config keys, final test metrics, chance
  level, parameters, epochs and wall time;
- `results.csv` and `results.md`: per variant, the number of seeds and how many solved the task
  (`--solved`; an exact interval of the rate), the mean, standard deviation and 95% confidence
  interval (Student t over seeds) of the test metric, the chance level, and a verdict against it:
  above (one-sided t-test over seeds), at chance (TOST within `--margin`), below, or inconclusive;
  for accuracy, also an exact binomial test on the scored test steps of all seeds pooled;
  p-values Holm-adjusted over the report's variants;
  the last epoch's training metric, and flags: *budget ran out* (a seed stopped at
  trainer.max_epochs, not at a plateau: tag `stopped_by`) and *did not learn in this budget* (the
  training metric itself not above chance) and *bimodal seeds* (some solved, the others near chance);
- `comparisons.md` and `comparisons.csv` (with `--comparisons FILE`): each comparison the file
  names, at every value of the other keys: the difference of the means with its 95% CI, Welch's
  t-test, and Barnard's exact test of the solve counts (the verdict's where a side is bimodal),
  each Holm-adjusted over all the comparisons;
- `metric_vs_distance.png` (tasks swept over `task.distance`) or `metric_by_model.png` (tasks
  without a distance axis): each variant's mean test metric as a point with the error bar of its
  95% CI (no line between distances: none was run between them) or a bar, and chance dashed;
- `learning_curves.png`: the validation metric per epoch (mean over seeds), one row of panels
  per task on one y-axis, chance dashed (dotted in each curve's colour where it moves with a
  key, as copy memory's does with T);
- `spans.md`, `spans.csv`, `span_comparisons.csv` and `span_curves.png` (with `--span KEY`, or
  for a span sweep's parent): each variant's memory span along KEY (rnnexp.span), the pairwise
  comparisons of spans (one longer only where the bootstrap's Holm p is under 0.05 and the two
  intervals do not overlap; each with its two sides' flags), and each variant's runs with its
  fitted curve; flagged *seeds split* where, at a distance, some runs are shown above chance and
  some not (an exact binomial test of each run's test steps), where the interval may miss;
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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rnnexp.report.criteria import Criteria, check_names
from rnnexp.report.plots import plot_budget_curve, plot_learning_curves, plot_results, plot_spans
from rnnexp.report.runs import ReportError, counted_runs, dirty_notes, runs_frame, runs_from_csv, varying_keys
from rnnexp.report.spans import compare_spans, span_key_of, spans
from rnnexp.report.statistics import compare, read_comparisons, summarise
from rnnexp.report.tables import comparisons_markdown, lr_note, results_markdown, runs_csv, spans_markdown

PROG = "rnnexp-report"


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
    "spans.csv",
    "span_comparisons.csv",
    "spans.md",
    "span_curves.png",
)


@dataclass
class Report:
    runs: pd.DataFrame
    table: pd.DataFrame
    comparisons: pd.DataFrame
    keys: list[str]
    notes: list[str]
    files: list[str]


def report(
    uri: str | None,
    experiment: str | None,
    parent: str | None,
    out: Path,
    comparisons: Path | None = None,
    evaluations: bool = False,
    budget_curves: list[tuple[str, str]] | tuple = (),
    criteria: Criteria | None = None,
    runs_file: Path | None = None,
    span: str | None = None,
) -> Report:
    from rnnexp import config, store

    if evaluations and budget_curves:
        raise ReportError(
            "--budget-curve with --evaluations: an evaluation has no learning curve (its trained run "
            "has); draw it from a report of the training runs"
        )
    if runs_file is not None and budget_curves:
        raise ReportError("--budget-curve with --runs: the learning curves are in the store, not in runs.csv")
    wanted = read_comparisons(comparisons) if comparisons is not None else []
    client, parents = None, []
    if runs_file is not None:
        runs = runs_from_csv(runs_file)
        notes = [f"re-analysed from {runs_file} (no store: its learning curves are not redrawn)", *dirty_notes(runs)]
    else:
        try:
            tracked = store.opened(uri)
        except config.ConfigError as err:
            raise ReportError(str(err)) from None
        client = tracked.client()
        frame, parents = runs_frame(client, tracked, experiment, parent)
        runs, notes = counted_runs(frame, evaluations)
    if runs.empty:
        which = f"--parent={parent}" if parent else f"--experiment={experiment}"
        raise ReportError(
            f"{which}: no finished {'evaluation' if evaluations else 'training'} runs to report"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    check_names(criteria or Criteria(), set(zip(runs["task"], runs["metric"], strict=True)))
    keys = varying_keys(runs)
    if evaluations:
        notes.append(
            "evaluation runs of rnnexp-eval: each trained run's best checkpoint scored on the task as the "
            "columns say (metric eval/<metric>); parameters and epochs are the trained model's"
        )
    if runs["lr_from"].notna().any():  # each variant's own lr: show it
        keys = keys if "optim.lr" in keys else [*keys, "optim.lr"]
        notes.append(lr_note(runs))
    from rnnexp.tracking import older_than_the_code

    stale, unknown, change = older_than_the_code(set(runs["git_commit"].dropna()))
    notes.append(
        f"runs checked against the last change to the model, task or training code: {change}"
        if change
        else "no git history here: the runs' commits are not checked against the code"
    )
    table = summarise(runs, keys, criteria, stale, unknown)
    if mixed := int((table["git_commits"] > 1).sum()):  # same config, other code: say so, it may matter
        notes.append(
            f"{mixed} variant(s) pool runs made at different git commits (column git_commits in "
            "results.csv; runs.csv has each run's)"
        )
    found = compare(runs, table, wanted, keys)
    if span is None and client is not None:  # a span sweep's parent says its key
        span = span_key_of(client, parents, runs)
    if span is not None:
        span_table, fits = spans(runs, table, keys, span)
        span_found = compare_spans(span_table, fits)
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
        if span is not None:
            span_table.to_csv(new / "spans.csv", index=False)
            (new / "spans.md").write_text(spans_markdown(span_table, span_found, span))
            plot_spans(runs, span_table, fits, span, new)
            files += ["spans.csv", "spans.md", "span_curves.png"]
            if not span_found.empty:
                span_found.to_csv(new / "span_comparisons.csv", index=False)
                files.append("span_comparisons.csv")
        axis = "task.length" if evaluations and "task.length" in keys else "task.distance"
        files += plot_results(table, keys, new, axis, "eval" if evaluations else "test")
        if not evaluations and client is not None:  # an evaluation has no curve: its model's is the trained run's
            plot_learning_curves(client, table, keys, new)
            files.append("learning_curves.png")
        if budget_curves:
            plot_budget_curve(client, runs, table, keys, budget_curves, new)
            files.append("budget_curve.png")
        for name in files:
            os.replace(new / name, out / name)
    kept = {"learning_curves.png", "budget_curve.png"} if runs_file is not None else set()  # drawn from the store
    for old in set(FILES) - set(files) - kept:  # from an earlier report: it no longer says what these runs say
        (out / old).unlink(missing_ok=True)
    for run_id in parents:  # the sweep's own report, in the UI beside its runs
        for name in files:
            client.log_artifact(run_id, str(out / name), "report")
    return Report(runs, table, found, keys, notes, files)


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
    which.add_argument(
        "--runs",
        type=Path,
        metavar="RUNS_CSV",
        help="an earlier report's runs.csv (e.g. a committed experiments/NAME/results/runs.csv): its "
        "runs re-analysed without their store",
    )
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
    parser.add_argument(
        "--margin",
        metavar="[TASK:]METRIC=VALUE",
        action="append",
        default=[],
        help="how near chance a mean must be shown to be (TOST) to read 'at chance': a value or a "
        "percentage of the chance level (default: acc=0.02, any loss 5%%); again for more",
    )
    parser.add_argument(
        "--solved",
        metavar="[TASK:]METRIC=VALUE",
        action="append",
        default=[],
        help="the score at which a seed has solved its task: an accuracy, or a loss's value or "
        "percentage of its chance level (default: acc=0.95, any loss 1%%); again for more",
    )
    parser.add_argument(
        "--gap",
        metavar="[TASK:]METRIC=VALUE",
        action="append",
        default=[],
        help="the final train-validation gap beyond which a variant is flagged as memorising (default: "
        "acc=0.1, any loss 10%% of chance); again for more",
    )
    parser.add_argument(
        "--span",
        metavar="KEY",
        help="also spans.md: each variant's memory span along KEY (e.g. task.distance), fitted to its runs at "
        "every value; a span sweep's parent (hydra/sweeper=span) says its key itself",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when any comparison (the claims of --comparisons) is flagged",
    )
    args = parser.parse_args(argv)
    if args.runs is not None and args.uri != parser.get_default("uri"):
        parser.exit(2, f"{PROG}: error: --uri with --runs: a runs.csv is re-analysed without a store; give one\n")
    if args.strict and args.comparisons is None:
        parser.exit(
            2, f"{PROG}: error: --strict needs --comparisons: the claims it checks are a README's comparisons\n"
        )
    from rnnexp.tracking import quiet_store_logs

    quiet_store_logs()
    try:
        ats = []
        for given in args.budget_curve:
            key, eq, value = given.partition("=")
            if not eq or not key or not value:
                raise ReportError(f"--budget-curve={given!r}: give KEY=VALUE, e.g. task.distance=32")
            ats.append((key, value))
        criteria = Criteria.given(args.margin, args.solved, args.gap)
        result = report(
            args.uri,
            args.experiment,
            args.parent,
            args.out,
            args.comparisons,
            args.evaluations,
            ats,
            criteria,
            args.runs,
            args.span,
        )
    except ReportError as err:
        parser.exit(2, f"{PROG}: error: {err}\n")
    print((args.out / "results.md").read_text(), end="")
    if not result.comparisons.empty:
        print()
        print((args.out / "comparisons.md").read_text(), end="")
    if "spans.md" in result.files:
        print()
        print((args.out / "spans.md").read_text(), end="")
    seeds = result.table["n_seeds"]
    print(
        f"{len(result.table)} variants ({int(seeds.min())}-{int(seeds.max())} seeds) from {len(result.runs)} runs -> "
        f"{args.out}/: {', '.join(result.files)}"
    )
    flagged = int((result.table["flags"] != "").sum())
    claims = 0 if result.comparisons.empty else int((result.comparisons["flags"] != "").sum())
    print(
        f"flagged: {flagged} of {len(result.table)} variants"
        + (f", {claims} of {len(result.comparisons)} comparisons" if not result.comparisons.empty else "")
        + (" (each row's flags say why)" if flagged or claims else "")
    )
    if args.strict and claims:
        names = sorted(set(result.comparisons[result.comparisons["flags"] != ""]["comparison"]))
        parser.exit(
            1,
            f"{PROG}: --strict: {claims} of {len(result.comparisons)} comparisons are flagged ({', '.join(names)}: "
            "their flags are in comparisons.md)\n",
        )
