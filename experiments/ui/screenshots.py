"""`make ui-screenshots`: the MLflow UI over a small sweep, photographed by a real headless
Chromium (Debian's `chromium`), for "Comparing runs in the MLflow UI" in docs/tracking.md.

It trains a sweep of four short runs (tanh and GRU cells, two seeds) into a store of its own,
starts `mlflow ui` over it, and saves into this folder: the runs table as the link the sweep
prints opens it (its runs grouped by cell, each group's average above its seeds), a run's page
and its metric charts (per epoch), and the compare-runs page. Each page is opened as model
training (`?workflowType=machine_learning`, what rnnexp's links say).

    .venv/bin/python experiments/ui/screenshots.py [--out DIR]

`tests/test_integration.py` uses `sweep`, `serve`, `page` and `sweep_link` to check what the sweep's
link shows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MODE = "workflowType=machine_learning"
SIZES = [
    "task.length=20",
    "task.distance=6",
    "task.train_size=512",
    "task.val_size=128",
    "task.test_size=128",
    "trainer.max_epochs=8",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def sweep(folder: Path, experiment: str = "ui_demo") -> str:
    """Four short runs (tanh and GRU, seeds 0 and 1) as one sweep into `folder`/mlflow.db; the URI."""
    uri = f"sqlite:///{folder}/mlflow.db"
    proc = subprocess.run(
        [
            str(BIN / "rnnexp-train"),
            "-m",
            "model.cell=rnn,gru",
            "seed=0,1",
            *SIZES,
            f"tracking.uri={uri}",
            f"tracking.experiment={experiment}",
            f"tracking.artifacts={folder}/mlartifacts",
            f"hydra.sweep.dir={folder}/multirun",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep failed:\n{proc.stderr[-3000:]}")
    return uri


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(uri: str, timeout: float = 120.0) -> Iterator[str]:
    """`mlflow ui` over `uri` on a free local port, until the block ends: its base URL."""
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow ui did not answer on {base}")
            time.sleep(1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("no chromium: `apt-get install chromium` (Debian's package)")
    return found


def page(
    url: str,
    screenshot: Path | None = None,
    size: str = "1600,1100",
    wait_ms: int = 90000,
    until: str | None = None,
    tries: int = 4,
) -> str:
    """The page at `url` as headless Chromium renders it once its scripts have run for `wait_ms`
    of virtual time: its DOM; with `screenshot`, also a PNG of it. With `until`, rendered again
    (up to `tries` times) until the DOM holds that text: a busy server answers late."""
    flags = [
        chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={size}",
        f"--virtual-time-budget={wait_ms}",
        "--run-all-compositor-stages-before-draw",
    ]  # else the charts are still spinners when taken
    for _ in range(tries):
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=300).stdout
        if until is None or until in " ".join(re.sub(r"<[^>]+>", " ", dom).split()):  # in the text shown
            break
        time.sleep(5)
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=300, check=True)
    return dom


def runs_of(uri: str, experiment: str = "ui_demo") -> tuple[str, str, list[str]]:
    """(experiment id, the sweep's parent run id, its children's ids)."""
    from mlflow.tracking import MlflowClient

    from rnnexp.store import RunRecord

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    records = {r.info.run_id: RunRecord.of(r) for r in runs}
    (parent,) = [run_id for run_id, record in records.items() if record.sweep]
    return experiment_id, parent, [run_id for run_id, record in records.items() if record.parent_run == parent]


def sweep_link(experiment: str, parent: str) -> str:
    """The part after the UI's base URL of the link a sweep prints to its runs (its shared view)."""
    from rnnexp.tracking import ui_link

    return ui_link(experiment, view=parent).split("/", 3)[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go (default: beside this file)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        uri = sweep(Path(tmp))
        experiment, parent, children = runs_of(uri)
        views = {
            "runs_table.png": sweep_link(experiment, parent),
            "run_charts.png": f"#/experiments/{experiment}/runs/{children[0]}/model-metrics?{MODE}",
            "run_page.png": f"#/experiments/{experiment}/runs/{children[0]}?{MODE}",
            "compare_runs.png": f"#/compare-runs?runs={json.dumps(children)}&experiments={json.dumps([experiment])}"
            f"&{MODE}",
        }
        with serve(uri) as base:
            for name, view in views.items():
                page(f"{base}/{view}", args.out / name)
                print(f"{args.out / name}: {base}/{view}")


if __name__ == "__main__":
    main(sys.argv[1:])
