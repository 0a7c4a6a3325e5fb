"""`make profile`: where rnnexp-train's time goes against a plain loop, so that what is made
faster is what costs.

Two tables, from `cProfile`, written to `--out` (default: profile.md beside this file):

1. An epoch of rnnexp's training path against the plain PyTorch loop of `bench.py` (row 1), the
   same model, batches, optimizer and clipping: the seconds an epoch spends in each part, and
   what is left to Lightning's loop and hooks. Times are inclusive (a part's callees count in it)
   and profiled (cProfile slows Python-heavy code more than torch's kernels), so read them as
   shares, not as the benchmark's seconds.
2. A whole run's fixed cost (`rnnexp-train` in this process, one short epoch): imports, the
   command line's check, the store, building the data and model, the start record, the trainer,
   Lightning's sanity check, training, the test, the logged model, the end of the run.

    .venv/bin/python experiments/throughput/breakdown.py [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import compose_train, lightning_fit, plain_fit  # noqa: E402

from rnnexp.train import _quiet_libraries  # noqa: E402

# (label, file part, function name): inclusive seconds of the functions named so
EPOCH_PARTS = [
    ("batches: loading and collation", "torch/utils/data/dataloader.py", "__next__"),
    ("forward and loss (`training_step`)", "rnnexp/module.py", "training_step"),
    ("backward", "torch/_tensor.py", "backward"),
    ("gradient clipping", "torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
    ("optimizer update (Adam)", "torch/optim/adam.py", "adam"),
    ("validation loop", "loops/evaluation_loop.py", "run"),
    ("checkpoint saving", "torch/serialization.py", "save"),
]
EPOCH_DETAILS = [  # inside the parts above: what they hold
    ("of which model forward", "rnnexp/models/", "forward"),
    ("of which scoring (`_score`: loss, metric's pending batches)", "rnnexp/module.py", "_score"),
    ("of which epoch-end metrics (`_log_epoch`)", "rnnexp/module.py", "_log_epoch"),
    ("of which MLflow logging (`log_metrics`)", "rnnexp/logger.py", "log_metrics"),
]
RUN_PARTS = [
    ("imports (first use of each module)", "<frozen importlib._bootstrap>", "_find_and_load"),
    ("command-line check (`safety.check_command_line`)", "rnnexp/safety.py", "check_command_line"),
    ("store reachable, experiment, logger", "rnnexp/train.py", "_open_run"),
    ("data and model (`build`)", "rnnexp/train.py", "build"),
    ("start record: params, tags, dataset", "rnnexp/train.py", "_record_start"),
    ("trainer (`make_trainer`)", "rnnexp/train.py", "make_trainer"),
    ("Lightning's sanity check", "trainer/trainer.py", "_run_sanity_check"),
    ("training (`fit_loop.run`)", "loops/fit_loop.py", "run"),
    ("test (`Trainer.test`)", "trainer/trainer.py", "test"),
    ("logged model (`log_model`)", "rnnexp/logger.py", "log_model"),
    ("end of run (`tracking.end_run`)", "rnnexp/tracking.py", "end_run"),
]


def inclusive(stats: pstats.Stats, file_part: str, name: str) -> float:
    """Seconds spent in the functions `name` of files whose path holds `file_part`, callees
    included (cProfile counts a recursive function's outermost calls only)."""
    return sum(
        row[3]
        for (file, _, function), row in stats.stats.items()
        if file_part in file and function == name  # type: ignore[attr-defined]
    )


def profiled(fn) -> tuple[pstats.Stats, float]:
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(fn)
    return pstats.Stats(profile), time.perf_counter() - start


def epoch_table(quick: bool, tmp: Path) -> str:
    epochs = 2 if quick else 5
    size = ["task.train_size=256", "task.val_size=64", "task.test_size=64"] if quick else []
    lines = []
    for model in ("rnn_hidden", "mlp_window"):
        cfg = compose_train(
            f"model={model}", f"trainer.max_epochs={epochs}", f"tracking.uri=sqlite:///{tmp}/profile.db", *size
        )
        lightning_fit(cfg, tmp), plain_fit(cfg, tmp)  # warm: the first of each pays for imports and caches
        ours, ours_s = profiled(lambda cfg=cfg: lightning_fit(cfg, tmp))
        plain, plain_s = profiled(lambda cfg=cfg: plain_fit(cfg, tmp))
        fit = inclusive(ours, "trainer/trainer.py", "fit")
        lines += [
            f"\n`{model}` on `delayed_recall` (default sizes), {epochs} epochs, seconds an epoch under cProfile:\n",
            "| part | rnnexp-train | plain loop | rnnexp − plain |",
            "|---|---|---|---|",
        ]
        shown_ours = shown_plain = 0.0
        for label, file_part, name in EPOCH_PARTS:
            a = inclusive(ours, file_part, name) / epochs
            b = inclusive(plain, file_part, name) / epochs
            if label.startswith("forward"):  # the plain loop has no training_step: its model call and loss
                b = (inclusive(plain, "rnnexp/models/", "forward") + inclusive(plain, "rnnexp/tasks/", "loss")) / epochs
            if label.startswith("validation"):  # the plain loop validates inline: its model calls in eval
                b = float("nan")
            shown_ours += a
            shown_plain += 0 if b != b else b
            lines.append(
                f"| {label} | {a:.4f} | {'–' if b != b else f'{b:.4f}'} | {'' if b != b else f'{a - b:+.4f}'} |"
            )
        for label, file_part, name in EPOCH_DETAILS:
            a = inclusive(ours, file_part, name) / epochs
            lines.append(f"| &nbsp;&nbsp;{label} | {a:.4f} | | |")
        rest_ours = fit / epochs - shown_ours
        rest_plain = plain_s / epochs - shown_plain
        for label, a, b in (
            ("the rest: Lightning's loop and hooks / the plain loop's own", rest_ours, rest_plain),
            ("**an epoch** (`Trainer.fit` / the whole loop)", fit / epochs, plain_s / epochs),
        ):
            lines.append(f"| {label} | {a:.4f} | {b:.4f} | {a - b:+.4f} |")
    return "\n".join(lines)


def run_table(quick: bool, tmp: Path) -> str:
    from rnnexp import train

    argv = [
        "rnnexp-train",
        f"tracking.uri=sqlite:///{tmp}/run.db",
        f"hydra.run.dir={tmp}/run",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        *(["task.train_size=256", "task.val_size=64", "task.test_size=64"] if quick else []),
    ]
    saved = sys.argv
    sys.argv = argv
    try:
        stats, seconds = profiled(train.main)
    finally:
        sys.argv = saved
    total = inclusive(stats, "rnnexp/train.py", "main")
    lines = [
        "\nA whole run (`rnnexp-train`, the default run at one epoch, tracked, its model logged), in this process "
        "after its imports at start-up:\n",
        "| part | seconds | share |",
        "|---|---|---|",
    ]
    for label, file_part, name in RUN_PARTS:
        s = inclusive(stats, file_part, name)
        lines.append(f"| {label} | {s:.3f} | {s / total:.0%} |")
    lines.append(f"| **the run** (`rnnexp.train.main`) | {total:.3f} | 100% |")
    lines.append(
        "\nParts overlap where one calls another (a module imported when first used counts in imports "
        "and in the part that used it)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="breakdown", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that it works")
    parser.add_argument("--out", type=Path, default=HERE / "profile.md", help="where to write the tables")
    args = parser.parse_args(argv)
    _quiet_libraries()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        epoch = epoch_table(args.quick, tmp)
        run = run_table(args.quick, tmp)
    report = (
        f"Profiled {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, 1 torch thread"
        + (" (--quick: tiny sizes, not a measurement)" if args.quick else "")
        + ".\n"
        + epoch
        + "\n"
        + run
    )
    print(report)
    args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
