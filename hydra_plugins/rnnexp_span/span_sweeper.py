"""`hydra/sweeper=span`: each variant's memory span (rnnexp.span), its distances placed adaptively.

    rnnexp-train -m hydra/sweeper=span model=rnn_hidden,mlp_window hydra.sweeper.high=64

Every combination of the other swept keys (the command line's and `hydra.sweeper.params`) is a
variant. Round 0 runs each variant's bracket; each later round runs, for every variant not done,
the distances that divide its span's interval, all variants' runs launched together through the
configured launcher (basic, joblib, submitit, Ray). Each run is an ordinary rnnexp run, a child
of the sweep's parent run (rnnexp.sweep); after each round the sweeper reads their test scores
from the store and logs each variant's span on the parent (`span`, `span_low`, `span_high`, one
set per variant as `span/LABEL` where there are several) with the design as `span.json`.

The design is a function of the finished runs' scores alone, so a stopped sweep resumed with
`resume_sweep=PARENT` (rnnexp.sweep) places the same distances again: its finished jobs are
skipped and their scores read back, and it goes on where it stopped.
"""

import collections
import copy
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

TARGET = "hydra_plugins.rnnexp_span.span_sweeper.SpanSweeper"


@dataclass
class SpanSweeperConf:
    _target_: str = TARGET
    key: str = "task.distance"  # the distance: any integer key of the config (task.length, say)
    low: int = 1  # the range of distances the span is looked for in
    high: int = 64
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    per_distance: int | None = None  # runs at each distance (seeds in rotation); null: every seed
    bracket: int = 4  # round 0: distances evenly spaced in log distance, low and high included
    batch: int = 2  # distances a variant gets in each later round
    factor: float = 1.5  # done when the span's interval high/low is at most this
    max_runs: int = 60  # per variant
    params: dict[str, str] = field(
        default_factory=dict
    )  # more swept keys, as hydra.sweeper.params of the basic sweeper


ConfigStore.instance().store(group="hydra/sweeper", name="span", node=SpanSweeperConf, provider="rnnexp")

# what a span sweep sets itself in each job, besides its key
_OWN_KEYS = ("seed",)
_ABSENT = object()


def _design(sweeper: Any) -> Any:
    from rnnexp.span import Design

    seeds = len(sweeper.seeds)
    return Design(
        low=int(sweeper.low),
        high=int(sweeper.high),
        seeds=int(sweeper.per_distance or seeds),
        bracket=int(sweeper.bracket),
        batch=int(sweeper.batch),
        factor=float(sweeper.factor),
        max_runs=int(sweeper.max_runs),
        replicates=seeds,
    )


def check(config: DictConfig) -> None:
    """ConfigError, before the sweep's parent run exists, for a span sweep that cannot run: a key
    that is not an integer of the config, a range below 1, a budget smaller than the bracket, a
    sweep over the key or the seed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rnnexp.config import ConfigError, typed_overrides

    sweeper = config.hydra.sweeper
    key = str(sweeper.key)
    if key in _OWN_KEYS or key.split(".")[0] in ("hydra", "tracking", "trainer", "optim"):
        raise ConfigError(
            "hydra.sweeper.key", key, "a key of the task or model that sets a distance (task.distance, task.length)"
        )
    value = OmegaConf.select(config, key, default=_ABSENT)
    if isinstance(value, bool) or not isinstance(value, int):
        found = (
            "not a key of the config"
            if value is _ABSENT
            else "a group of keys here"
            if isinstance(value, (DictConfig, ListConfig))
            else f"{value!r} here"
        )
        raise ConfigError(
            "hydra.sweeper.key", key, f"an integer key of the config (task.distance, task.length); {key} is {found}"
        )
    for name, least in (("low", 1), ("bracket", 2), ("batch", 1), ("max_runs", 1)):
        if int(sweeper[name]) < least:
            raise ConfigError(f"hydra.sweeper.{name}", sweeper[name], f"an integer of at least {least}")
    if int(sweeper.high) <= int(sweeper.low):
        raise ConfigError("hydra.sweeper.high", sweeper.high, f"an integer above hydra.sweeper.low={sweeper.low}")
    if not math.isfinite(float(sweeper.factor)) or float(sweeper.factor) <= 1:
        raise ConfigError("hydra.sweeper.factor", sweeper.factor, "a number above 1 (the interval's high/low)")
    seeds = list(sweeper.seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds):
        raise ConfigError("hydra.sweeper.seeds", seeds, f"distinct integers from 0 to {2**32 - 1}, e.g. [0,1,2,3,4]")
    if sweeper.per_distance is not None and not 1 <= int(sweeper.per_distance) <= len(seeds):
        raise ConfigError("hydra.sweeper.per_distance", sweeper.per_distance, f"null (every seed) or 1 to {len(seeds)}")
    design = _design(sweeper)
    first = len(design.first()) * design.seeds
    if design.max_runs < first:
        raise ConfigError(
            "hydra.sweeper.max_runs",
            design.max_runs,
            f"at least {first}, the bracket's runs ({len(design.first())} distances x {design.seeds} runs)",
        )
    params = [f"{k}={v}" for k, v in (sweeper.params or {}).items()]
    _check_range(config, key, int(sweeper.low), int(sweeper.high))
    given = typed_overrides(config.hydra.overrides.task) + params
    for override in OverridesParser.create().parse_overrides(given):
        name = override.key_or_group.lstrip("+~")
        if override.input_line in params and name.split("/")[0].split(".")[0] == "hydra":
            # each job gets these: Hydra's own settings would escape the checks of rnnexp.safety
            raise ConfigError(
                f"hydra.sweeper.params.{name}",
                override.input_line.split("=", 1)[-1],
                "a key of the run's config, not Hydra's",
            )
        if name in (key, *_OWN_KEYS):
            raise ConfigError(
                name,
                override.input_line.split("=", 1)[-1],
                "set by the span sweeper: give "
                + (
                    "the seeds as hydra.sweeper.seeds=[0,1,2]"
                    if name in _OWN_KEYS
                    else "its range as hydra.sweeper.low=1 hydra.sweeper.high=64"
                ),
            )


def _check_range(config: DictConfig, key: str, low: int, high: int) -> None:
    """ConfigError where the range's ends make a config the task refuses (a distance beyond a
    fixed length, say): checked on the sweep's own config, as its every job will be."""
    from rnnexp import config as schemas
    from rnnexp.config import ConfigError

    for end, name in ((low, "low"), (high, "high")):
        job = copy.deepcopy(config)  # as a job gets it: without the hydra node
        with open_dict(job):
            del job["hydra"]
        OmegaConf.update(job, key, end, force_add=False)
        try:
            schemas.check(job)
        except schemas.MismatchError:  # the sweep's models, not this default one, serve the task
            return
        except ConfigError as err:
            raise ConfigError(f"hydra.sweeper.{name}", end, f"a {key} this config takes ({err})") from None


@dataclass
class _Variant:
    overrides: list[str]
    label: str
    jobs: list[tuple[int, int]] = field(default_factory=list)  # (distance, seed) placed, in order
    results: list[tuple[int, int, float, float, bool]] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    span: Any = None
    done: str = ""


class SpanSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = OmegaConf.create(settings)
        self.job_idx = 0

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _variants(self, arguments: list[str]) -> list[_Variant]:
        """Every combination of the swept keys; the label names what differs, e.g. `model:mlp_window`."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = [f"{k}={v}" for k, v in (self.settings.params or {}).items()]
        lists, swept = [], []
        for override in OverridesParser.create().parse_overrides(params + list(arguments)):
            key = override.get_key_element()
            if override.is_sweep_override():
                lists.append([f"{key}={v}" for v in override.sweep_string_iterator()])
                swept.append(len(lists) - 1)
            else:
                lists.append([f"{key}={override.get_value_element_as_str()}"])
        variants, labels = [], set()
        for combination in itertools.product(*lists):
            shown = [combination[i].lstrip("+~").replace("=", ":") for i in swept]
            # what MLflow takes in a metric's name (no path parts, at most 250 characters in all)
            label = re.sub(r"\.{2,}", "_", re.sub(r"[^\w.\- :]", "_", " ".join(shown)))[:200] or "all"
            while label in labels:
                label = f"{label[:195]} #{len(labels)}"
            labels.add(label)
            variants.append(_Variant(list(combination), label))
        return variants

    def sweep(self, arguments: list[str]) -> Any:
        from rnnexp.span import fit
        from rnnexp.store import RunRecord, write

        design = _design(self.settings)
        key, seeds = str(self.settings.key), list(self.settings.seeds)
        variants = self._variants(arguments)
        client, parent = self._parent()
        self._same_design_as_before(client, parent, variants)
        self._log(client, parent, variants, 0)  # the design's identity, before any run: a resume checks it
        write(client, parent.info.run_id, RunRecord(span_key=key))  # rnnexp-report --parent reports its spans
        returns: list[Any] = []
        placed = {id(v): design.first() for v in variants}
        for round_ in itertools.count():
            batch, owners = [], []
            for variant in variants:
                for distance in placed.get(id(variant), []):
                    for _ in range(design.seeds):
                        # in rotation, skipping the seeds this distance has run (a bound's distance runs again)
                        used = {s for d, s in variant.jobs if d == distance}
                        turn = [seeds[(len(variant.jobs) + i) % len(seeds)] for i in range(len(seeds))]
                        seed = next((s for s in turn if s not in used), None)
                        if seed is None:
                            break
                        variant.jobs.append((distance, seed))
                        batch.append([*variant.overrides, f"{key}={distance}", f"seed={seed}"])
                        owners.append((variant, distance, seed))
            if not batch:
                break
            print(f"span sweep, round {round_}: {len(batch)} runs", flush=True)
            results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            self.job_idx += len(results)
            returns.append(results)
            failed = [r for r in results if r.status.name == "FAILED"]
            for (variant, distance, seed), result in zip(owners, results, strict=True):
                if result.status.name != "FAILED" and (outcome := self._outcome(client, parent, result)) is not None:
                    variant.results.append((distance, seed, *outcome))
            placed = {}
            for variant in variants:
                if variant.done:
                    continue
                distances = {d for d, *_ in variant.results}
                if len(distances) < 2:
                    variant.done = "fewer than 2 distances finished"
                    continue
                d, s, score, chance, higher = zip(*variant.results, strict=True)
                variant.span = fit(d, s, score, chance, higher=all(higher))
                counts = collections.Counter(d for d, _ in variant.jobs)
                variant.done = design.done(variant.span, len(variant.jobs), counts)
                upcoming = [] if variant.done else design.next(variant.span, len(variant.jobs), counts)
                variant.rounds.append(
                    {"round": round_, "runs": len(variant.jobs), "span": variant.span.text(), "next": upcoming}
                )
                placed[id(variant)] = upcoming
                print(
                    f"  {variant.label}: span {variant.span.text()} after {len(variant.jobs)} runs; "
                    + (f"done: {variant.done}" if variant.done else f"next {key}={','.join(map(str, upcoming))}"),
                    flush=True,
                )
            self._log(client, parent, variants, round_)
            if failed:
                _ = failed[0].return_value  # raises the job's error: the sweep stops, resumable
        return returns

    def _identity(self, variants: list[_Variant]) -> dict:
        """What a resumed span sweep must share with the one it resumes: its settings and its
        variants' overrides (less where runs are tracked and what is resumed)."""
        kept = [
            [o for o in v.overrides if not o.lstrip("+~").startswith(("tracking.", "tracking=", "resume_sweep="))]
            for v in variants
        ]
        return {"settings": OmegaConf.to_container(self.settings), "variants": kept}

    def _same_design_as_before(self, client: Any, parent: Any, variants: list[_Variant]) -> None:
        """ConfigError for a resume whose command differs from the stopped sweep's: its design,
        and its parent's spans, would mix two sweeps."""
        from rnnexp.config import ConfigError

        if self.config.get("resume_sweep") is None:
            return
        try:
            before = json.loads(Path(client.download_artifacts(parent.info.run_id, "span.json")).read_text())
        except Exception:  # stopped before its first round ended: nothing to differ from
            return
        now = self._identity(variants)
        if {"settings": before.get("settings"), "variants": before.get("identity")} != now:
            raise ConfigError(
                "resume_sweep",
                parent.info.run_id,
                "the parent of a span sweep made by the same command: this one's settings or swept values differ "
                "from those in its span.json",
            )

    def _parent(self) -> tuple[Any, Any]:
        from rnnexp.sweep import PARENT_FILE

        tracking = OmegaConf.to_object(self.config.tracking)
        client = tracking.store.client()
        run_id = json.loads((Path(self.config.hydra.sweep.dir) / PARENT_FILE).read_text())["run_id"]
        return client, client.get_run(run_id)

    @staticmethod
    def _outcome(client: Any, parent: Any, result: Any) -> tuple[float, float, bool] | None:
        """(test score, chance level, higher is better) of a job's run, found by its identity."""
        from rnnexp import tracking
        from rnnexp.store import RunRecord, Store

        twin = Store.finished_twin(client, parent, tracking.config_hash(result.cfg))
        if twin is None:  # a model that cannot serve the task: skipped
            return None
        run = client.get_run(twin)
        record = RunRecord.of(run)
        metrics = run.data.metrics
        score, chance = metrics.get(f"test/{record.metric}"), metrics.get("chance_level")
        if score is None or chance is None or not math.isfinite(score) or not math.isfinite(chance):
            return None  # a diverged run has no score to fit: it counts as a run that failed
        return float(score), float(chance), record.better != "lower"

    def _log(self, client: Any, parent: Any, variants: list[_Variant], round_: int) -> None:
        from rnnexp import tracking

        metrics = {}
        for variant in variants:
            span = variant.span
            if span is None:
                continue
            suffix = "" if len(variants) == 1 else f"/{variant.label}"
            low = max(span.tested) if span.bound == "above" else span.low if not span.bound else None
            high = min(span.tested) if span.bound == "below" else span.high if not span.bound else None
            for name, value in (("span", span.estimate), ("span_low", low), ("span_high", high)):
                if value is not None:
                    metrics[name + suffix] = float(value)
            metrics["span_runs" + suffix] = float(len(variant.jobs))
        if metrics:
            tracking.log_metrics(client, parent.info.run_id, metrics, step=round_)
        state = {
            "settings": OmegaConf.to_container(self.settings),
            "identity": self._identity(variants)["variants"],
            "variants": [
                {
                    "label": v.label,
                    "overrides": [tracking.masked_override(o) for o in v.overrides],
                    "span": None if v.span is None else v.span.text(),
                    "done": v.done,
                    "rounds": v.rounds,
                    "runs": [list(j) for j in v.jobs],
                }
                for v in variants
            ],
        }
        client.log_text(parent.info.run_id, json.dumps(state, indent=1), "span.json")
