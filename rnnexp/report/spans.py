"""The report's memory spans: for runs at several distances (a span sweep's, or any sweep over
the distance), each variant's span (rnnexp.span) from its runs at every distance, and the
pairwise comparisons of spans, each a bootstrap of the ratio of two spans, Holm-adjusted."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from rnnexp.report.criteria import MIN_SEEDS
from rnnexp.report.runs import ReportError
from rnnexp.report.statistics import ALPHA, CONFIDENCE, holm
from rnnexp.span import Span, fit


def spans(runs: pd.DataFrame, table: pd.DataFrame, keys: list[str], key: str) -> tuple[pd.DataFrame, list[Span]]:
    """One row per variant less `key` (task, model and every other varying key): its span, its
    interval, the distances and runs it rests on, and the flags of its runs at each distance."""
    column = f"params.{key}"
    if column not in runs:
        raise ReportError(f"--span={key}: not a key of these runs' configs")
    along = pd.to_numeric(runs[column], errors="coerce")
    if along.notna().all() and along.nunique() < 2:  # one value for every run: nothing to fit a fall along
        raise ReportError(
            f"--span={key}: every run here has {key}={runs[column].iloc[0]}; a span is fitted along a key "
            "whose value varies between runs"
        )
    others = [k for k in keys if k != key]
    rows, found = [], []
    by = ["task", "label", *[f"params.{k}" for k in others]]
    for values, group in runs.groupby(by, dropna=False, sort=False):
        finite = np.isfinite(pd.to_numeric(group["score"], errors="coerce").astype(float)) & np.isfinite(
            pd.to_numeric(group["chance"], errors="coerce").astype(float)
        )
        group = group[finite]  # a diverged run has no score to fit (its flags say it diverged)
        if group.empty:
            continue
        given = pd.to_numeric(group[column], errors="coerce")
        if (bad := given.isna() | (given < 1)).any():
            raise ReportError(
                f"--span={key}: a run of {values[1]} has {key}={group[column][bad].iloc[0]!r}, not a number >= 1"
            )
        distance = given.to_numpy(float)
        span = fit(
            distance,
            group["seed"].to_numpy(),
            group["score"].to_numpy(float),
            group["chance"].to_numpy(float),
            higher=group["better"].iloc[0] != "lower",
        )
        found.append(span)
        first = group.iloc[0]
        row = {"task": values[0], "label": values[1], **dict(zip(others, values[2:], strict=True))}
        row.update(
            metric=first["metric"],
            n_params=int(group["n_params"].median()) if group["n_params"].notna().any() else None,
            n_seeds=span.seeds,
            n_runs=span.runs,
            distances=_runs_at(distance),
            span=span.estimate,
            span_low=span.low,
            span_high=span.high,
            bound=span.bound,
            shown=span.text(),
            flags=_flags(table, group, distance, key, span),
        )
        rows.append(row)
    order = sorted(
        range(len(rows)), key=lambda i: (rows[i]["task"], rows[i]["label"], *[str(rows[i][k]) for k in others])
    )
    return pd.DataFrame([rows[i] for i in order]), [found[i] for i in order]


def _runs_at(distance: np.ndarray) -> str:
    """The distances run, each with its count of runs where it has more than one: `1 ×2, 4, 16 ×2`."""
    values, counts = np.unique(distance, return_counts=True)
    return ", ".join(f"{d:g}" + (f" ×{n}" if n > 1 else "") for d, n in zip(values, counts, strict=True))


def span_key_of(client, parents: list[str], runs: pd.DataFrame) -> str | None:
    """The key of the span sweeps (hydra/sweeper=span) these runs come from, if any: the tag
    `span_key` of their parent runs (the sweep's own, or those of an experiment's runs)."""
    from rnnexp.store import RunRecord

    ids = parents or sorted(set(runs.get("parent_run", pd.Series(dtype=str)).dropna()))
    keys = {RunRecord.of(client.get_run(r)).span_key for r in ids}
    keys.discard(None)
    if len(keys) > 1:
        raise ReportError(f"runs of span sweeps along different keys ({', '.join(sorted(keys))}): report one at a time")
    return next(iter(keys), None)


def _split(group: pd.DataFrame, distance: np.ndarray) -> list[str]:
    """The distances at which seeds split: some runs there shown above chance and some not, each
    run by an exact one-sided binomial test of its own scored test steps against its chance
    level, Holm over the variant's runs; e.g. `23: 1 of 2`. A span's interval rests on the
    mean score at a few distances, and where some seeds fail there it holds the span less often
    than 95% (rnnexp.span); a failure no run showed cannot be flagged. Accuracy only (a loss
    has no count of hits to test); empty where the runs do not say how many steps they scored."""
    scored = pd.to_numeric(group["n_test_scored"], errors="coerce")
    if group["metric"].iloc[0] != "acc" or scored.isna().any() or len(group) < 2:
        return []
    hits = np.round(group["score"].to_numpy(float) * scored.to_numpy(float)).astype(int)
    pvalues = [
        stats.binomtest(int(k), int(n), float(c), alternative="greater").pvalue
        for k, n, c in zip(hits, scored.astype(int), group["chance"].to_numpy(float), strict=True)
    ]
    above = holm(pvalues) < ALPHA
    out = []
    for d in np.unique(distance):
        here = above[distance == d]
        if 0 < here.sum() < len(here):
            out.append(f"{d:g}: {int(here.sum())} of {len(here)}")
    return out


def _flags(table: pd.DataFrame, group: pd.DataFrame, distance: np.ndarray, key: str, span: Span) -> str:
    """The flags of the span's variants (one per distance; `table`'s rows, `group` their runs at
    `distance`), each named once with the distances it holds at (a flag's counts are per
    distance, in results.md); fewer seeds than a claim needs, once; the distances where seeds
    split (`_split`), first: the interval may miss the span there."""
    distance_of = pd.Series(distance, index=group["variant"].to_numpy()).groupby(level=0).first()
    variants = table[table["variant"].isin(distance_of.index)]
    where: dict[str, list[str]] = {}
    for _, row in variants.assign(_at=variants["variant"].map(distance_of)).sort_values("_at").iterrows():
        for flag in filter(None, str(row["flags"]).split("; ")):
            if flag.startswith("fewer than"):
                continue
            where.setdefault(flag.split(" (")[0].split(":")[0], []).append(f"{row['_at']:g}")
    name = key.rsplit(".", 1)[-1]
    out = [
        f"{flag} (at every {name})" if len(at) == len(variants) else f"{flag} (at {name} {', '.join(at)})"
        for flag, at in where.items()
    ]
    if split := _split(group, distance):
        out.insert(0, f"seeds split (runs above chance at {name} {', '.join(split)})")
    if span.seeds < MIN_SEEDS:
        out.insert(0, f"fewer than {MIN_SEEDS} seeds ({span.seeds})")
    return "; ".join(out)


def compare_spans(table: pd.DataFrame, found: list[Span]) -> pd.DataFrame:
    """Every pair of variants of one task: the ratio of their spans with its 95% interval and a
    two-sided p-value, both from the two sides' bootstraps over their seeds (Holm over the pairs),
    paired by resample number (each side's drawn with the same random seed); where a side has only
    a bound, what the bounds and intervals alone show.

    One span longer than another needs both its Holm p under ALPHA and the two intervals apart:
    an interval is widened to its crossing, the two tested distances the score falls halfway
    between, because the fit places a step anywhere between them equally well; the bootstrap's
    refits, which keep the fit's placement, cannot tell spans apart more finely than that. The
    ratio's interval is widened likewise, to the ratios the two intervals allow. Intervals that
    meet at a distance are not apart. With one or two runs a distance the refits hardly vary and
    the p sits at its floor (1 / resamples): the verdict then rests on the intervals alone. Each
    row carries its two sides' flags (seeds split, budget ran out, ...), as the report's
    comparisons do."""
    rows = []
    for (i, a), (j, b) in itertools.combinations(list(table.iterrows()), 2):
        if a["task"] != b["task"]:
            continue
        sa, sb = found[i], found[j]
        row = {
            "task": a["task"],
            "a": _side(a, table),
            "b": _side(b, table),
            "a_span": a["shown"],
            "b_span": b["shown"],
            "flags": "; ".join(f"{side}: {row['flags']}" for side, row in (("a", a), ("b", b)) if row.get("flags")),
        }
        if sa.samples and sb.samples:
            n = min(len(sa.samples), len(sb.samples))
            diff = np.asarray(sa.samples[:n]) - np.asarray(sb.samples[:n])
            tail = (1 - CONFIDENCE) / 2 * 100
            low, high = np.exp(np.percentile(diff, [tail, 100 - tail]))
            p = min(1.0, max(2 * min((diff <= 0).mean(), (diff >= 0).mean()), 1 / n))  # 1/n: the least it can show
            (a_bottom, a_top), (b_bottom, b_top) = _reach(sa), _reach(sb)
            apart = "a" if a_bottom > b_top else "b" if b_bottom > a_top else ""  # touching: not apart
            low, high = min(low, a_bottom / b_top), max(high, a_top / b_bottom if b_bottom > 0 else math.inf)
            row.update(ratio=sa.estimate / sb.estimate, ratio_low=low, ratio_high=high, p=p, apart=apart)
        else:
            row.update(ratio=math.nan, ratio_low=math.nan, ratio_high=math.nan, p=math.nan, shown=_by_bounds(sa, sb))
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = holm(out["p"])
    out["verdict"] = out.apply(_verdict, axis=1)
    return out


def _side(row: pd.Series, table: pd.DataFrame) -> str:
    """The variant as a reader tells it apart: its model and the keys that differ in the table."""
    extra = [c for c in table.columns[2 : list(table.columns).index("metric")] if table[c].nunique(dropna=False) > 1]
    return " ".join([row["label"], *[f"{c}={row[c]}" for c in extra]])


def _reach(span: Span) -> tuple[float, float]:
    """The distances a span is known to lie between: its interval, or its one-sided bound."""
    if span.bound == "above":
        return max(span.tested), math.inf
    if span.bound == "below":
        return 0.0, min(span.tested)
    return span.low or 0.0, math.inf if span.high is None else span.high


def _by_bounds(a: Span, b: Span) -> str:
    """What two spans' bounds and intervals show without a bootstrap of both."""
    (a_bottom, a_top), (b_bottom, b_top) = _reach(a), _reach(b)
    if a_bottom >= b_top:
        return "a longer (its span lies beyond b's interval)"
    if b_bottom >= a_top:
        return "b longer (its span lies beyond a's interval)"
    return "no difference shown (the bounds overlap)"


def _verdict(row: pd.Series) -> str:
    if pd.isna(row["p"]):
        return row["shown"]
    ratio = f"{row['ratio']:.3g}x [{row['ratio_low']:.3g}, {row['ratio_high']:.3g}], Holm p {row['p_holm']:.2g}"
    longer = "a" if row["ratio"] > 1 else "b"
    if row["p_holm"] < ALPHA and row["apart"] == longer:
        return f"{longer} longer ({ratio})"
    if row["p_holm"] < ALPHA:
        return f"no difference shown ({ratio}; the intervals overlap)"
    return f"no difference shown ({ratio})"
