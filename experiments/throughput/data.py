"""How long the tasks take to make their data, so that data never shows in a sweep. Prints three
Markdown tables: synthetic generation (N sequences of length about L per task, median of several
repeats); a fresh training set (`task.fresh=true`: what each epoch adds, at each task's default
sizes, held-out sequences drawn again); and tokenisation of a text file of about M megabytes
(cold: load, train the tokenizer, encode, cache; warm: from the cache).

    .venv/bin/python experiments/throughput/data.py [--n 100000] [--length 100] [--repeats 5] [--mb 10]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rnnexp import config
from rnnexp.tasks.grammar import NegatedSentiment, PronounReference
from rnnexp.tasks.synthetic import Adding, CopyMemory, DelayedRecall, RunningParity
from rnnexp.tasks.text import TextClassification


def tasks(length: int) -> list:
    sizes = dict(train_size=1, val_size=1, test_size=1, batch_size=1)
    half = length // 2
    return [
        DelayedRecall(**config.task_defaults(DelayedRecall, length=length, distance=half, **sizes)),
        RunningParity(**config.task_defaults(RunningParity, length=length, **sizes)),
        CopyMemory(**config.task_defaults(CopyMemory, distance=max(1, length - 20), **sizes)),
        Adding(**config.task_defaults(Adding, length=length, distance=half, **sizes)),
        PronounReference(**config.task_defaults(PronounReference, distance=max(0, length - 11), **sizes)),
        NegatedSentiment(**config.task_defaults(NegatedSentiment, length=length, distance=half, **sizes)),
    ]


def write_reviews(path: Path, megabytes: float, seed: int = 0) -> int:
    """A CSV of texts of Zipf-distributed made-up words (a 30,000-word vocabulary), 10 to 300
    words each, with binary labels, of about `megabytes`. Returns the number of rows."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(30_000)])
    size, rows = 0, 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        while size < megabytes * 1e6:
            words = vocabulary[np.minimum(rng.zipf(1.2, rng.integers(10, 300)), 30_000) - 1]
            text = " ".join(words)
            writer.writerow([text, rows % 2])
            size, rows = size + len(text) + 3, rows + 1
    return rows


def tokenisation(megabytes: float) -> list[tuple[str, float, int, float]]:
    """(label, file MB, texts, seconds) for a cold and a warm tokenisation of a made-up CSV."""
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.csv"
        rows = write_reviews(path, megabytes)
        mb = path.stat().st_size / 1e6
        for label in ("cold (load, train tokenizer, encode, cache)", "warm (from the cache)"):
            task = TextClassification(
                **config.task_defaults(
                    TextClassification, path=str(path), cache_dir=str(Path(tmp) / "cache"), max_length=256
                )
            )
            start = time.perf_counter()
            task.setup()
            rows_out.append((label, mb, rows, time.perf_counter() - start))
    return rows_out


def generation(n: int, length: int, repeats: int) -> list[tuple[str, int, int, float]]:
    """(task, sequences, length, median seconds) of generating `n` sequences, for each task."""
    out = []
    for task in tasks(length):
        times = []
        for r in range(repeats):
            g = torch.Generator().manual_seed(r)
            start = time.perf_counter()
            x, _ = task.generate(n, g)
            times.append(time.perf_counter() - start)
        out.append((task.name, len(x), x.shape[1], statistics.median(times)))
    return out


def fresh_sets(repeats: int) -> list[tuple[str, int, float]]:
    """(task, train_size, median seconds) of drawing one epoch's fresh training set, for each
    synthetic task at its default config: what `task.fresh=true` adds to every epoch."""
    out = []
    for cls in (DelayedRecall, RunningParity, CopyMemory, Adding, PronounReference, NegatedSentiment):
        task = cls(**config.task_defaults(cls, fresh=True))
        task.setup("fit")
        times = []
        for epoch in range(1, repeats + 1):
            start = time.perf_counter()
            task.training_set(epoch)
            times.append(time.perf_counter() - start)
        out.append((task.name, task.sizes["train"], statistics.median(times)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="sequences per task (default 100000)")
    parser.add_argument("--length", type=int, default=100, help="steps per sequence (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported (default 5)")
    parser.add_argument("--mb", type=float, default=10.0, help="size of the text file to tokenise (default 10)")
    args = parser.parse_args()
    print("| task | sequences | length | median s | sequences/s |\n|---|---|---|---|---|")
    for name, n, length, median in generation(args.n, args.length, args.repeats):
        print(f"| {name} | {n} | {length} | {median:.3f} | {n / median:,.0f} |")
    print("\n| fresh training set (task.fresh=true) | sequences | median s per epoch |\n|---|---|---|")
    for name, n, median in fresh_sets(args.repeats):
        print(f"| {name} | {n} | {median:.3f} |")
    print("\n| tokenisation | file MB | texts | seconds | MB/s |\n|---|---|---|---|---|")
    for label, mb, rows, seconds in tokenisation(args.mb):
        print(f"| {label} | {mb:.1f} | {rows} | {seconds:.2f} | {mb / seconds:.1f} |")


if __name__ == "__main__":
    main()
