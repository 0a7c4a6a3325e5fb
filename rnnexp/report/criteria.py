"""What the report's verdicts are measured against: the margin of "at chance" and the score a
seed must reach to count as having solved its task, per metric and, where a task needs its own,
per task (`rnnexp-report --margin`, `--solved`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rnnexp.report.runs import ReportError


@dataclass(frozen=True)
class Threshold:
    """An amount on a metric's scale: absolute (0.02) or a fraction of the chance level (5%)."""

    value: float
    of_chance: bool = False

    def amount(self, chance: float) -> float:
        return self.value * abs(chance) if self.of_chance else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}% of chance" if self.of_chance else f"{self.value:g}"


# "at chance" is an equivalence claim (TOST) within these margins of the chance level: two points
# of accuracy, or 5% of a loss-like metric's chance level (MSE, cross-entropy, bits per character)
MARGINS = {"acc": Threshold(0.02), "*": Threshold(0.05, of_chance=True)}
# a seed solved its task at accuracy 0.95, or at 1% of a loss-like metric's chance level
SOLVED = {"acc": Threshold(0.95), "*": Threshold(0.01, of_chance=True)}
# a memorising variant: its final training score beats its held-out score by more than this
GAPS = {"acc": Threshold(0.10), "*": Threshold(0.10, of_chance=True)}
MIN_SEEDS = 5  # fewer cannot carry a claim (a flag)
PARAMS_APART = 0.03  # two models' parameter counts further apart than this are not matched (a flag)
HIGHER = {"acc"}  # the metrics where higher is better; the others are losses


@dataclass(frozen=True)
class Criteria:
    """Thresholds by `METRIC` or `TASK:METRIC`; a task's own wins over its metric's."""

    margins: dict[str, Threshold] = field(default_factory=lambda: dict(MARGINS))
    solved: dict[str, Threshold] = field(default_factory=lambda: dict(SOLVED))
    gaps: dict[str, Threshold] = field(default_factory=lambda: dict(GAPS))
    named: list[tuple[str, str]] = field(default_factory=list)  # (option, [TASK:]METRIC) as given

    @staticmethod
    def _find(table: dict[str, Threshold], task: str, metric: str) -> Threshold:
        return table.get(f"{task}:{metric}") or table.get(metric) or table["*"]

    def margin(self, task: str, metric: str) -> Threshold:
        return self._find(self.margins, task, metric)

    def solved_at(self, task: str, metric: str) -> Threshold:
        return self._find(self.solved, task, metric)

    def gap(self, task: str, metric: str) -> Threshold:
        return self._find(self.gaps, task, metric)

    @classmethod
    def given(cls, margins: list[str] = (), solved: list[str] = (), gaps: list[str] = ()) -> Criteria:
        """From the command line's `--margin`, `--solved` and `--gap` values, each `[TASK:]METRIC=VALUE`."""
        criteria = cls()
        for option, table, given in (
            ("--margin", criteria.margins, margins),
            ("--solved", criteria.solved, solved),
            ("--gap", criteria.gaps, gaps),
        ):
            for text in given:
                key, threshold = _parse(option, text)
                table[key] = threshold
                criteria.named.append((option, key))
        return criteria


def check_names(criteria: Criteria, pairs: set[tuple[str, str]]) -> None:
    """Each [TASK:]METRIC given names a metric (and task) of the runs: a misspelt one would
    silently leave the default in force."""
    tasks = {t for t, _ in pairs}
    metrics = {m for _, m in pairs}
    for option, key in criteria.named:
        task, _, metric = key.rpartition(":")
        if (task and (task, metric) not in pairs) or (not task and metric not in metrics):
            known = ", ".join(sorted(metrics)) + "; tasks: " + ", ".join(sorted(tasks))
            raise ReportError(f"{option} {key}=...: no run here is scored by it; metrics: {known}")


def _parse(option: str, text: str) -> tuple[str, Threshold]:
    key, eq, value = text.partition("=")
    metric = key.rpartition(":")[2]
    example = {"--margin": "acc=0.02 or mse=5%", "--solved": "acc=0.95 or adding:mse=1%"}.get(
        option, "acc=0.1 or mse=10%"
    )
    if not eq or not metric or not value:
        raise ReportError(f"{option}={text!r}: give [TASK:]METRIC=VALUE, e.g. {example}")
    relative = value.endswith("%")
    try:
        number = float(value.removesuffix("%")) / (100 if relative else 1)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ReportError(f"{option}={text!r}: {value!r} is not a positive number or percentage, e.g. {example}")
    if option == "--solved" and metric in HIGHER and (relative or number > 1):
        raise ReportError(f"{option}={text!r}: {metric} is solved at a score between 0 and 1, e.g. {metric}=0.95")
    if option != "--solved" and metric in HIGHER and not relative and number >= 1:
        example = "0.02" if option == "--margin" else "0.1"
        raise ReportError(f"{option}={text!r}: an amount of {metric} below 1, e.g. {metric}={example}")
    return key, Threshold(number, of_chance=relative)
