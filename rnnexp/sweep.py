"""Sweeps: a Hydra multirun grouped in MLflow under one parent run.

`SweepTracking`, a Hydra callback registered in `conf/train.yaml`, creates the parent run when
a multirun starts (the sweep's overrides as params) and ends it when the multirun ends (the
number of children as a metric). Each job reads the parent's id from the sweep folder and logs
its own run as a child (`mlflow.parentRunId`), in the parent's experiment, so that the MLflow UI
shows the sweep as one expandable group. A single run has no parent.

Creating the experiment (and with it the store's schema) before any job starts also keeps
parallel jobs from racing to create them. MLflow makes SQLite wait for a lock (busy_timeout) rather
than fail, so parallel jobs can share one store.

An interrupted sweep resumes with the same command and `resume_sweep=<parent run id>`: the parent is
reopened, and each job whose config already FINISHED under it is skipped.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnnexp.config import typed_overrides

PARENT_FILE = "mlflow_parent.json"  # in the sweep folder: how jobs find their parent run


@dataclass(frozen=True)
class Parent:
    run_id: str
    experiment: str
    pid: int | None = None  # the sweep's process (None in a folder written before it was kept)
    host: str | None = None
    swept: tuple[str, ...] = ()  # the keys the sweep varies: its runs' names lead with them


def parent_of_this_job() -> Parent | None:
    """The sweep's parent run, for a job of a multirun; None for a single run."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    path = Path(hydra_cfg.sweep.dir) / PARENT_FILE
    if not path.exists():
        return None
    found = json.loads(path.read_text())
    return Parent(**{**found, "swept": tuple(found.get("swept", ()))})


_watching: list[Parent] = []


def end_with_the_sweep(parent: Parent, poll_s: float = 1.0, grace_s: float = 10.0) -> None:
    """In a process that a launcher started to run jobs (joblib's workers, submitit's), end this
    process when the sweep's own process has gone (SIGKILL, a crash), rather than run the jobs
    it had queued for nobody, or idle on for minutes holding its memory. The job in hand stops
    as on SIGTERM (its run ends KILLED); after `grace_s` the process exits whatever it is doing.
    Started once per process; nothing to do where the job runs in the sweep's process."""
    if parent.pid is None or parent.pid == os.getpid() or parent.host != socket.gethostname() or _watching:
        return
    _watching.append(parent)
    from rnnexp.store import process_alive

    child = os.getppid() == parent.pid  # then a dead sweep shows as a new parent, whatever its pid becomes

    def gone() -> bool:
        return os.getppid() != parent.pid if child else not process_alive(parent.pid)

    def watch() -> None:
        while not gone():
            time.sleep(poll_s)
        print(
            f"rnnexp-train: the sweep's process {parent.pid} has ended: stopping this job", file=sys.stderr, flush=True
        )
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-the-sweep", daemon=True).start()


def _collect_garbage() -> None:
    """Free finished runs now. Lightning's trainer, module and logger refer to one another: only
    the cycle collector frees a run, and left to its own timing it lets several runs' data pile
    up. A Ctrl-C that lands in a finalizer would be printed and dropped, so it waits until the
    collection is done."""
    if threading.current_thread() is not threading.main_thread():
        gc.collect()
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        gc.collect()
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed and previous is signal.default_int_handler:
        raise KeyboardInterrupt


BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def _stop_on_sigterm(launcher: str | None) -> None:
    """SIGTERM (a scheduler's, `kill`'s) ends the sweep's process as Ctrl-C does: through its exit
    handlers, which end the parent run FAILED and say how to resume it, rather than at once with
    the parent left RUNNING. Where the jobs run in this process (the basic launcher), Lightning's
    own handler stops the job in hand first, and is left alone."""
    if launcher == BASIC_LAUNCHER or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):

        def stop(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)


def _check_selection(config: DictConfig, store: Any, client: Any) -> None:
    """ConfigError, before the parent run exists, where `optim.lr_from` names an experiment the
    store lacks: every job would fail on it, and leave a parent of no runs behind."""
    from rnnexp.config import ConfigError
    from rnnexp.tuning import missing_selection

    wanted = config.optim.get("lr_from") if "optim" in config else None
    if isinstance(wanted, str) and "," not in wanted and store.experiment_named(client, wanted) is None:
        raise ConfigError("optim.lr_from", wanted, missing_selection(wanted, store.experiment_names(client)))


def _stop_survivors(client: Any, parent_id: str, wait_s: float = 40.0) -> None:
    """Jobs of an interrupted sweep still running on this host end by themselves soon after their
    sweep (`end_with_the_sweep`); a resumed sweep waits for them, then stops those left, so that
    no job runs twice side by side."""
    from rnnexp.store import RunRecord, Store, process_alive

    def alive() -> list[int]:
        records = [RunRecord.of(r) for r in Store.children(client, client.get_run(parent_id), status="RUNNING")]
        pids = [r.pid for r in records if r.host == socket.gethostname() and r.pid is not None]
        return [pid for pid in pids if pid != os.getpid() and process_alive(pid)]

    deadline = time.monotonic() + wait_s
    if pids := alive():
        print(
            f"waiting for {len(pids)} job(s) of the interrupted sweep to end (pids {', '.join(map(str, pids))})",
            flush=True,
        )
    while (pids := alive()) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    while alive() and time.monotonic() < deadline + 10:
        time.sleep(0.5)


# what `resume=` is told with -m (on the command line, swept or not, or from a config file): it
# names one run to go on with, not a sweep
RESUME_IN_A_SWEEP = "no value with -m (it continues one run); a stopped sweep goes on with resume_sweep=PARENT_RUN_ID"


def next_steps(store, experiment_id: str, run_id: str, failed: bool) -> str:
    """What a researcher does after a sweep: its report, its runs in the UI, or its resumption."""
    from rnnexp.tracking import command

    lines = [f"  report: {command('rnnexp-report')} --parent {run_id}{store.option()} --out report"]
    if where := in_the_ui(store, experiment_id, run_id):
        lines.append(f"  its runs in the UI: {where}")
    if failed:
        lines.append(f"  resume it: the same command with resume_sweep={run_id} (jobs that FINISHED are skipped)")
    return "\n".join(lines)


def in_the_ui(store, experiment_id: str, run_id: str) -> str | None:
    """Where a sweep's runs are seen in the UI, as its view shows them (`tracking.sweep_view`):
    `make ui` and a link for a SQLite store, the server's own UI for a tracking server."""
    from rnnexp.tracking import ui_link

    if store.is_sqlite:
        return f"`make ui{store.option('URI=')}`, then {ui_link(experiment_id, view=run_id)}"
    if store.is_server:
        return ui_link(experiment_id, view=run_id, server=store.uri)
    return None


def swept(config: DictConfig) -> dict[str, str]:
    """What a sweep varies, each key with its values as given (a secret masked, as in its params):
    the sweep overrides of its command line and of `hydra.sweeper.params`, and a span sweep's key
    (over its range) and seeds."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.rnnexp_span import span_sweeper
    from rnnexp.tracking import masked_override

    sweeper = config.hydra.sweeper
    found: dict[str, str] = {}
    if sweeper.get("_target_") == span_sweeper.TARGET:
        found[str(sweeper.key)] = f"{sweeper.low}..{sweeper.high}"
        found["seed"] = ",".join(str(seed) for seed in sweeper.seeds)
    lines = [*(f"{key}={value}" for key, value in (sweeper.get("params") or {}).items())]
    lines += typed_overrides(config.hydra.overrides.task)  # the command line's, which Hydra applies last
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override():
            found[key] = masked_override(override.input_line).split("=", 1)[-1]
        else:
            found.pop(key, None)
    return found


def sweep_name(swept: dict[str, str], finished: int | None = None, stopped: int = 0) -> str:
    """A sweep's parent run as the MLflow UI lists it: what it sweeps, and once it has ended, how
    many runs it finished (and stopped), e.g. `sweep, 4 runs: model.cell=rnn,gru seed=0,1`."""
    what = " ".join(f"{key}={values}" for key, values in swept.items()) or "nothing swept"
    count = "" if finished is None else f", {finished} run{'s' * (finished != 1)}"
    count += f" ({stopped} stopped)" if stopped else ""
    name = f"sweep{count}: {what}"
    return name if len(name) <= 250 else name[:249] + "…"  # MLflow's limit


def view_keys(config: DictConfig, swept: dict[str, str]) -> tuple[list[str], list[dict[str, str]]]:
    """How the runs table shows a sweep's runs (`tracking.sweep_view`): a column for each swept
    key, and the keys it groups the runs by (in MLflow's form): every swept key but the seed, and
    the runs' `variant_hash` (their config less the seed), so that a group's runs differ in their
    seed alone and its averages are a variant's, whatever the swept values show (a value read from
    the environment is logged masked). A config group is shown by the name its runs record (the
    `model` and `task` tags); another (`trainer=default,converge`) has no column of its own."""
    from omegaconf import DictConfig as Node

    columns, groups = [], []
    for key in swept:
        if key in ("model", "task"):
            mode, column = "tag", f"tags.`{key}`"
        elif isinstance(OmegaConf.select(config, key, default=None), Node):
            continue
        else:
            mode, column = "param", f"params.`{key}`"
        columns.append(column)
        if key != "seed":
            groups.append({"mode": mode, "groupByData": key})
    return columns, [*groups, {"mode": "tag", "groupByData": "variant_hash"}]


def _check_overrides(overrides: list[str]) -> None:
    """ConfigError if the sweep sweeps over where runs are tracked (its parent run and its jobs
    are in one store) or over what it resumes, or names one run to resume: checked once, before
    any job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rnnexp.config import ConfigError
    from rnnexp.store import masked_uri

    for override in OverridesParser.create().parse_overrides(overrides):
        if override.key_or_group == "resume" and override.value() is not None:
            raise ConfigError("resume", override.input_line.split("=", 1)[-1], RESUME_IN_A_SWEEP)
        if override.is_sweep_override() and override.key_or_group == "resume_sweep":
            raise ConfigError(
                "resume_sweep",
                override.input_line.split("=", 1)[-1],
                "one value: the parent run id of the one stopped sweep to go on with",
            )
        if override.is_sweep_override() and (
            override.key_or_group == "tracking" or override.key_or_group.startswith("tracking.")
        ):
            raise ConfigError(
                override.key_or_group,
                masked_uri(override.input_line.split("=", 1)[-1]),
                "one value in a sweep: a sweep's parent run and its jobs are in one store (run one sweep per store)",
            )


def _reopen_parent(client: Any, store, parent_id: str) -> Any:
    """The stopped sweep `parent_id`, RUNNING again in this process; ConfigError if it is not a
    sweep, FINISHED, or RUNNING (its own sweep, or another resume of it, still going). Checked and
    set under a lock, so that of two resumes started together one goes on and one is refused."""
    from mlflow.exceptions import MlflowException

    from rnnexp import tracking
    from rnnexp.config import ConfigError
    from rnnexp.store import RunRecord

    with store.resume_lock(parent_id):
        store.mark_stale(client)  # a sweep whose process died is KILLED, not RUNNING
        try:
            run = client.get_run(parent_id)
        except MlflowException:
            raise ConfigError("resume_sweep", parent_id, f"the parent run id of a sweep in {store.shown}") from None
        record, status = RunRecord.of(run), run.info.status
        if not record.sweep:
            raise ConfigError(
                "resume_sweep",
                parent_id,
                "the parent run id of a sweep; this run is no sweep's parent (one run goes on with resume=)",
            )
        if status == "FINISHED":
            raise ConfigError(
                "resume_sweep",
                parent_id,
                "a sweep that stopped before its end (FAILED or KILLED); this one FINISHED: every job ran",
            )
        if status == "RUNNING":
            raise ConfigError(
                "resume_sweep",
                parent_id,
                f"a sweep that has stopped; this one is RUNNING in process "
                f"{record.pid or '?'} on {record.host or '?'} (the sweep itself, or a resume of "
                "it): one resume at a time",
            )
        tracking.reopen(client, parent_id)  # RUNNING, in this process: a second resume is refused above
    return client.get_run(parent_id)


class SweepTracking(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the store and create (or reopen) the sweep's parent run, before any job. Hydra
        only warns when a callback raises, and would run every job: a sweep that cannot start
        exits here, in one line."""
        from rnnexp.config import ConfigError
        from rnnexp.store import masked_uri

        try:
            self._start(config)
        except ConfigError as err:
            print(f"rnnexp-train: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except Exception as err:  # the store failed under it: no job runs without its parent
            reason = masked_uri(" ".join(str(err).split()))[:300]
            print(
                f"rnnexp-train: error: the sweep could not start ({type(err).__name__}: {reason})",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1) from None

    def _start(self, config: DictConfig) -> None:
        from mlflow.entities import Param

        from hydra_plugins.rnnexp_span import span_sweeper
        from rnnexp import tracking
        from rnnexp.config import ConfigError, check_devices
        from rnnexp.store import RunRecord

        tracking.quiet_store_logs()
        _check_overrides(typed_overrides(config.hydra.overrides.task))
        if config.hydra.sweeper.get("_target_") == span_sweeper.TARGET:
            span_sweeper.check(config)
        if str(config.trainer.get("accelerator")) in ("gpu", "cuda", "mps"):  # every job would fail on it
            check_devices(str(config.trainer.accelerator), int(config.trainer.get("devices", 1)))
        tracking_cfg = OmegaConf.to_object(config.tracking)
        tracking_cfg.check()
        store = tracking_cfg.store
        store.hand_over_credentials()
        store.check_reachable()  # seconds, not minutes of retries against a store that is not there
        what = swept(config)
        client = store.client()
        sweep_dir = Path(config.hydra.sweep.dir)
        if config.get("resume") is not None:  # set by a config file: the command line is checked above
            raise ConfigError("resume", config.resume, RESUME_IN_A_SWEEP)
        if config.get("resume_sweep") is not None:
            run = _reopen_parent(client, store, str(config.resume_sweep))
            experiment = client.get_experiment(run.info.experiment_id).name
        else:
            _check_selection(config, store, client)
            store.mark_stale(client)  # runs whose process died since: not to be taken for live ones
            experiment = tracking_cfg.experiment or OmegaConf.get_type(config.task).name
            experiment_id = tracking.experiment_id(client, experiment, tracking_cfg)
            overrides = [tracking.masked_override(o) for o in typed_overrides(config.hydra.overrides.task)]
            run = client.create_run(
                experiment_id,
                run_name=sweep_name(what),
                tags=RunRecord(sweep=True, sweep_dir=str(sweep_dir.resolve()), **RunRecord.this_process()).to_tags(),
            )
        try:
            if config.get("resume_sweep") is not None:
                _stop_survivors(client, run.info.run_id)
                store.mark_stale(client)  # jobs of the old sweep that died without closing their run
            else:
                # a key given twice takes its last value, as in Hydra; MLflow refuses duplicate keys
                # (`+key` is the key; a name MLflow refuses, like `model@x`, stays in sweep_overrides.txt only)
                pairs = [o.split("=", 1) for o in overrides if "=" in o]
                given = {k.lstrip("+"): v for k, v in pairs if re.fullmatch(r"[\w\-. :/]+", k.lstrip("+"))}
                if given:
                    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in given.items()])
                client.log_text(run.info.run_id, "\n".join(overrides) + "\n", "sweep_overrides.txt")
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / PARENT_FILE).write_text(
                json.dumps(
                    {
                        "run_id": run.info.run_id,
                        "experiment": experiment,
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "swept": list(what),
                    }
                )
            )
            view = view_keys(config, what)
            tracking.sweep_view(client, run.info.experiment_id, run.info.run_id, *view)
        except Exception as err:  # Hydra only warns and goes on: the parent must not stay RUNNING
            tracking.end_run(client, run.info.run_id, err)
            raise
        if where := in_the_ui(store, run.info.experiment_id, run.info.run_id):
            print(f"sweep {run.info.run_id}: its runs in the UI as they end: {where}", flush=True)
        self.client, self.run_id, self.store, self.swept, self.view = client, run.info.run_id, store, what, view
        # Hydra ends a sweep whose job failed by raising, without calling on_multirun_end
        atexit.register(self._end, failed=True)
        _stop_on_sigterm(config.hydra.launcher.get("_target_"))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Free the job's objects, then record the sweep process's resident memory and open
        files as metrics of the parent run (step = job number): a leak shows as a slope. Jobs
        that a launcher runs in other processes (joblib, cluster) are not measured here."""
        _collect_garbage()
        if getattr(self, "run_id", None) is None or not Path("/proc/self/fd").is_dir():
            return
        from rnnexp import tracking

        rss_kb = next(
            int(line.split()[1])
            for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        tracking.log_metrics(
            self.client,
            self.run_id,
            {"sweep_rss_mb": rss_kb / 1024, "sweep_open_files": len(os.listdir("/proc/self/fd"))},
            step=int(config.hydra.job.num),
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._end(failed=False)

    def _end(self, failed: bool) -> None:
        if not hasattr(self, "client"):  # the sweep never got a parent run
            return
        info = self.client.get_run(self.run_id).info
        if info.status != "RUNNING":
            return
        from rnnexp import tracking
        from rnnexp.store import RunRecord, Store, write

        if failed:  # no job of it left RUNNING: its workers end with it, or their launcher cut them off
            _stop_survivors(self.client, self.run_id, wait_s=15)
            self.store.mark_stale(self.client)
        children = Store.children(self.client, self.client.get_run(self.run_id))
        finished = sum(c.info.status == "FINISHED" for c in children)
        tracking.log_metrics(self.client, self.run_id, {"children": len(children), "children_finished": finished})
        self.client.set_tag(self.run_id, "mlflow.runName", sweep_name(self.swept, finished, len(children) - finished))
        scores = sorted({m for m in (RunRecord.of(c).metric for c in children) if m})  # the tasks' own metrics
        if scores:
            tracking.sweep_view(self.client, info.experiment_id, self.run_id, *self.view, scores=scores)
        if failed:
            error = f"the sweep stopped: {len(children) - finished} job(s) did not finish"
            write(self.client, self.run_id, RunRecord(error=error))
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
        print(
            f"sweep {self.run_id} {'FAILED' if failed else 'FINISHED'}: {finished} of {len(children)} runs finished",
            flush=True,
        )
        print(next_steps(self.store, info.experiment_id, self.run_id, failed), flush=True)
