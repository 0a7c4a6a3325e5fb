"""The benchmark scripts keep working (run at a tiny size; their figures are not asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_generation_benchmark_prints_a_row_per_task():
    proc = subprocess.run([sys.executable, "experiments/throughput/generation.py", "--n", "200", "--length", "30",
                           "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "delayed_recall", "running_parity", "copy_memory", "adding", "pronoun_reference", "negated_sentiment"]
    assert all(r.split("|")[2].strip() == "200" for r in rows)
