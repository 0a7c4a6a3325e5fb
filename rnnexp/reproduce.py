"""`make reproduce-run RUN=<run id>` (`python -m rnnexp.reproduce RUN_ID`): re-run a logged run
and say whether its final metrics come out the same.

The run is re-made from what it logged: its command-line overrides (`overrides.yaml`) and its git
commit. When that commit is not the checked-out one, it is checked out into a temporary git
worktree and trained from there. The re-run is tracked as a new run in the same store, tagged
`reproduces=<run id>`. Its resolved config must equal the original's (tracking aside), and every
final metric (`test/...`, and the last value of every per-epoch metric) is compared exactly. On CPU,
with the logged seed and `trainer.deterministic=true` (the default), they are identical, with one
exception seen: in CI, a re-run's loss has come out a float32 rounding step or two (ulps) from the
logged one, its accuracies identical. Such a re-run is reported as matching *within float32
rounding* (each differing loss or MSE within `ULPS` float32 steps; accuracies and counts must
match exactly), never as exact.
Exit status: 0 when every metric matches (exactly or within rounding), 1 when one differs, 2 when
the run cannot be re-made.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from rnnexp.config import ConfigError
from rnnexp.safety import replayable

PROG = "rnnexp-reproduce"
ULPS = 4  # float32 steps a re-run's loss may be off by and still count as within rounding
ROUNDED = ("loss", "mse", "xent")  # sums of floats; an accuracy or a count is a ratio of whole numbers: exact
ROOT = Path(__file__).resolve().parent.parent


def _fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _final_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k not in ("wall_time_s",)}


def within_rounding(a: float, b: float) -> bool:
    """Whether two metrics logged from float32 values are at most `ULPS` float32 steps apart."""
    step = 2.0 ** (math.frexp(max(abs(a), abs(b)))[1] - 24)  # float32's spacing at this magnitude
    return abs(a - b) <= ULPS * step


def verdict(key: str, logged: float | None, again: float | None) -> str:
    """ "yes" when metric `key` came out the same, "within N ulps" for a loss off by float32
    rounding only, else "NO"."""
    if logged == again:
        return "yes"
    rounded = key.rsplit("/", 1)[-1].split("_")[0] in ROUNDED
    close = rounded and logged is not None and again is not None and within_rounding(logged, again)
    return f"within {ULPS} ulps" if close else "NO"


def _resolved_config(client, run_id: str, where: Path) -> dict:
    """The run's logged config, less where it was tracked and what it resumed (NOT_IDENTITY): a
    job of a resumed sweep names its sweep, which the re-run does not."""
    from rnnexp.store import NOT_IDENTITY

    path = client.download_artifacts(run_id, "config.yaml", str(where))
    config = yaml.safe_load(Path(path).read_text())
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}


def reproduce(run_id: str, uri: str) -> int:
    from rnnexp import store as stores
    from rnnexp.store import RunRecord, write
    from rnnexp.tracking import quiet_store_logs, this_cpu

    quiet_store_logs()
    try:
        store = stores.opened(uri)
    except ConfigError as err:
        _fail(str(err))
    client = store.client()
    try:
        original = client.get_run(run_id)
    except Exception:
        _fail(f"RUN={run_id!r}: no such run in {store.shown}")
    if original.info.status != "FINISHED":
        _fail(f"RUN={run_id!r} is {original.info.status}: only a FINISHED run has final metrics to match")
    record = RunRecord.of(original)
    commit = record.git_commit or "unknown"
    with tempfile.TemporaryDirectory() as tmp:
        overrides = yaml.safe_load(Path(client.download_artifacts(run_id, "overrides.yaml", tmp)).read_text()) or []
        try:  # checked here, before any process starts: the store may have been altered
            kept = replayable(overrides if isinstance(overrides, list) else [overrides], f"RUN={run_id} overrides.yaml")
        except ConfigError as err:
            _fail(str(err))
        experiment = client.get_experiment(original.info.experiment_id).name
        command = [
            sys.executable,
            "-m",
            "rnnexp.train",
            *kept,
            # from the environment: a database URL's password would show in `ps` on the command line
            "tracking.uri=${oc.env:RNNEXP_REPRODUCE_STORE}",
            f"tracking.experiment={experiment}",
            f"hydra.run.dir={tmp}/run",
        ]
        source, worktree = ROOT, None
        if commit != "unknown" and commit != _git("rev-parse", "HEAD"):
            worktree = Path(tmp) / "source"
            try:
                _git("worktree", "add", "--detach", str(worktree), commit)
            except subprocess.CalledProcessError as err:
                _fail(
                    f"RUN={run_id!r} was made at commit {commit}, which this repository cannot check out "
                    f"({err.stderr.strip()})"
                )
            source = worktree
        if record.git_dirty == "true":
            print(
                f"{PROG}: note: the run was made from a tree with uncommitted changes; re-making it from "
                f"commit {commit[:12]}",
                file=sys.stderr,
            )
        print(f"re-making run {run_id} from commit {commit[:12]}: rnnexp-train {' '.join(kept)}", flush=True)
        env = dict(os.environ, PYTHONPATH=str(source), RNNEXP_REPRODUCE_STORE=store.uri)
        try:
            proc = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
        finally:
            if worktree is not None:
                _git("worktree", "remove", "--force", str(worktree))
        match = re.search(r"^run ([0-9a-f]{32}) FINISHED", proc.stdout, re.MULTILINE)
        if proc.returncode != 0 or match is None:
            _fail(f"the re-run failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        again = client.get_run(match.group(1))
        # the re-run ran here, whatever its commit logs (one from before the tag logs no CPU)
        here = this_cpu()
        write(client, again.info.run_id, RunRecord(reproduces=run_id, cpu=here))
        same_config = _resolved_config(client, run_id, Path(tmp) / "a") == _resolved_config(
            client, again.info.run_id, Path(tmp) / "b"
        )

    before, after = _final_metrics(original), _final_metrics(again)
    keys = sorted(set(before) | set(after))
    shown = {k: (repr(before.get(k, "-")), repr(after.get(k, "-"))) for k in keys}
    w = max(len(k) for k in keys), max(len(v) for pair in shown.values() for v in pair)

    verdicts = {key: verdict(key, before.get(key), after.get(key)) for key in keys}
    print(f"\n{'metric':<{w[0]}}  {'logged':>{w[1]}}  {'re-run':>{w[1]}}  same")
    for key in keys:
        a, b = shown[key]
        print(f"{key:<{w[0]}}  {a:>{w[1]}}  {b:>{w[1]}}  {verdicts[key]}")
    metrics_exact = all(v == "yes" for v in verdicts.values())
    metrics_rounded = not metrics_exact and "NO" not in verdicts.values()
    exact, rounding = same_config and metrics_exact, same_config and metrics_rounded
    reproduced = "exactly" if exact else "within_rounding" if rounding else "no"
    write(client, again.info.run_id, RunRecord(reproduced_exactly=exact, reproduced=reproduced))
    outcome = (
        "every metric matches exactly"
        if metrics_exact
        else f"every metric matches within float32 rounding ({sum(v != 'yes' for v in verdicts.values())} "
        f"differ by at most {ULPS} ulps)"
        if metrics_rounded
        else "the metrics differ"
    )
    print(f"\nconfig {'identical' if same_config else 'DIFFERS'}; {outcome} (re-run: {again.info.run_id})")
    if not metrics_exact:
        print(_cpu_note(record.cpu, here))
    return 0 if exact or rounding else 1


def _cpu_note(before: str | None, after: str) -> str:
    """Where metrics differ: whether the CPUs did. Float rounding can differ between CPUs
    (rnnexp.tracking.this_cpu), and a long run's small differences grow epoch by epoch. The
    logged value is a tag anyone can edit: printed on one line, as text."""
    if before is None:
        return "the run does not say which CPU made it (no tag cpu: it is older than that tag)"
    before = " ".join(before.split())
    if before != after:
        return (
            f"the CPUs differ: the run was made on {before}, the re-run on {after}; float rounding can differ "
            "between CPUs, and over many epochs a seed's trajectory diverges: re-make it on the run's CPU to compare"
        )
    return f"both ran on {before}"


def main(argv: list[str] | None = None) -> None:
    from rnnexp.store import uri_option

    parser = argparse.ArgumentParser(
        prog=PROG, description="Re-run a logged run and compare its final metrics.", parents=[uri_option()]
    )
    parser.add_argument("run_id", help="the MLflow run id of a FINISHED run")
    args = parser.parse_args(argv)
    sys.exit(reproduce(args.run_id, args.uri))


if __name__ == "__main__":
    main()
