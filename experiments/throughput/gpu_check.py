"""`make gpu-check`: does rnnexp train on a GPU as it does on the CPU, and when does the GPU pay?

On a machine with CUDA, in one run:

1. **Agreement.** Each pattern and baseline trains a few epochs from seed 0 on the CPU and on the
   GPU (`trainer.accelerator=gpu`); their final test metrics must agree within TOLERANCE (the
   kernels sum in other orders, so bit-for-bit equality is not expected across devices).
2. **Repeatability.** The same GPU run twice: identical metrics, or the table says which differ
   (`trainer.deterministic=true` is the default; cuDNN's RNN kernels are where it could fail).
3. **Resume.** A GPU run interrupted (SIGINT) after its first checkpoint and resumed
   (`resume=<run id>`) ends with the metrics of the uninterrupted run (same tolerance as 2).
4. **Epoch time** on each device, at the default sizes and at hidden 512 / length 1000.

It writes the tables to `--out` (default: gpu.md beside this file) and exits 1 if a check fails.
Without CUDA it says it was skipped and exits 0.

    .venv/bin/python experiments/throughput/gpu_check.py [--out FILE] [--device cpu] [--quick]

`--device cpu` puts the CPU on both sides (a check of this script where no GPU is lent; the
numbers then say nothing about GPUs). `--quick` trains on fewer, shorter sequences.
"""

from __future__ import annotations

import argparse
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN = str(Path(sys.executable).parent / "rnnexp-train")
# |gpu - cpu| allowed after a few epochs: accuracy in absolute terms, a loss relative to its value
TOLERANCE = {"acc": 0.02, "loss": 0.02}
# every pattern and baseline, each on a task it serves
CASES = [
    ("rnn_hidden", "delayed_recall", []),
    ("rnn_hidden", "delayed_recall", ["model.cell=gru"]),
    ("rnn_hidden", "delayed_recall", ["model.cell=lstm"]),
    ("rnn_output", "delayed_recall", []),
    ("rnn_final", "pronoun_reference", []),
    ("mlp_window", "delayed_recall", []),
    ("mlp_bag", "pronoun_reference", []),
]


def short(quick: bool) -> list[str]:
    sizes = (256, 64, 64) if quick else (2048, 256, 256)
    return [
        f"task.train_size={sizes[0]}",
        f"task.val_size={sizes[1]}",
        f"task.test_size={sizes[2]}",
        "task.distance=4",
        f"trainer.max_epochs={2 if quick else 5}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


def train(folder: Path, name: str, overrides: list[str], interrupt: bool = False) -> dict[str, float]:
    """One rnnexp-train run into `folder`'s store; its final test metrics (and, for `interrupt`,
    stopped by SIGINT once its first checkpoint is saved, then resumed)."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{folder}/mlflow.db"
    command = [
        TRAIN,
        *overrides,
        f"tracking.uri={store}",
        f"tracking.experiment={name}",
        f"hydra.run.dir={folder}/{name}",
    ]
    if interrupt:
        proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and not (folder / name / "checkpoints" / "last.ckpt").exists()
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    else:
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    if interrupt:
        resumed = subprocess.run(
            [TRAIN, f"resume={run.info.run_id}", f"tracking.uri={store}", f"hydra.run.dir={folder}/{name}-resumed"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if resumed.returncode != 0:
            raise RuntimeError(f"resuming {name} failed (exit {resumed.returncode}): {resumed.stderr[-2000:]}")
        run = client.get_run(run.info.run_id)
    return {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}


def agree(a: dict[str, float], b: dict[str, float]) -> tuple[bool, float]:
    """Whether two runs' test metrics agree within TOLERANCE; and the largest gap (as allowed: 1.0 is the limit)."""
    worst = 0.0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            return False, float("inf")
        kind = "loss" if "loss" in key or key.endswith(("mse", "xent", "bpc")) else "acc"
        limit = TOLERANCE[kind] * (max(abs(a[key]), 1e-8) if kind == "loss" else 1.0)
        worst = max(worst, abs(a[key] - b[key]) / limit)
    return worst <= 1.0, worst


def epoch_seconds(device: str, overrides: list[str], folder: Path) -> float:
    """Median seconds per epoch (after the first) of rnnexp's own training path on `device`."""
    sys.path.insert(0, str(HERE))
    from bench import compose_train, lightning_fit  # beside this file

    times, _ = lightning_fit(
        compose_train(f"trainer.accelerator={device}", f"tracking.uri=sqlite:///{folder}/time.db", *overrides), folder
    )
    return statistics.median(times[1:] or times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "gpu.md", help="where the tables go (default: gpu.md here)")
    parser.add_argument(
        "--device",
        default="gpu",
        choices=["gpu", "cpu"],
        help="the device checked against the CPU (cpu: a check of this script)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter sequences")
    args = parser.parse_args(argv)
    import torch

    if args.device == "gpu" and not torch.cuda.is_available():
        print("gpu-check: skipped: no CUDA device here (torch.cuda.is_available() is False)")
        return
    device = args.device
    where = torch.cuda.get_device_name(0) if device == "gpu" else f"CPU ({platform.machine()}), as a stand-in"
    lines = [
        f"# GPU check: {where} against the CPU",
        "",
        f"torch {torch.__version__}; {'quick sizes' if args.quick else 'checked sizes'}; tolerance: accuracy "
        f"±{TOLERANCE['acc']}, losses ±{TOLERANCE['loss']:.0%}.",
        "",
        f"| model | task | CPU test metrics | {device} test metrics | agree | {device} twice: identical |",
        "|---|---|---|---|---|---|",
    ]
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, (model, task, extra) in enumerate(CASES):
            overrides = [f"model={model}", f"task={task}", *extra, *short(args.quick)]
            cpu = train(folder, f"cpu{i}", [*overrides, "trainer.accelerator=cpu"])
            gpu = train(folder, f"dev{i}", [*overrides, f"trainer.accelerator={device}"])
            again = train(folder, f"again{i}", [*overrides, f"trainer.accelerator={device}"])
            ok, worst = agree(cpu, gpu)
            same = gpu == again
            label = " ".join([model, *extra])
            failed += [f"{label}: {device} against CPU"] * (not ok) + [f"{label}: {device} twice"] * (not same)
            show = lambda m: ", ".join(f"{k.removeprefix('test/')} {v:.4f}" for k, v in sorted(m.items()))  # noqa: E731
            lines.append(
                f"| {label} | {task} | {show(cpu)} | {show(gpu)} | {'yes' if ok else 'NO'} "
                f"({worst:.2f} of the tolerance) | {'yes' if same else 'NO: ' + show(again)} |"
            )
        overrides = ["model=rnn_hidden", "task=delayed_recall", *short(args.quick), f"trainer.accelerator={device}"]
        whole = train(folder, "whole", overrides)
        resumed = train(folder, "resumed", overrides, interrupt=True)
        same = resumed == whole
        ok, worst = agree(whole, resumed)
        failed += ["resume"] * (not ok)
        lines += [
            "",
            f"A {device} run interrupted after its first checkpoint and resumed: "
            f"{'identical to' if same else 'within the tolerance of' if ok else 'NOT within the tolerance of'} "
            f"the uninterrupted run ({worst:.2f} of the tolerance).",
            "",
            f"| seconds per epoch (rnn_hidden, delayed_recall) | CPU | {device} | CPU / {device} |",
            "|---|---|---|---|",
        ]
        sizes = {
            "default sizes (hidden 64, length 40)": [],
            "hidden 512, length 1000": [
                "model.hidden_size=512",
                "task.length=1000",
                "task.train_size=512",
                "task.val_size=64",
                "task.test_size=64",
            ],
        }
        for what, extra in sizes.items():
            if args.quick:
                what, extra = (
                    f"{what} (quick: length 100, 256 sequences)",
                    [*extra, "task.train_size=256", "task.length=100"],
                )
            extra = [*extra, "trainer.max_epochs=3"]
            cpu_s = epoch_seconds("cpu", extra, folder)
            dev_s = epoch_seconds(device, extra, folder)
            lines.append(f"| {what} | {cpu_s:.3f} | {dev_s:.3f} | {cpu_s / dev_s:.2f}× |")
    lines += ["", "Failed: " + "; ".join(failed) if failed else "Every check passed."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
