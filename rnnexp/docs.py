"""Results tables in READMEs, generated from the committed results files (`make docs`).

A README holds a generated block between two markers; the first names the results folder
(relative to the README) and the view:

    <!-- rnnexp:results results view=results -->
    ... written by `make docs` ...
    <!-- rnnexp:end -->

Views: `results` (a row per variant: mean ± std, 95% CI, chance, the test against it, seeds),
`comparisons` (a row per comparison: a - b with its 95% CI, Holm's p, the verdict), and
`by-distance TASK` (for one task, a row per model and a column per `task.distance`: the mean,
marked where no test shows it above chance).

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

PROG = "python -m rnnexp.docs"
BLOCK = re.compile(r"(<!-- rnnexp:results (?P<folder>\S+) view=(?P<view>[\w-]+)(?: (?P<arg>[^>]*?))? -->\n)"
                   r"(?P<body>.*?)(?P<end><!-- rnnexp:end -->)", re.S)
ROOT = Path(__file__).resolve().parent.parent
NOT_ABOVE = "°"  # marks a mean that no test shows above chance


class DocsError(Exception):
    pass


def _number(value: float, digits: int = 3) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}"


def _keys(table: pd.DataFrame) -> list[str]:
    """The varying config keys: the report puts them between `label` and `metric`."""
    columns = list(table.columns)
    return columns[columns.index("label") + 1 : columns.index("metric")]


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def results_view(folder: Path) -> str:
    table = pd.read_csv(folder / "results.csv", dtype={"pattern": str})
    keys = _keys(table)
    tasks = table["task"].nunique() > 1
    teacher = table["teacher_forced_mean"].notna().any()
    head = [*(["task"] if tasks else []), "model", "pattern", *keys, "test metric (mean ± std)", "95% CI",
            *(["teacher-forced"] if teacher else []), "chance", "vs chance", "seeds"]
    rows = []
    for _, r in table.iterrows():
        several = r["n_seeds"] > 1
        rows.append([*([r["task"]] if tasks else []), f"`{r['label']}`", str(r["pattern"]),
                     *["" if pd.isna(r[k]) else str(r[k]).removesuffix(".0") for k in keys],
                     f"{r['metric']} {_number(r['mean'])}" + (f" ± {_number(r['std'])}" if several else ""),
                     f"[{_number(r['ci95_low'])}, {_number(r['ci95_high'])}]" if several else "n/a (1 seed)",
                     *([_number(r["teacher_forced_mean"])] if teacher else []), _number(r["chance"]),
                     r["vs_chance"], str(r["n_seeds"])])
    return _table(head, rows)


def comparisons_view(folder: Path) -> str:
    found = pd.read_csv(folder / "comparisons.csv")
    at = [c for c in found.columns[1 : list(found.columns).index("a")] if found[c].nunique() > 1]
    head = ["comparison", *at, "a − b [95% CI]", "verdict (Welch's t-test, Holm-adjusted)"]
    rows = []
    for _, r in found.iterrows():
        interval = "" if pd.isna(r["ci95_low"]) else f" [{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]"
        rows.append([r["comparison"], *[str(r[k]).removesuffix(".0") for k in at],
                     f"{r['difference']:+.3f}{interval}", r["verdict"]])
    return _table(head, rows)


def by_distance_view(folder: Path, task: str) -> str:
    table = pd.read_csv(folder / "results.csv", dtype={"pattern": str})
    mine = table[table["task"] == task]
    if mine.empty or "task.distance" not in mine:
        raise DocsError(f"view=by-distance {task}: no variants of task {task!r} with a task.distance in {folder}")
    distances = sorted(mine["task.distance"].unique())
    head = ["model", *[f"d={int(d)}" for d in distances]]
    rows = []
    for label, variants in mine.groupby("label", sort=True):
        cells = []
        for d in distances:
            found = variants[variants["task.distance"] == d]
            if found.empty:
                cells.append("")
                continue
            r = found.iloc[0]
            cells.append(f"{r['mean']:.2f}" + ("" if str(r["vs_chance"]).startswith(("above", "better")) else NOT_ABOVE))
        rows.append([f"`{label}`", *cells])
    return _table(head, rows)


def render(readme: Path, folder: str, view: str, arg: str | None) -> str:
    where = (readme.parent / folder).resolve()
    try:
        if view == "results":
            return results_view(where)
        if view == "comparisons":
            return comparisons_view(where)
        if view == "by-distance" and arg:
            return by_distance_view(where, arg)
    except FileNotFoundError as err:
        raise DocsError(f"{readme}: {folder}: {err.filename} is missing (make report EXP=...)") from None
    raise DocsError(f"{readme}: view={view} {arg or ''}: unknown; views: results, comparisons, by-distance TASK")


def generate(readme: Path) -> tuple[str, list[str]]:
    """The README with every block rewritten; and the blocks that differed."""
    text = readme.read_text()
    differed: list[str] = []

    def replace(match: re.Match) -> str:
        body = render(readme, match["folder"], match["view"], match["arg"])
        if body != match["body"]:
            differed.append(f"{match['folder']} view={match['view']}{' ' + match['arg'] if match['arg'] else ''}")
        return match.group(1) + body + match["end"]

    return BLOCK.sub(replace, text), differed


def readmes() -> list[Path]:
    return sorted(p for p in [ROOT / "README.md", *ROOT.glob("experiments/*/README.md")] if p.exists())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description="Rewrite (or --check) the generated results blocks "
                                     "of the READMEs from their results files.")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    parser.add_argument("readme", nargs="*", type=Path, help="README files (default: README.md, experiments/*/README.md)")
    args = parser.parse_args(argv)
    stale = []
    try:
        for readme in args.readme or readmes():
            text, differed = generate(readme)
            stale += [f"{readme}: {block}" for block in differed]
            if differed and not args.check:
                readme.write_text(text)
    except (DocsError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.check and stale:
        print("generated blocks that differ from their results files (edited by hand, or the files changed; "
              "`make docs` rewrites them):\n  " + "\n  ".join(stale), file=sys.stderr)
        sys.exit(1)
    print(f"{len(stale)} block(s) {'differ' if args.check else 'rewritten'}")


if __name__ == "__main__":
    main(sys.argv[1:])
