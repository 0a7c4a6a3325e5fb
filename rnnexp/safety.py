"""What a config may make rnnexp run: only the project's own classes and the Hydra plugins it
ships configs for. Nothing read from a store, an experiment file or a replayed override names
other code.

Hydra instantiates whatever a config names: `hydra.callbacks.*` and nested `_target_`s of the
launcher and sweeper through `instantiate`, and the logging configs through Python's
`logging.config.dictConfig`, whose `()` and `class` keys name any callable. It does so before
the task function runs, so `check_command_line` composes the command's configs first (each
config group a sweep chooses, too) and refuses those that name anything else. The model, task
and trainer `_target_`s are locked by `rnnexp.config.check`.

`replayable` is the filter for overrides read back from a store (`overrides.yaml`, which
`resume=` and `make reproduce-run` replay): plain `key=value` or `+key=value` overrides of this
project's config, parsed with Hydra's own parser; no flags, no `hydra` keys, no `_target_`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnexp.config import ConfigError
from rnnexp.store import NOT_IDENTITY

CALLBACKS = {"rnnexp.sweep.SweepTracking"}
LAUNCHERS = {
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
}
OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
SWEEPERS = {
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    OPTUNA_SWEEPER,
    "hydra_plugins.rnnexp_span.span_sweeper.SpanSweeper",
}
# the samplers of the Optuna sweeper's own configs, by exact name (a prefix would admit
# `optuna.samplers.os.system`: a target is looked up attribute by attribute)
OPTUNA_SAMPLERS = {
    f"optuna.samplers.{name}"
    for name in (
        "TPESampler",
        "RandomSampler",
        "CmaEsSampler",
        "NSGAIISampler",
        "MOTPESampler",
        "GridSampler",
        "QMCSampler",
    )
}
LOG_CLASSES = {
    "logging.StreamHandler",
    "logging.FileHandler",
    "logging.NullHandler",
    "logging.Formatter",
    "logging.handlers.RotatingFileHandler",
    "logging.handlers.TimedRotatingFileHandler",
    "logging.handlers.WatchedFileHandler",
}
LOG_STREAMS = {"ext://sys.stdout", "ext://sys.stderr"}
# where a log file may be: in the run's own output folder, by a plain name
LOG_FILE = re.compile(r"\$\{hydra[.:]runtime\.output_dir\}/(?!\.\.?$)([\w.-]|\$\{hydra[.:]job\.name\})+")
# environment a job may set (hydra.job.env_set): thread and device settings, not PATH,
# LD_PRELOAD or PYTHON*, which would load code into the processes a sweep starts
ALL_JOBS_CHECKED = 64  # a larger sweep has each swept value checked once (each job's config takes a compose)
ENV_NAME = re.compile(r"(OMP|MKL|OPENBLAS|CUBLAS|CUDA|NCCL|MLFLOW|RNNEXP|TOKENIZERS)_[A-Z0-9_]*")


def _walk(node: Any, path: str) -> Iterable[tuple[str, Any, Any]]:
    """(dotted path of the parent, key, value) for every entry of a plain container tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield path, key, value
        yield from _walk(value, f"{path}.{key}")


SCALAR_REFERENCE = re.compile(r"\$\{(hydra(?:\.\w+)+)\}")


def _whole_interpolation(value: str) -> bool:
    """Whether OmegaConf resolves `value` as one interpolation, to whatever it gives (a node, a
    dict from `oc.create`), rather than to a string; asked of OmegaConf's own grammar."""
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser
    from omegaconf.grammar_parser import parse

    if "${" not in value:
        return False
    try:
        text = parse(value).getChild(0)  # configValue: text EOF
    except Exception:
        return True  # does not parse: not a plain value either
    return text.getChildCount() == 1 and isinstance(text.getChild(0), OmegaConfGrammarParser.InterpolationContext)


def _refers_to_a_scalar(hydra: dict, value: str) -> bool:
    """`${hydra.job.num}`, say: a reference to a plain value of the hydra node, not to a node
    (which could hold a `()` factory) and not through a resolver (`${oc.create:...}` makes one)."""
    found = SCALAR_REFERENCE.fullmatch(value)
    node: Any = {"hydra": hydra}
    for part in found.group(1).split(".") if found else ["\0"]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, (dict, list)) and not (isinstance(node, str) and "${" in node)


def check_hydra(cfg: DictConfig) -> None:
    """Refuse a composed config whose `hydra` node names code outside the allowed lists. Values
    are read as written: an interpolation is not an allowed name, and a value that is one whole
    interpolation (which resolves after this check, maybe to a node) must refer to a plain value."""
    hydra = OmegaConf.to_container(cfg.hydra, resolve=False)
    allowed_targets = {"hydra.launcher": LAUNCHERS, "hydra.sweeper": SWEEPERS, "hydra.sweeper.sampler": OPTUNA_SAMPLERS}
    for name in hydra.get("callbacks") or {}:
        allowed_targets[f"hydra.callbacks.{name}"] = CALLBACKS
    for parent, key, value in _walk(hydra, "hydra"):
        where = f"{parent}.{key}"
        if isinstance(value, str) and _whole_interpolation(value) and not _refers_to_a_scalar(hydra, value):
            raise ConfigError(
                where,
                value,
                "a value written out, or ${hydra.KEY} of a plain value: an "
                "interpolation here could make a node that names code",
            )
        if key == "_target_":
            allowed = allowed_targets.get(parent, set())
            if value not in allowed:
                raise ConfigError(
                    where,
                    value,
                    "one of " + ", ".join(sorted(allowed))
                    if allowed
                    else "nothing: a config names no code here (only the project's own classes and "
                    "the Hydra plugins it ships configs for)",
                )
        elif parent.startswith(("hydra.job_logging", "hydra.hydra_logging")):
            if key == "()":
                raise ConfigError(where, value, "nothing: a logging config names no factory")
            if key == "class" and value not in LOG_CLASSES:
                raise ConfigError(where, value, "one of " + ", ".join(sorted(LOG_CLASSES)))
            if isinstance(value, str) and value.startswith("ext://") and value not in LOG_STREAMS:
                raise ConfigError(where, value, "one of " + ", ".join(sorted(LOG_STREAMS)))
            if key == "filename" and not LOG_FILE.fullmatch(str(value)):
                raise ConfigError(
                    where,
                    value,
                    "a file in the run's own folder: ${hydra.runtime.output_dir}/NAME "
                    "(a log handler writes nowhere else)",
                )
        elif where == "hydra.job.name" and value is not None and not re.fullmatch(r"(?!\.\.?$)[\w.-]+", str(value)):
            raise ConfigError(where, value, "a plain name (letters, digits, . _ -): it names the run's log file")
        elif where == "hydra.sweeper.custom_search_space" and value is not None:
            raise ConfigError(where, value, "null: a search space is given by hydra.sweeper.params, not by code")
        elif parent == "hydra.job.env_set" and not ENV_NAME.fullmatch(str(key)):
            raise ConfigError(where, value, f"a variable matching {ENV_NAME.pattern}")
        elif where == "hydra.job.env_copy" and value:
            raise ConfigError(where, value, "[]: a job keeps the environment it was started with")
    for name, callback in (hydra.get("callbacks") or {}).items():
        if set(callback) != {"_target_"}:
            raise ConfigError(f"hydra.callbacks.{name}", callback, "a callback with no arguments")


def check_command_line(argv: list[str], conf_dir: str, config_name: str) -> DictConfig | None:
    """Compose what `rnnexp-train ARGV` would run, as Hydra will, and check every config a job
    can get with `check_hydra`: with -m, one for each choice of the config groups it sweeps.
    --help, --cfg and --info too: Hydra configures its own logging from the config for them.
    Returns the config composed (its `hydra` node included), None for shell completion."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    args = get_args_parser().parse_args(argv)
    if args.experimental_rerun is not None:
        raise ConfigError(
            "--experimental-rerun",
            args.experimental_rerun,
            "nothing: it unpickles a file, which "
            "can run any code; resume=RUN_ID goes on with a run, make reproduce-run RUN=ID re-makes one",
        )
    if args.shell_completion:
        return None
    commands = [
        name
        for name, given in (
            ("--run", args.run),
            ("--multirun", args.multirun),
            ("--cfg", args.cfg),
            ("--info", args.info is not None),
        )
        if given
    ]
    if len(commands) > 1:
        raise ConfigError(commands[1], True, f"only one of --run, --multirun, --cfg and --info ({commands[0]} given)")
    if args.config_path is not None or args.config_name is not None:
        raise ConfigError(
            "--config-path/--config-name",
            args.config_path or args.config_name,
            "nothing: rnnexp-train composes conf/train.yaml (add configs with --config-dir)",
        )
    search_path = create_automatic_config_search_path(None, None, conf_dir)
    if args.config_dir is not None:
        from hydra.core.config_search_path import SearchPathQuery

        search_path.prepend(
            provider="command-line",
            path=f"file://{Path(args.config_dir).resolve()}",
            anchor=SearchPathQuery(provider="schema"),
        )
    hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
    try:
        mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
        base = hydra.compose_config(config_name, args.overrides, run_mode=mode)
        check_hydra(base)
        if mode == RunMode.RUN:
            return base
        # each job composes its own config: every choice of the groups a sweep chooses (each
        # brings its own hydra node), and each value of the other swept keys once (a bad value is
        # one line now, not a failed sweep later)
        repository = hydra.config_loader.repository  # type: ignore[attr-defined]
        parser = OverridesParser.create()
        searched = OmegaConf.to_container(base.hydra.sweeper, resolve=False).get("params") or {}
        for key, value in searched.items():  # each job gets them: Hydra's settings there would pass by check_hydra
            if str(key).lstrip("+~").split("/")[0].split(".")[0] == "hydra":
                raise ConfigError(f"hydra.sweeper.params.{key}", value, "a key of the run's config, not Hydra's")
        fixed, groups, values = [], [], []
        given = parser.parse_overrides(args.overrides)
        # a search's own values (an Optuna sweeper's params) may fail as trials: the search goes
        # on; a grid's (the basic and span sweepers') are jobs like the command line's
        search = str(base.hydra.sweeper.get("_target_")) == OPTUNA_SWEEPER
        # a key the command line sets too takes the command line's value in every job (it comes last)
        on_the_line = {o.get_key_element().lstrip("+~") for o in given}
        grid = [f"{k}={v}" for k, v in searched.items() if str(k).lstrip("+~") not in on_the_line]
        for o in given + parser.parse_overrides(grid):
            if not o.is_sweep_override():
                fixed.append(o.input_line)
                continue
            is_group = "." not in o.key_or_group and repository.group_exists(o.key_or_group)  # nested ones too
            if not is_group and search and o not in given:
                continue
            try:
                options = [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
            except Exception:  # an interval of an Optuna search: no list of values
                continue
            (groups if is_group else values).append(options)
        if math.prod(len(options) for options in groups + values) <= ALL_JOBS_CHECKED:
            groups, values = groups + values, []  # every job, pairs of values included
        jobs = {tuple(chosen) + tuple(v[0] for v in values) for chosen in itertools.product(*groups)}
        for i, options in enumerate(values):
            for option in options[1:]:
                job = [g[0] for g in groups] + [v[0] for v in values]
                job[len(groups) + i] = option
                jobs.add(tuple(job))
        for job in sorted(jobs):
            cfg = hydra.compose_config(config_name, fixed + list(job), run_mode=RunMode.RUN)
            check_hydra(cfg)
            _check_job(cfg)
        return base
    finally:
        GlobalHydra.instance().clear()


def _check_job(cfg: DictConfig) -> None:
    """`rnnexp.config.check` of a sweep's job, as the job will make it; a model x task pair that
    does not fit is skipped by the sweep, not an error."""
    from omegaconf import open_dict

    from rnnexp.config import MismatchError, check

    with open_dict(cfg):
        del cfg["hydra"]
    try:
        check(cfg)
    except MismatchError:
        pass


def replayable(overrides: list[str], source: str) -> list[str]:
    """The overrides read back from a store that make a run what it is: plain `key=value` or
    `+key=value` of this project's config. Where they were tracked and what they resumed
    (`tracking.*`, `resume`, `resume_sweep`) is dropped; anything else (a flag, a deletion, a
    sweep, a `hydra` key, a `_target_`) is a tampered log, refused naming `source`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    kept = []
    for line in overrides:
        if not isinstance(line, str):
            raise ConfigError(source, line, "a list of KEY=VALUE overrides")
        try:
            override = None if line.startswith("-") else parser.parse_override(line)
        except HydraException:
            override = None
        key = override.key_or_group if override is not None else ""
        if (
            override is None
            or not key
            or override.type not in (OverrideType.CHANGE, OverrideType.ADD)
            or override.package is not None
            or override.is_sweep_override()
            or key.split(".")[0].split("/")[0] == "hydra"
            or "_target_" in key
            or ("." not in key and re.search(r"\.\.|^/", str(override.value())))
        ):  # a group's option, not a path
            raise ConfigError(
                source,
                line,
                "plain KEY=VALUE or +KEY=VALUE overrides of this project's config "
                "(no flags, sweeps, hydra keys or _target_): the store was altered",
            )
        if key.split(".")[0] not in NOT_IDENTITY:
            kept.append(line)
    return kept
