"""Golden metrics: the exact final metrics of a handful of short, real runs at seed 0 on CPU, kept
in `tests/golden.yaml`, so that a change which moves a number cannot pass unnoticed.

Each configuration is a file in `tests/golden_conf/golden/` (each pattern and baseline once, a
gated cell, a per-sequence regression, the text pipeline on a file written here). They run as one
`rnnexp-train -m` sweep, with one torch thread, into a temporary store; every final metric the
run logged (as MLflow keeps it, bit for bit) is compared with the file.

    python -m tests.golden           compare, print a table of what moved; exit 1 if anything did
    python -m tests.golden --write   rewrite tests/golden.yaml (`make golden`): say why in the commit
    python -m tests.golden --write --keep-others   add a new machine's numbers, the code unchanged

Besides the code, the last bits of a float depend on the torch version, the thread count and the
CPU (AVX2 and AVX512 kernels sum in other orders, and so may two AVX512 CPUs of other makes): the
numbers are kept per environment (an entry without a CPU model serves the CPUs that have none), and
where none are recorded the check says so (`make golden` adds them) rather than fail.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from rnnexp.tracking import cpu_model

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.yaml"
CONF = HERE / "golden_conf"
CONFIGS = sorted(p.stem for p in (CONF / "golden").glob("*.yaml"))
THREADS = 1
NOT_COMPARED = ("wall_time_s",)  # a time, not a result


def environment() -> dict[str, str]:
    """What, besides the code, decides the last bits of a float: the same code gives other
    numbers on a CPU whose kernels sum in another order (AVX2 against AVX512, and two AVX512
    CPUs of other makes), or with more threads."""
    import torch

    return {
        "torch": str(torch.__version__),
        "threads": str(THREADS),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),  # rnnexp.tracking's, as a run's tag `cpu` names it
    }


def recorded(golden: dict, env: dict[str, str]) -> dict | None:
    """The metrics recorded for environment `env`, if any: its own CPU model's, else those of an
    entry recorded before CPU models were kept (no `cpu_model`) that agrees on the rest."""
    entries = golden["environments"]
    exact = [e for e in entries if e["environment"] == env]
    older = [e for e in entries if "cpu_model" not in e["environment"] and e["environment"] == _without_model(env)]
    return next((entry["metrics"] for entry in exact + older), None)


def _without_model(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key != "cpu_model"}


def measure(folder: Path, run=subprocess.run) -> dict[str, dict[str, float]]:
    """Run every golden configuration in `folder` with `run` (subprocess.run's signature; the
    tests fork the process instead, tests/conftest.py's run_command); -> {config: {metric: value}}."""
    from mlflow.tracking import MlflowClient

    from tests.conftest import write_reviews

    write_reviews(folder / "reviews.csv")
    store = f"sqlite:///{folder}/golden.db"
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(THREADS),
        RNNEXP_GOLDEN_TEXT=str(folder / "reviews.csv"),
        RNNEXP_GOLDEN_CACHE=str(folder / "cache"),
    )
    command = [
        str(Path(sys.executable).parent / "rnnexp-train"),
        "-m",
        "--config-dir",
        str(CONF),
        f"+golden={','.join(CONFIGS)}",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={folder}/sweep",
    ]
    proc = run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the golden runs failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    client = MlflowClient(store)
    measured = {}
    for name in CONFIGS:
        (run,) = client.search_runs(
            [client.get_experiment_by_name(f"golden-{name}").experiment_id], "attributes.status = 'FINISHED'"
        )
        measured[name] = {k: v for k, v in sorted(run.data.metrics.items()) if k not in NOT_COMPARED}
    return measured


def differences(old: dict, new: dict) -> list[tuple[str, str, object, object]]:
    """(config, metric, old, new) for every value that is not exactly the same."""
    rows = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name, {}), new.get(name, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key, "-") != after.get(key, "-"):
                rows.append((name, key, before.get(key, "-"), after.get(key, "-")))
    return rows


def table(rows: list[tuple[str, str, object, object]]) -> str:
    head = ("config", "metric", "golden", "now")
    cells = [head] + [
        (n, k, repr(a) if isinstance(a, float) else str(a), repr(b) if isinstance(b, float) else str(b))
        for n, k, a, b in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells)


def report(expected: dict, measured: dict) -> str | None:
    """None when every metric matches; else the table."""
    rows = differences(expected, measured)
    if not rows:
        return None
    return (
        f"{len(rows)} golden metric(s) moved:\n{table(rows)}\nthe code changed what it computes, in the "
        "environment that wrote them. If on purpose, `make golden` rewrites them (and drops other CPUs' "
        "numbers); say why in the commit"
    )


def write(golden: dict, env: dict[str, str], measured: dict, keep_others: bool = False) -> None:
    """tests/golden.yaml with this environment's metrics replaced (or added). The others are
    dropped: a change that moves the numbers here moves them on other CPUs too, and they cannot be
    measured here (those machines skip the test until `make golden` runs on one). With
    `keep_others` (a new machine's numbers, the code unchanged), they are kept."""
    entries = [e for e in golden.get("environments", []) if keep_others or e["environment"] == env]
    mine = {"environment": env, "metrics": measured}
    at = next((i for i, e in enumerate(entries) if e["environment"] == env), None)
    if at is None:
        entries.append(mine)
    else:
        entries[at] = mine  # in place, so that the diff shows what moved
    header = (
        "# Golden metrics (tests/golden.py): the exact final metrics of the runs in tests/golden_conf/,\n"
        "# seed 0, CPU, per environment. Written by `make golden`; a commit that rewrites it says why.\n"
    )
    GOLDEN.write_text(header + yaml.safe_dump({"environments": entries}, sort_keys=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write",
        action="store_true",
        help="rewrite this environment's numbers with what the code gives now, dropping the other environments'",
    )
    parser.add_argument(
        "--keep-others",
        action="store_true",
        help="with --write: keep the other environments' numbers (a new machine's, the code unchanged)",
    )
    args = parser.parse_args(argv)
    golden = yaml.safe_load(GOLDEN.read_text()) if GOLDEN.exists() else {"environments": []}
    env = environment()
    if not args.write and (expected := recorded(golden, env)) is None:
        print(f"no golden metrics recorded for this environment ({env}): `make golden` adds them")
        sys.exit(2)
    with tempfile.TemporaryDirectory() as tmp:
        measured = measure(Path(tmp))
    if args.write:
        write(golden, env, measured, keep_others=args.keep_others)
        print(f"wrote {GOLDEN.relative_to(HERE.parent)}: {len(measured)} configurations for {env}")
        return
    message = report(expected, measured)
    print(message or f"all {sum(len(m) for m in measured.values())} golden metrics match exactly")
    sys.exit(1 if message else 0)


if __name__ == "__main__":
    main()
