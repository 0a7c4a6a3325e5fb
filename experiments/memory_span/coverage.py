"""How often the span sweep's 95% interval holds the true span: the design and the fit of
rnnexp/span.py run on simulated runs whose curve is known, as the span sweeper places them (5
seeds in rotation, one run a distance, memory_span's settings).

    .venv/bin/python experiments/memory_span/coverage.py > experiments/memory_span/coverage.txt
    .venv/bin/python experiments/memory_span/coverage.py 0 2 4   # some of the cases (by number)
    .venv/bin/python experiments/memory_span/coverage.py --lapse 0 1 2 3 4 5 6 \
        > experiments/memory_span/coverage_lapse.txt

Each curve is a mean test accuracy against distance, each run's score that mean plus normal noise
of a stated spread between seeds (its sd); the true span is where the mean falls halfway from its
value at distance 1 to chance (0.125). A one-sided bound counts as holding it where the true span
lies on its side. Beside each case, the same fit on the grid the span sweep is measured against
(every seed at each of 5 distances: context_length's 1, 8, 16, 32, 64, or 1, 4, 16, 64, 256 over
the bag's range; 25 runs), on the same curve.

`--lapse`: the same, with another interval in place of span.fit's, to see what it buys: a
parametric bootstrap that draws every run again from the fitted curve with a share of failing
seeds, as a psychometric function's lapse rate (Wichmann & Hill 2001). The share is drawn anew
for each resample from its Jeffreys posterior, Beta(k + 1/2, n - k + 1/2), where n runs stand
where the fitted curve is at or above halfway and k of them scored under half of it; a failed run
scores chance, the others the curve scaled up to keep its mean, curve / (1 - q), where q is the
share, or less where that would pass the best gain possible: q = min(share, 1 - curve /
possible), so that every resample's mean is the fitted curve. Each run draws the normal spread of
the runs not counted as failed about the curve (3 fitted parameters off its degrees of freedom;
0.01 where 3 or fewer runs are not counted as failed; at least 0.001). The interval is the
refits' 2.5th to 97.5th percentile of the span, not widened to the crossing: a failure it has not
seen is in it by the prior, not by the runs. The file coverage_lapse.txt was made as two
processes (`--lapse 5 4 0`, `--lapse 6 1 2 3`), merged in case order; each case starts its own
random numbers, so one command gives the same lines.
"""

from __future__ import annotations

import collections
import math
import sys

import numpy as np

from rnnexp.span import BOOTSTRAP, CONFIDENCE, Design, Span, _fit, fit, logistic

CHANCE = 0.125
SEEDS = (0, 1, 2, 3, 4)
REPEATS = 40
# the bag's mean scores at 58fe130, interpolated in log distance
BAG = {1: 0.3005, 4: 0.2719, 16: 0.2180, 25: 0.2143, 26: 0.2126, 28: 0.2103, 29: 0.2076, 34: 0.2009}
BAG |= {40: 0.1963, 64: 0.1849, 256: 0.1584}


def bag(d: float) -> float:
    xs = np.log(sorted(BAG))
    return float(np.interp(math.log(d), xs, [BAG[k] for k in sorted(BAG)]))


def falling(span: float, slope: float):
    return lambda d: CHANCE + (1 - CHANCE) / (1 + (d / span) ** slope)


def true_span(curve, low: float, high: float) -> float:
    half = (curve(1) + CHANCE) / 2
    grid = np.geomspace(low, high, 20001)
    return float(grid[np.argmax([curve(d) < half for d in grid])])


def steady(curve):
    """`curve` where every seed learns alike: (the mean, the draw of one run's score before its noise)."""
    return curve, lambda d, rng: curve(d)


def failing(curve, share: float, beyond: int):
    """`curve` where a `share` of seeds fails to learn (scores chance) from distance `beyond` on:
    (the mean, the draw of one run's score before its noise)."""
    mean = lambda d: curve(d) if d < beyond else (1 - share) * curve(d) + share * CHANCE  # noqa: E731
    draw = lambda d, rng: curve(d) if d < beyond or rng.random() >= share else CHANCE  # noqa: E731
    return mean, draw


def lapse_fit(distance, seed, score, chance, higher: bool, rng_seed: int = 0) -> Span:
    """span.fit with the lapse-share bootstrap of `--lapse` (the module's docstring) for its interval."""
    span = fit(distance, seed, score, chance, higher, rng_seed, resamples=1)  # its fit and bounds, not its interval
    if span.bound or not span.curve:  # a bound, or no fit: span.fit's answer
        return span
    distance, gain = np.asarray(distance, float), (np.asarray(score) - np.asarray(chance)) * (1 if higher else -1)
    log_d, possible = np.log(distance), float(np.mean(1.0 - np.asarray(chance) if higher else chance))
    lo, hi = float(log_d.min()), float(log_d.max())
    curve = logistic(log_d, span.amplitude, span.slope, math.log(span.estimate))
    where = curve >= span.amplitude / 2
    failed = where & (gain < curve / 2)
    k, n = int(failed.sum()), int(where.sum())
    kept = gain[~failed] - curve[~failed]
    spread = max(math.sqrt(float((kept**2).sum()) / (len(kept) - 3)) if len(kept) > 3 else 0.01, 1e-3)
    rng, spans = np.random.default_rng(rng_seed), []
    for _ in range(BOOTSTRAP):
        q = np.minimum(rng.beta(k + 0.5, n - k + 0.5), np.clip(1 - curve / possible, 0, 1))
        learned = curve / np.maximum(1 - q, 1e-9)
        drawn = np.where(rng.random(len(gain)) < q, 0.0, learned) + rng.normal(0, spread, len(gain))
        best = max(float(drawn[log_d == x].mean()) for x in np.unique(log_d))
        refit = _fit(log_d, drawn, lo, hi, max(min(possible, best), 1e-3))
        if refit is not None:
            spans.append(refit[2])
    if not spans:  # not one of the resamples could be fitted: span.fit's interval instead
        return fit(distance, seed, score, chance, higher, rng_seed)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.exp(np.percentile(spans, [tail, 100 - tail]))
    tested = span.tested
    return Span(
        span.estimate,
        None if low < tested[0] else float(low),
        None if high > tested[-1] else float(high),
        "",
        tested=tested,
        runs=span.runs,
        seeds=span.seeds,
        amplitude=span.amplitude,
        slope=span.slope,
        curve=span.curve,
        crossing=span.crossing,
        ceiling_at=span.ceiling_at,
    )


FIT = fit  # the interval the study measures: span.fit's, or lapse_fit's with --lapse


def sweep(draw, design: Design, sd: float, rng: np.random.Generator):
    """The design's rounds, as the span sweeper runs them, on simulated scores."""
    jobs, rows, placed = [], [], design.first()
    while placed:
        for distance in placed:
            used = {s for d, s in jobs if d == distance}
            turn = [SEEDS[(len(jobs) + i) % len(SEEDS)] for i in range(len(SEEDS))]
            seed = next((s for s in turn if s not in used), None)
            if seed is not None:
                jobs.append((distance, seed))
                score = draw(distance, rng)
                rows.append((distance, seed, float(np.clip(score + rng.normal(0, sd), 0, 1)), CHANCE))
        span = FIT(*[np.array(c) for c in zip(*rows, strict=True)], higher=True)
        counts = collections.Counter(d for d, _ in jobs)
        if design.done(span, len(jobs), counts):
            return span
        placed = design.next(span, len(jobs), counts)
    return span


def grid(draw, design: Design, sd: float, rng: np.random.Generator):
    """The fit on the grid: every seed at each of 5 distances, context_length's 1, 8, 16, 32, 64 over
    1 to 64, and 1, 4, 16, 64, 256 (evenly spaced in log distance) over 1 to 256."""
    distances = (1, 8, 16, 32, 64) if design.high == 64 else Design(1, design.high, 1, bracket=5).first()
    rows = [(d, s, float(np.clip(draw(d, rng) + rng.normal(0, sd), 0, 1)), CHANCE) for d in distances for s in SEEDS]
    return FIT(*[np.array(c) for c in zip(*rows, strict=True)], higher=True)


def holds(span, truth: float) -> bool:
    if span.bound == "above":
        return truth > max(span.tested)
    if span.bound == "below":
        return truth < min(span.tested)
    return (span.low is None or span.low <= truth) and (span.high is None or truth <= span.high)


def main() -> None:
    global FIT
    args = sys.argv[1:]
    if "--lapse" in args:
        args.remove("--lapse")
        FIT = lapse_fit
    recall = dict(seeds=1, bracket=5, batch=2, factor=2, max_runs=12, replicates=len(SEEDS))
    cases = [  # (name, (mean, draw), seed sd, design)
        ("a step after 7 (the window)", steady(lambda d: 1.0 if d <= 7 else CHANCE), 0.002, Design(1, 64, **recall)),
        ("a steep fall at 28 (slope 3)", steady(falling(28, 3)), 0.03, Design(1, 64, **recall)),
        ("a steep fall at 28, seeds apart", steady(falling(28, 3)), 0.10, Design(1, 64, **recall)),
        ("a gentle fall at 12 (slope 1.5)", steady(falling(12, 1.5)), 0.05, Design(1, 64, **recall)),
        ("the bag's sinking curve", steady(bag), 0.002, Design(1, 256, **recall)),
        (
            "a steep fall at 28, a quarter of seeds failing from 16",
            failing(falling(28, 3), 0.25, 16),
            0.03,
            Design(1, 64, **recall),
        ),
        (  # as the last, but the span just below a distance of the grid's (32), as 22.2 is below the sweep's 23
            "a steep fall at 40, a quarter of seeds failing from 24",
            failing(falling(40, 3), 0.25, 24),
            0.03,
            Design(1, 64, **recall),
        ),
        (  # what more runs at the crossing's ends buy where seeds fail: the grid's 5 there
            "a steep fall at 28, a quarter of seeds failing from 16; 5 runs at each end, 20 at most",
            failing(falling(28, 3), 0.25, 16),
            0.03,
            Design(1, 64, **(recall | dict(confirm=5, max_runs=20))),
        ),
    ]
    chosen = [int(a) for a in args] or range(len(cases))
    if FIT is lapse_fit:
        print("the interval: the lapse-share bootstrap (--lapse), not span.fit's")
    print(
        f"{REPEATS} simulated span sweeps a case, seeds 0-4 in rotation, 12 runs at most but where said; "
        f"beside them {REPEATS} grids"
    )
    print(
        "case | seed sd | true span | sweep: interval holds it | median width | median runs | "
        "grid (25 runs): interval holds it | median width"
    )
    for name, (mean, draw), sd, design in (cases[i] for i in chosen):
        truth = true_span(mean, design.low, design.high)
        rng = np.random.default_rng(0)
        spans = [sweep(draw, design, sd, rng) for _ in range(REPEATS)]
        grids = [grid(draw, design, sd, rng) for _ in range(REPEATS)]
        print(
            f"{name} | {sd:g} | {truth:.3g} | {sum(holds(s, truth) for s in spans)}/{REPEATS} | "
            f"{np.median([s.width for s in spans]):.2f} | {np.median([s.runs for s in spans]):g} | "
            f"{sum(holds(g, truth) for g in grids)}/{REPEATS} | {np.median([g.width for g in grids]):.2f}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
