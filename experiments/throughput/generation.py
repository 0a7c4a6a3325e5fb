"""How long the synthetic tasks take to generate their data: N sequences of length about L per
task, the median of several repeats. Prints a Markdown table.

    .venv/bin/python experiments/throughput/generation.py [--n 100000] [--length 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rnnexp.tasks.grammar import NegatedSentiment, PronounReference
from rnnexp.tasks.synthetic import Adding, CopyMemory, DelayedRecall, RunningParity


def tasks(length: int) -> list:
    sizes = dict(train_size=1, val_size=1, test_size=1, batch_size=1)
    half = length // 2
    return [
        DelayedRecall(length=length, distance=half, **sizes),
        RunningParity(length=length, **sizes),
        CopyMemory(distance=max(1, length - 20), **sizes),
        Adding(length=length, distance=half, **sizes),
        PronounReference(distance=max(0, length - 11), **sizes),
        NegatedSentiment(length=length, distance=half, **sizes),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="sequences per task (default 100000)")
    parser.add_argument("--length", type=int, default=100, help="steps per sequence (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported (default 5)")
    args = parser.parse_args()
    print(f"| task | sequences | length | median s | sequences/s |\n|---|---|---|---|---|")
    for task in tasks(args.length):
        times = []
        for r in range(args.repeats):
            g = torch.Generator().manual_seed(r)
            start = time.perf_counter()
            x, _ = task.generate(args.n, g)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"| {task.name} | {len(x)} | {x.shape[1]} | {median:.3f} | {args.n / median:,.0f} |")


if __name__ == "__main__":
    main()
