"""Golden metrics: the exact final metrics of a handful of short, real runs at seed 0 on CPU, kept
in `tests/golden.yaml`, so that a change which moves a number cannot pass unnoticed.

Each configuration is a file in `tests/golden_conf/golden/` (each pattern and baseline once, a
gated cell, a per-sequence regression, the text pipeline on a file written here). They run as one
`rnnexp-train -m` sweep, with one torch thread, into a temporary store; every final metric the
run logged (as MLflow keeps it, bit for bit) is compared with the file.

    python -m tests.golden           compare, print a table of what moved; exit 1 if anything did
    python -m tests.golden --write   rewrite tests/golden.yaml (`make golden`): say why in the commit

Expected sources of change besides the code: the torch version and the thread count (a float
sum in another order), recorded beside the numbers, so a mismatch from another environment says so.
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

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.yaml"
CONF = HERE / "golden_conf"
CONFIGS = sorted(p.stem for p in (CONF / "golden").glob("*.yaml"))
THREADS = 1
NOT_COMPARED = ("wall_time_s",)  # a time, not a result


def environment() -> dict[str, str]:
    import torch

    return {"torch": str(torch.__version__), "threads": str(THREADS), "python": platform.python_version(),
            "machine": platform.machine()}


def measure(folder: Path) -> dict[str, dict[str, float]]:
    """Run every golden configuration in `folder`; -> {config: {metric: value}}."""
    from mlflow.tracking import MlflowClient

    from tests.test_real_data import _reviews

    _reviews(folder / "reviews.csv")
    store = f"sqlite:///{folder}/golden.db"
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), RNNEXP_GOLDEN_TEXT=str(folder / "reviews.csv"),
               RNNEXP_GOLDEN_CACHE=str(folder / "cache"))
    command = [str(Path(sys.executable).parent / "rnnexp-train"), "-m", "--config-dir", str(CONF),
               f"+golden={','.join(CONFIGS)}", f"tracking.uri={store}", f"hydra.sweep.dir={folder}/sweep"]
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the golden runs failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    client = MlflowClient(store)
    measured = {}
    for name in CONFIGS:
        (run,) = client.search_runs([client.get_experiment_by_name(f"golden-{name}").experiment_id],
                                    "attributes.status = 'FINISHED'")
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
    cells = [head] + [(n, k, repr(a) if isinstance(a, float) else str(a), repr(b) if isinstance(b, float) else str(b))
                      for n, k, a, b in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def report(golden: dict, measured: dict) -> str | None:
    """None when every metric matches; else the table, and what differs in the environment."""
    rows = differences(golden["metrics"], measured)
    if not rows:
        return None
    now, then = environment(), golden.get("environment", {})
    moved = [f"{k} {then.get(k, '?')} -> {now[k]}" for k in now if str(then.get(k)) != now[k]]
    note = (f"\nthe environment differs from the one that wrote tests/golden.yaml ({'; '.join(moved)}): "
            "expected to move numbers" if moved else
            "\nsame environment as tests/golden.yaml: the code changed what it computes. If on purpose, "
            "`make golden` rewrites the file; say why in the commit")
    return f"{len(rows)} golden metric(s) moved:\n{table(rows)}{note}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite tests/golden.yaml with what the code gives now")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        measured = measure(Path(tmp))
    if args.write:
        header = ("# Golden metrics (tests/golden.py): the exact final metrics of the runs in tests/golden_conf/,\n"
                  "# seed 0, CPU. Written by `make golden`; a commit that rewrites it says why the numbers moved.\n")
        GOLDEN.write_text(header + yaml.safe_dump({"environment": environment(), "metrics": measured}, sort_keys=False))
        print(f"wrote {GOLDEN.relative_to(HERE.parent)}: {len(measured)} configurations")
        return
    message = report(yaml.safe_load(GOLDEN.read_text()), measured)
    print(message or f"all {sum(len(m) for m in measured.values())} golden metrics match exactly")
    sys.exit(1 if message else 0)


if __name__ == "__main__":
    main()
