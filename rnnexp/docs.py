"""Results tables in READMEs, generated from the committed results files (`make docs`).

A README holds a generated block between two markers; the first names the results folder
(relative to the README) and the view:

    <!-- rnnexp:results results view=results -->
    ... written by `make docs` ...
    <!-- rnnexp:end -->

Views: `results` (a row per variant: mean ± std, 95% CI, chance, the test against it, seeds),
`comparisons [NAME]` (a row per comparison, or per row of comparison NAME: a - b with its 95% CI
and the verdict with Holm's p), and
`by-distance TASK` (for one task, a row per model and a column per `task.distance`: the mean,
marked ≈ where it is shown at chance and ° where it is shown neither above nor at chance),
`by-length TASK` (the same per `task.length`) and `by-read TASK` (per `task.read`: digits read by
rows or pixels), `spans [TASK]` (a row per variant: its memory span with its 95% interval, from
`spans.csv`), `span-comparisons [TASK]` (a row per pair of spans, from `span_comparisons.csv`) and
`console FILE` (what a run printed at its end, from a file holding its console output, e.g.
`make train > make_train.txt`: its summary, from the line naming the run to how to open it, run
ids cut to their first characters).

    python -m rnnexp.docs [README ...]          rewrite the blocks (default: every README.md here)
    python -m rnnexp.docs --check [README ...]  exit 1 naming each block that differs from its files

A number edited by hand inside a block is caught by `--check` (the docs test runs it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from rnnexp.report.statistics import ALPHA
from rnnexp.report.tables import markdown_table, number

PROG = "python -m rnnexp.docs"
START = re.compile(r"<!-- rnnexp:results (?P<folder>\S+) view=(?P<view>[\w-]+)(?: (?P<arg>[^>]*?))? -->")
END = "<!-- rnnexp:end -->"
MARKER = "<!-- rnnexp:"
ROOT = Path(__file__).resolve().parent.parent
NOT_ABOVE = "°"  # marks a mean not shown above chance (see shown_above)
AT_CHANCE = "≈"  # marks a mean shown at chance, within the report's margin (TOST)


class DocsError(Exception):
    pass


def _keys(table: pd.DataFrame) -> list[str]:
    """The varying config keys: the report puts them between `label` and `metric`."""
    columns = list(table.columns)
    return columns[columns.index("label") + 1 : columns.index("metric")]


def results_view(folder: Path) -> str:
    from rnnexp.report.tables import binomial, interval, solved

    table = pd.read_csv(folder / "results.csv", dtype={"pattern": str})
    keys = _keys(table)
    tasks = table["task"].nunique() > 1
    teacher = table["teacher_forced_mean"].notna().any()
    head = [
        *(["task"] if tasks else []),
        "model",
        "pattern",
        *keys,
        "parameters",
        "solved",
        "test metric (mean ± std)",
        "95% CI",
        *(["teacher-forced"] if teacher else []),
        "chance",
        "vs chance",
        "binomial (pooled steps)",
        "seeds",
        "flags",
    ]
    rows = []
    for _, r in table.iterrows():
        rows.append(
            [
                *([r["task"]] if tasks else []),
                f"`{r['label']}`",
                str(r["pattern"]),
                *["" if pd.isna(r[k]) else str(r[k]).removesuffix(".0") for k in keys],
                "" if pd.isna(r["n_params"]) else f"{int(r['n_params']):,}",
                solved(r),
                f"{r['metric']} {number(r['mean'])}" + (f" ± {number(r['std'])}" if r["n_seeds"] > 1 else ""),
                interval(r),
                *([number(r["teacher_forced_mean"])] if teacher else []),
                number(r["chance"]),
                r["vs_chance"],
                binomial(r),
                str(r["n_seeds"]),
                "" if pd.isna(r["flags"]) else r["flags"],
            ]
        )
    return markdown_table(head, rows)


def comparisons_view(folder: Path, name: str | None = None) -> str:
    found = pd.read_csv(folder / "comparisons.csv")
    if name:
        if name not in set(found["comparison"]):
            raise DocsError(
                f"view=comparisons {name}: no such comparison in {folder / 'comparisons.csv'}; "
                f"comparisons: {', '.join(dict.fromkeys(found['comparison']))}"
            )
        found = found[found["comparison"] == name]
    at = [c for c in found.columns[1 : list(found.columns).index("a")] if found[c].nunique() > 1]
    differ = "models_differ_in" in found and found["models_differ_in"].notna().any()  # empty cells read as NaN
    head = [
        *([] if name else ["comparison"]),
        *at,
        "a",
        "b",
        *(["models differ in"] if differ else []),
        "a − b [95% CI]",
        "solved a vs b",
        "verdict (Holm-adjusted: Welch's t-test, or Barnard's on the solve counts where seeds are bimodal)",
        "flags",
    ]
    rows = []
    for _, r in found.iterrows():
        interval = "" if pd.isna(r["ci95_low"]) else f" [{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]"
        rows.append(
            [
                *([] if name else [r["comparison"]]),
                *[str(r[k]).removesuffix(".0") for k in at],
                f"`{r['a']}`",
                f"`{r['b']}`",
                *([str(r["models_differ_in"]) if not pd.isna(r["models_differ_in"]) else ""] if differ else []),
                f"{r['difference']:+.3f}{interval}",
                "" if pd.isna(r["solved_a"]) else f"{int(r['solved_a'])}/{r['n_a']} vs {int(r['solved_b'])}/{r['n_b']}",
                r["verdict"],
                "" if pd.isna(r["flags"]) else r["flags"],
            ]
        )
    return markdown_table(head, rows)


def shown_above(row: pd.Series) -> bool:
    """Above chance by the t-test over seeds; where the seeds give no test (every seed the same
    score, or one seed), by the binomial test on their pooled test steps."""
    verdict = str(row["vs_chance"])
    if verdict.startswith("n/a") and not pd.isna(row["p_binomial_holm"]):
        return row["p_binomial_holm"] < ALPHA
    return verdict.startswith(("above", "better"))


def _mark(row: pd.Series) -> str:
    """Nothing above chance, ≈ at chance (an equivalence shown), ° otherwise (nothing shown)."""
    if shown_above(row):
        return ""
    return AT_CHANCE if str(row["vs_chance"]).startswith("at chance") else NOT_ABOVE


AXES = {"by-distance": ("task.distance", "d"), "by-length": ("task.length", "T"), "by-read": ("task.read", "read")}


def _mean(value: float) -> str:
    """Two decimals, or two significant digits below 0.01 (a regression's MSE near 0 is not 0.00)."""
    return f"{value:.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.1e}"


def _column(short: str, value) -> str:
    return f"{short}={int(value)}" if isinstance(value, (int, float)) else f"{short}={value}"


def by_axis_view(folder: Path, task: str, view: str = "by-distance") -> str:
    key, short = AXES[view]
    table = pd.read_csv(folder / "results.csv", dtype={"pattern": str})
    mine = table[table["task"] == task]
    if mine.empty or key not in mine or mine[key].isna().all():
        raise DocsError(f"view={view} {task}: no variants of task {task!r} with a {key} in {folder}")
    # keys that tell a model's rows apart at one value of the axis; one that moves with the axis
    # (a size or rate chosen per reading) stays in results.md, so each model is one row
    others = [
        k
        for k in _keys(table)
        if k != key
        and mine[k].nunique(dropna=False) > 1
        and (
            mine.groupby(["label", key], dropna=False)[k].nunique(dropna=False).max() > 1
            or mine.groupby("label")[k].nunique(dropna=False).max() == 1
        )
    ]
    distances = sorted(mine[key].dropna().unique())
    head = ["model", *others, *[_column(short, d) for d in distances]]
    rows = []
    for (label, *values), variants in mine.groupby(["label", *others], sort=True, dropna=False):
        cells = []
        for d in distances:
            found = variants[variants[key] == d]
            r = found.iloc[0] if len(found) else None
            cells.append("" if r is None else _mean(r["mean"]) + _mark(r))
        rows.append([f"`{label}`", *[str(v).removesuffix(".0") for v in values], *cells])
    return markdown_table(head, rows)


def spans_view(folder: Path, task: str | None = None) -> str:
    """A row per variant of `spans.csv` (rnnexp-report --span, or a span sweep's report): its
    memory span with its 95% interval, the runs it rests on, and its flags."""
    table = pd.read_csv(folder / "spans.csv", dtype=str, keep_default_na=False)
    if task:
        table = table[table["task"] == task]
        if table.empty:
            raise DocsError(f"{folder / 'spans.csv'} has no task {task!r}")
    extra = list(table.columns[2 : list(table.columns).index("metric")])
    head = ["model", *extra, "parameters", "seeds", "runs", "distances run (×runs)", "span [95% interval]", "flags"]
    rows = [
        [
            f"`{r['label']}`",
            *[r[k] for k in extra],
            r["n_params"],
            r["n_seeds"],
            r["n_runs"],
            r["distances"],
            r["shown"],
            r["flags"],
        ]
        for _, r in table.iterrows()
    ]
    return markdown_table(head, rows)


def span_comparisons_view(folder: Path, task: str | None = None) -> str:
    """A row per pair of `span_comparisons.csv`: the two spans, the verdict and the sides' flags."""
    table = pd.read_csv(folder / "span_comparisons.csv", dtype=str, keep_default_na=False)
    if task:
        table = table[table["task"] == task]
    rows = [[r["a"], r["b"], r["a_span"], r["b_span"], r["verdict"], r.get("flags", "")] for _, r in table.iterrows()]
    return markdown_table(["a", "b", "a's span", "b's span", "verdict", "flags"], rows)


SUMMARY_START = re.compile(r"^\S.* on \S+.*, seed \d+:$")  # rnnexp.train's summary: "rnn_hidden (pattern 1) on ..."
RUN_ID = re.compile(r"(\brun |/runs/)([0-9a-f]{4})[0-9a-f]{28}\b")  # a run's id where the summary names one


def console_view(folder: Path, name: str) -> str:
    """The summary a run printed at its end, in a code block, from the console output in
    `folder / name`: the last one whole in it, from the line naming the model, task and seed to
    the one saying how to open the run; a run id cut to its first 4 characters (another run gets
    another)."""
    if name in ("", ".", "..") or Path(name).name != name:
        raise DocsError(f"view=console {name}: a file name in the results folder, not a path")
    path = folder / name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DocsError(f"{path} is missing (write it with `make train > {name}`, say)") from None
    ends = [i for i, line in enumerate(lines) if line.startswith("open it:")]
    whole = [
        (start, end)
        for start, line in enumerate(lines)
        if SUMMARY_START.match(line)
        for end in [next((e for e in ends if e > start), None)]
        if end is not None
    ]
    if not whole:
        raise DocsError(f"{path}: no run summary in it (the output of `make train`, say)")
    start, end = whole[-1]
    summary = RUN_ID.sub(r"\1\2…", "\n".join(lines[start : end + 1])).replace("?workflowType=machine_learning", "")
    return f"```\n{summary}\n```\n"


def render(readme: Path, folder: str, view: str, arg: str | None) -> str:
    where = (readme.parent / folder).resolve()
    if Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise DocsError(f"{readme}: {folder}: a results folder beside the README or below it, given relative to it")
    try:
        if view == "results" and not arg:
            return results_view(where)
        if view == "comparisons":
            return comparisons_view(where, arg)
        if view in AXES and arg:
            return by_axis_view(where, arg, view)
        if view == "spans":
            return spans_view(where, arg)
        if view == "span-comparisons":
            return span_comparisons_view(where, arg)
        if view == "console" and arg:
            return console_view(where, arg)
    except FileNotFoundError as err:
        raise DocsError(f"{readme}: {folder}: {err.filename} is missing (make report EXP=...)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError, ValueError, TypeError) as err:
        raise DocsError(f"{readme}: {folder}: not a results file of rnnexp-report ({err})") from None
    except DocsError as err:
        raise DocsError(f"{readme}: {err}") from None
    raise DocsError(
        f"{readme}: view={view} {arg or ''}: unknown; views: results, comparisons [NAME], "
        "by-distance TASK, by-length TASK, by-read TASK, spans [TASK], span-comparisons [TASK], console FILE"
    )


def generate(readme: Path) -> tuple[str, list[str], int]:
    """The README with every block rewritten; the blocks that differed; how many there are. Markers inside code
    fences are examples, not blocks; outside them, every start marker has its end marker."""
    lines = readme.read_text().splitlines(keepends=True)
    out: list[str] = []
    differed: list[str] = []
    fenced, block, count = False, None, 0
    for line_number, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or MARKER not in line:
            if block is None:
                out.append(line)
            else:
                block["body"].append(line)
            continue
        start = START.fullmatch(line.strip())
        if start and block is None:
            block = {"match": start, "line": line_number, "body": []}
            out.append(line)
        elif line.strip() == END and block is not None:
            match, body = block["match"], "".join(block["body"])
            new = render(readme, match["folder"], match["view"], match["arg"])
            if new != body:
                differed.append(
                    f"line {block['line']}: {match['folder']} view={match['view']}"
                    + (f" {match['arg']}" if match["arg"] else "")
                )
            out += [new, line]
            block, count = None, count + 1
        else:
            what = (
                "a start marker inside an open block"
                if start
                else ("an end marker without a start" if line.strip() == END else "a marker that does not parse")
            )
            raise DocsError(
                f"{readme}, line {line_number}: {what}: {line.strip()!r} (markers: "
                "'<!-- rnnexp:results FOLDER view=VIEW [ARG] -->' ... '<!-- rnnexp:end -->', each on its own line)"
            )
    if block is not None:
        raise DocsError(f"{readme}, line {block['line']}: a block without its end marker ({END})")
    return "".join(out), differed, count


def readmes() -> list[Path]:
    return sorted(p for p in [ROOT / "README.md", *ROOT.glob("experiments/*/README.md")] if p.exists())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Rewrite (or --check) the generated results blocks of the READMEs from their results files.",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    parser.add_argument(
        "readme", nargs="*", type=Path, help="README files (default: README.md, experiments/*/README.md)"
    )
    args = parser.parse_args(argv)
    stale = []
    try:
        for readme in args.readme or readmes():
            text, differed, _ = generate(readme)
            stale += [f"{readme}: {block}" for block in differed]
            if differed and not args.check:
                readme.write_text(text)
    except (DocsError, OSError) as err:
        parser.exit(2, f"{PROG}: error: {err}\n")
    if args.check and stale:
        print(
            "generated blocks that differ from their results files (edited by hand, or the files changed; "
            "`make docs` rewrites them):\n  " + "\n  ".join(stale),
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"{len(stale)} block(s) {'differ' if args.check else 'rewritten'}")


if __name__ == "__main__":
    main(sys.argv[1:])
