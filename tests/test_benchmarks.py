"""The benchmark scripts keep working (run at a tiny size; their figures are not asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_data_benchmark_prints_a_row_per_task_and_tokenisation():
    proc = subprocess.run([sys.executable, "experiments/throughput/data.py", "--n", "200", "--length", "30",
                           "--repeats", "1", "--mb", "0.05"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    generation, tokenisation = proc.stdout.split("\n\n")
    rows = [line for line in generation.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "delayed_recall", "running_parity", "copy_memory", "adding", "pronoun_reference", "negated_sentiment"]
    assert all(r.split("|")[2].strip() == "200" for r in rows)
    assert "| cold" in tokenisation and "| warm" in tokenisation
