"""Memory span: the distance at which a model's score has fallen halfway from its ceiling to chance.

A digit span in psychophysics is read off a fitted psychometric function, not a fixed grid; here
the same for a model. For one variant (runs that differ only in the seed and the distance), the
test score's gain over chance, g(d) = score - chance (chance - score for a loss), is fitted
against log distance by a logistic that falls from a ceiling A to chance:

    g(d) = A / (1 + exp(s (log d - log span)))        A >= 0, s > 0

by least squares (`scipy.optimize.curve_fit`). Each run counts against its own chance level, so a
task whose chance moves with the distance is read right. The ceiling A is fitted, bounded by
what was measured: it is at most the best mean gain at a tested distance. A score that still
climbs below the shortest distance run (a bag of embeddings dilutes the symbol even at distance
1) would otherwise put A above every score seen, and halfway with it; where the bound binds so,
the span is measured from the score at the shortest distance, and depends on where the range
starts. The span's 95% interval is a bootstrap over seeds, stratified by distance: at each tested
distance its runs' seeds are drawn again, with replacement, and the curve refitted. The distances
are the design's, not a sample of them: resampling whole seeds, when each seed ran other
distances, drops distances from a resample, and one that drops the ceiling's only run measures
halfway from another ceiling (a case bootstrap's known fault in a fixed design). A distance with
one run has no spread to resample, so the design runs the ones the interval rests on again (below).
The interval is widened to the tested distances between which the mean score crosses halfway,
in the data and in the resamples (the crossing's 95% range): where the score falls as a step
between two tested distances, the span lies anywhere between them, whatever the fit says, and
where a crossing's end rests on runs that disagree, a resample can move the crossing. With one
or two runs a distance the resamples hardly vary, so the interval is mostly the crossing's, and
its coverage is short of 95% where seeds disagree (experiments/memory_span/coverage.py). A
variant whose score never falls below halfway in the tested range gets a one-sided bound ("> 64"),
one never shown above chance at any distance "< 1", never an extrapolated number; an interval end
beyond the range is open likewise.

`Design` places a span sweep's runs (hydra_plugins/rnnexp_span): a bracket of distances evenly
spaced in log distance first, then, batch by batch, distances that divide the two tested
distances the mean score crosses halfway between; once no untested distance is left between them,
more seeds at those two; then distances that divide the rest of the span's interval, until the
interval is narrower than a factor, nothing is left to run in it, or the run budget is spent. A
narrow interval ends the design only once the distances it rests on, each end of its crossing and
the ceiling's distance, have two runs each: one run there cannot be told from a seed's luck, and
the bootstrap has no spread there to resample.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

BOOTSTRAP = 1000  # resamples of the seeds: the interval, and the comparisons' p (at least 1/1000)
CONFIDENCE = 0.95
ALPHA = 0.05  # "above chance" at some distance: one-sided t over seeds, Holm over the distances
SLOPE = (0.1, 50.0)  # the logistic's slope s in log distance: from a drift to a step
MARGIN = 3.0  # the fit's log span may lie this far (in log distance) outside the tested range


def logistic(log_d: np.ndarray, amplitude: float, slope: float, log_span: float) -> np.ndarray:
    return amplitude / (1.0 + np.exp(np.clip(slope * (log_d - log_span), -50, 50)))


def _jacobian(log_d: np.ndarray, amplitude: float, slope: float, log_span: float) -> np.ndarray:
    """d logistic / d (A, s, log span): curve_fit's Jacobian, exact rather than by differences."""
    u = np.exp(np.clip(slope * (log_d - log_span), -50, 50))
    shape = 1.0 / (1.0 + u)
    fall = amplitude * u * shape**2  # -d/dz of A / (1 + e^z)
    return np.stack([shape, -fall * (log_d - log_span), fall * slope], axis=1)


@dataclass(frozen=True)
class Span:
    """A variant's span, or its one-sided bound; `low`/`high` None: the interval is open there."""

    estimate: float | None  # None when only a bound is known
    low: float | None
    high: float | None
    bound: str  # "" (a number), "above" (> the range), "below" (< the range)
    tested: tuple[float, ...]  # the distances run
    runs: int
    seeds: int
    amplitude: float = float("nan")  # the ceiling's gain over chance
    slope: float = float("nan")
    curve: dict[float, float] = field(default_factory=dict, compare=False)  # the fit's gain at each tested distance
    samples: tuple[float, ...] = field(default=(), compare=False)  # the bootstrap's log spans, to compare spans by
    crossing: tuple[float | None, float | None] = (None, None)  # the tested distances the mean crosses halfway between
    ceiling_at: float | None = None  # the tested distance whose mean gain is the ceiling

    @property
    def width(self) -> float:
        """high / low, the interval's width as a factor; inf when open or unknown."""
        if self.bound or self.low is None or self.high is None or self.low <= 0:
            return math.inf
        return self.high / self.low

    def text(self) -> str:
        """e.g. `12.3 [9.8, 15.1]`, `> 64`, `< 1`, `40 [30, > 64]`."""
        top, bottom = _number(max(self.tested)), _number(min(self.tested))
        if self.bound == "above":
            return f"> {top}"
        if self.bound == "below":
            return f"< {bottom}"
        low = f"< {bottom}" if self.low is None else _number(self.low)
        high = f"> {top}" if self.high is None else _number(self.high)
        return f"{_number(self.estimate)} [{low}, {high}]"


def _number(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g}"


def _fit(
    log_d: np.ndarray, gain: np.ndarray, lo: float, hi: float, ceiling: float
) -> tuple[float, float, float] | None:
    """(A, s, log span) by least squares (`curve_fit`), or None where it does not converge. It starts
    from the best of a grid of (s, log span), A solved for each: a step, whose error surface is
    flat almost everywhere, then converges in a few evaluations."""
    slopes = np.geomspace(*SLOPE, 12)
    centres = np.linspace(lo - MARGIN, hi + MARGIN, 48)
    s, m = np.meshgrid(slopes, centres, indexing="ij")
    shapes = logistic(log_d[None, None, :], 1.0, s[..., None], m[..., None])  # (slopes, centres, runs)
    amplitude = np.clip((shapes @ gain) / np.maximum((shapes**2).sum(-1), 1e-12), 0, ceiling)
    error = ((amplitude[..., None] * shapes - gain) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmin(error), error.shape)
    bounds = ([0.0, SLOPE[0], lo - MARGIN], [ceiling, SLOPE[1], hi + MARGIN])
    start = [float(np.clip(v, a, b)) for v, a, b in zip((amplitude[i, j], s[i, j], m[i, j]), *bounds, strict=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        try:
            (a, slope, log_span), _ = optimize.curve_fit(
                logistic, log_d, gain, p0=start, bounds=bounds, jac=_jacobian, max_nfev=2000, xtol=1e-6, ftol=1e-6
            )
        except (RuntimeError, ValueError):
            return None
    return float(a), float(slope), float(log_span)


def _crossing(distance: np.ndarray, gain: np.ndarray, half: float) -> tuple[float | None, float | None]:
    """The tested distances between which the mean gain falls below `half`: from the last one at
    or above it before the first fall to the first one below it after the last rise (a noisy
    curve may cross more than once). (None, lowest) when every mean is below; (highest, None) when
    none is."""
    ds = np.unique(distance)
    means = np.array([gain[distance == d].mean() for d in ds])
    above, below = np.flatnonzero(means >= half), np.flatnonzero(means < half)
    if len(above) == 0:
        return None, float(ds[0])
    if len(below) == 0:
        return float(ds[-1]), None
    return float(ds[max(below[0] - 1, 0)]), float(ds[min(above[-1] + 1, len(ds) - 1)])


def above_chance_somewhere(log_d: np.ndarray, gain: np.ndarray, best: tuple[float, float, float] | None) -> bool:
    """Whether the gain over chance is shown above 0 at some tested distance, Holm over two kinds
    of test: a one-sided t over the runs at each distance that has several, and an F-test of the
    falling logistic (its amplitude >= 0, so it can only rise above chance) against a gain of 0
    at every distance, over all the runs: with one run a distance, it is the only test there
    is. A t-test with no spread goes by its sign."""
    from rnnexp.report.statistics import holm

    pvalues = []
    for x in np.unique(log_d):
        g = gain[log_d == x]
        if len(g) > 1:
            pvalues.append(
                (0.0 if g.mean() > 0 else 1.0)
                if np.ptp(g) == 0
                else stats.ttest_1samp(g, 0.0, alternative="greater").pvalue
            )
    n = len(gain)
    if n > 3 and best is not None:  # `best`: the logistic fitted to these runs
        flat, fitted = float((gain**2).sum()), float(((gain - logistic(log_d, *best)) ** 2).sum())
        if fitted <= 0:
            pvalues.append(0.0 if flat > 0 else 1.0)
        else:
            pvalues.append(float(stats.f.sf(max(flat - fitted, 0.0) / 3 / (fitted / (n - 3)), 3, n - 3)))
    elif not pvalues:  # too few runs for either test: the sign of the mean
        pvalues.append(0.0 if gain.mean() > 0 else 1.0)
    return bool((holm(pvalues) < ALPHA).any())


def fit(
    distance: np.ndarray,
    seed: np.ndarray,
    score: np.ndarray,
    chance: np.ndarray,
    higher: bool,
    rng_seed: int = 0,
    resamples: int = BOOTSTRAP,
) -> Span:
    """The span of one variant from its runs: arrays of each run's distance, seed, test score and
    chance level; `higher`: whether a higher score is better (an accuracy, at most 1) or lower (a
    loss, at least 0): the ceiling's gain over chance can be no more than that allows, nor more than
    the best mean gain at a distance run. `resamples`: the bootstrap's, for the interval."""
    distance, seed = np.asarray(distance, float), np.asarray(seed)
    chance, score = np.asarray(chance, float), np.asarray(score, float)
    if not len(distance) or len({len(distance), len(seed), len(score), len(chance)}) != 1:
        raise ValueError(
            f"fit: runs of equal number, at least one; got {len(distance)}, {len(seed)}, {len(score)}, {len(chance)}"
        )
    if not (np.isfinite(distance) & (distance > 0)).all():
        raise ValueError(f"fit: distances are finite and above 0; got {sorted(set(distance.tolist()))}")
    if not (np.isfinite(score) & np.isfinite(chance)).all():
        raise ValueError("fit: every run's score and chance level finite (a diverged run has no score: leave it out)")
    gain = (score - chance) * (1 if higher else -1)
    possible = float(np.mean(1.0 - chance if higher else chance))
    log_d = np.log(distance)

    def ceiling(rows: np.ndarray) -> float:
        best = max(float(gain[rows][log_d[rows] == x].mean()) for x in np.unique(log_d[rows]))
        return max(min(possible, best), 1e-3)

    lo, hi = float(log_d.min()), float(log_d.max())
    tested = tuple(float(d) for d in np.unique(distance))
    # the ceiling's distance: the best mean gain; of tied ones, the one with the most runs
    at = max(tested, key=lambda d: (float(gain[distance == d].mean()), int((distance == d).sum()), -d))
    base = dict(tested=tested, runs=len(distance), seeds=len(np.unique(seed)), ceiling_at=at)
    best = _fit(log_d, gain, lo, hi, ceiling(np.arange(len(gain))))
    if not above_chance_somewhere(log_d, gain, best):
        return Span(None, None, None, "below", **base)
    if best is None:  # no fit: the crossing alone says where the span is
        amplitude, slope = float(max(gain[log_d == x].mean() for x in np.unique(log_d))), float("nan")
        cross = _crossing(distance, gain, amplitude / 2)
        if cross[1] is None:
            return Span(None, None, None, "above", amplitude=amplitude, **base)
        if cross[0] is None:
            return Span(None, None, None, "below", amplitude=amplitude, **base)
        return Span(math.sqrt(cross[0] * cross[1]), cross[0], cross[1], "", amplitude=amplitude, crossing=cross, **base)
    amplitude, slope, log_span = best
    cross = _crossing(distance, gain, amplitude / 2)
    curve = {d: float(logistic(np.log([d]), *best)[0]) for d in tested}
    extra = dict(amplitude=amplitude, slope=slope, curve=curve, **base)
    if cross[1] is None or log_span > hi:  # the score never falls below halfway in the range
        return Span(None, None, None, "above", **extra)
    if cross[0] is None or log_span < lo:
        return Span(None, None, None, "below", **extra)
    # the bootstrap: at each tested distance, resample its runs' seeds, refit
    rng = np.random.default_rng(rng_seed)
    strata = [np.flatnonzero(distance == d) for d in tested]
    spans, lefts, rights = [], [], []
    for _ in range(resamples):
        rows = np.concatenate([rng.choice(runs, size=len(runs), replace=True) for runs in strata])
        bound = ceiling(rows)
        refit = _fit(log_d[rows], gain[rows], lo, hi, bound)
        if refit is not None:
            spans.append(refit[2])
        # where this resample's mean crosses halfway: a step's refit can sit anywhere in it
        left, right = _crossing(distance[rows], gain[rows], (bound if refit is None else refit[0]) / 2)
        lefts.append(tested[0] / 2 if left is None else left)  # open: below the range
        rights.append(tested[-1] * 2 if right is None else right)
    tail = (1 - CONFIDENCE) / 2 * 100
    q_low, q_high = np.percentile(spans, [tail, 100 - tail]) if spans else (log_span, log_span)
    c_low = float(np.percentile(lefts, tail, method="lower"))  # tested distances, not between them
    c_high = float(np.percentile(rights, 100 - tail, method="higher"))
    low, high = min(math.exp(q_low), cross[0], c_low), max(math.exp(q_high), cross[1], c_high)
    return Span(
        math.exp(log_span),
        None if low < tested[0] else low,
        None if high > tested[-1] else high,
        "",
        samples=tuple(spans),
        crossing=cross,
        **extra,
    )


@dataclass(frozen=True)
class Design:
    """Where a span sweep places its runs: `low`..`high` (distances, >= 1), `seeds` runs at each
    distance; `bracket` distances first, then `batch` a round; done when the interval's high/low
    is at most `factor` or `max_runs` (per variant) would be passed. A one-sided bound ends the
    design only once the tested distance it rests on (the lowest for `< X`, the highest for
    `> X`) has `replicates` runs (every seed): with one run there, a score above chance or below
    halfway cannot be told from a seed's luck, and the bound would stand on it. The same count
    holds where the mean crosses halfway between two adjacent tested distances: those two run
    again, up to `replicates` runs each, before distances further out (`next`). An interval
    within `factor` ends the design only once both ends of its crossing and the ceiling's
    distance have `confirm` runs (at most `replicates`): the runs there again first."""

    low: int
    high: int
    seeds: int
    bracket: int = 4
    batch: int = 2
    factor: float = 1.5
    max_runs: int = 60
    replicates: int = 0
    confirm: int = 2

    def first(self) -> list[int]:
        """The bracket: `bracket` integer distances evenly spaced in log distance, both ends in."""
        points = np.exp(np.linspace(math.log(self.low), math.log(self.high), self.bracket))
        return sorted({int(round(p)) for p in points})

    def _boundary(self, span: Span, runs: int, counts: Mapping[int, int]) -> int | None:
        """The distance a one-sided bound rests on, while it has fewer than `replicates` runs
        there (`counts`: runs a distance) and the budget has room for more."""
        if not span.bound or not span.tested or runs + self.seeds > self.max_runs:
            return None
        at = int(round(min(span.tested) if span.bound == "below" else max(span.tested)))
        return at if counts.get(at, 0) < self.replicates else None

    def _short_ends(self, span: Span, counts: Mapping[int, int] | None) -> list[int]:
        """The distances the interval rests on, the crossing's two ends and the ceiling's, with
        fewer than `confirm` runs (at most `replicates`); none where `counts` is not given."""
        left, right = span.crossing
        if counts is None or left is None or right is None:
            return []
        ends = {int(d) for d in (left, right, span.ceiling_at) if d is not None}
        return sorted(d for d in ends if counts.get(d, 0) < min(self.confirm, self.replicates))

    def _unconfirmed(self, span: Span, runs: int, counts: Mapping[int, int] | None) -> list[int]:
        """`_short_ends`, while the budget has room for more runs."""
        return [] if runs + self.seeds > self.max_runs else self._short_ends(span, counts)

    def done(self, span: Span, runs: int, counts: Mapping[int, int] | None = None) -> str:
        """Why this variant's design has ended ('' while it goes on); `counts`: its runs a distance."""
        if span.bound:
            if counts is not None and self._boundary(span, runs, counts) is not None:
                return ""
            return f"a one-sided bound: {span.text()}"
        if span.width <= self.factor:
            if not self._short_ends(span, counts):
                return f"the interval is within a factor {self.factor:g}"
            if runs + self.seeds > self.max_runs:  # narrow, but no room to run its crossing's ends again
                return (
                    f"the budget of {self.max_runs} runs is spent, the interval within a factor {self.factor:g} "
                    f"but its crossing's ends and ceiling not each run {min(self.confirm, self.replicates)} times"
                )
        if runs + self.seeds > self.max_runs:
            return f"the budget of {self.max_runs} runs is spent"
        if not self.next(span, runs, counts):
            return "nothing is left to run in the interval: every distance in it tested, its crossing's with every seed"
        return ""

    def next(self, span: Span, runs: int, counts: Mapping[int, int] | None = None) -> list[int]:
        """The next batch, within what the budget allows: up to `batch` untested integer distances
        dividing the crossing (the two tested distances the mean crosses halfway between) evenly
        in log distance; none left there, its two ends again (more of their seeds, up to
        `replicates` runs each); then untested distances dividing the span's interval (open ends:
        the range's). For a one-sided bound, the distance it rests on again; for an interval
        already within `factor`, those of its crossing's ends and the ceiling's distance that
        have fewer than `confirm` runs."""
        if span.bound:
            at = None if counts is None else self._boundary(span, runs, counts)
            return [] if at is None else [at]
        room = max(0, (self.max_runs - runs) // self.seeds)
        if span.width <= self.factor:  # narrow: its crossing's ends again, as `done` allows
            return self._unconfirmed(span, runs, counts)[: min(self.batch, room)]
        tested = {int(round(d)) for d in span.tested}
        left, right = span.crossing
        if left is not None and right is not None:
            between = [d for d in range(int(left) + 1, int(right)) if d not in tested and self.low <= d <= self.high]
            if between:
                return self._dividing(between, left, right, min(self.batch, room))
            short = [int(d) for d in (left, right) if counts is not None and counts.get(int(d), 0) < self.replicates]
            if short:
                return sorted(short)[: min(self.batch, room)]
        low = span.low if span.low is not None else self.low
        high = span.high if span.high is not None else self.high
        inside = [d for d in range(max(self.low, math.floor(low)), min(self.high, math.ceil(high)) + 1)]
        candidates = [d for d in inside if d not in tested and low <= d <= high] or [
            d for d in inside if d not in tested
        ]
        return self._dividing(candidates, low, high, min(self.batch, room))

    @staticmethod
    def _dividing(candidates: list[int], low: float, high: float, wanted: int) -> list[int]:
        """Up to `wanted` of `candidates` nearest the points dividing low..high evenly in log distance."""
        chosen: list[int] = []
        wanted = min(wanted, len(candidates))
        for q in range(1, wanted + 1):
            target = math.log(low) + q / (wanted + 1) * (math.log(high) - math.log(low))
            left = [d for d in candidates if d not in chosen]
            if left:
                chosen.append(min(left, key=lambda d: (abs(math.log(d) - target), d)))
        return sorted(chosen)
