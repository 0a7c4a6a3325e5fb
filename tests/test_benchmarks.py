"""The benchmark scripts keep working (run at a tiny size; their figures are not asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_command


def test_data_benchmark_prints_a_row_per_task_and_tokenisation():
    proc = run_command(
        [
            sys.executable,
            "experiments/throughput/data.py",
            "--n",
            "200",
            "--length",
            "30",
            "--repeats",
            "1",
            "--mb",
            "0.05",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    generation, fresh, tokenisation = proc.stdout.split("\n\n")
    rows = [line for line in generation.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "delayed_recall",
        "running_parity",
        "copy_memory",
        "adding",
        "pronoun_reference",
        "negated_sentiment",
    ]
    assert all(r.split("|")[2].strip() == "200" for r in rows)
    assert "| cold" in tokenisation and "| warm" in tokenisation
    # what task.fresh=true adds to an epoch: one row per synthetic task, at its default train_size
    fresh_rows = [line.split("|") for line in fresh.splitlines()[2:]]
    assert [r[1].strip() for r in fresh_rows] == [r.split("|")[1].strip() for r in rows]
    assert all(r[2].strip() == "4096" and float(r[3]) > 0 for r in fresh_rows)


@pytest.mark.integration  # slow: make test-integration
def test_the_benchmark_prints_and_writes_every_row_at_a_tiny_size(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, "experiments/throughput/bench.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    assert table.strip() == proc.stdout.strip()
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert sorted({row[2] for row in rows}) == list("1234569")  # the compared rows; 7 and 8 are tables of their own
    for row in rows:
        cells = [c.strip() for c in row.split("|")[1:-1]]
        a, b, ratio = float(cells[2]), float(cells[4]), float(cells[5].rstrip("×"))
        assert a > 0 and b > 0 and abs(ratio - a / b) <= 0.01 * ratio + 0.01
        low, high = (float(x) for x in cells[6].split("–"))
        assert low <= high  # one repeat at --quick: the ratio itself
        assert all(float(c) > 0 for c in cells[7].split(" / "))  # cores busy, each side
        assert cells[9] in ("pass", "FAIL", "")  # a verdict wherever there is a target
        assert bool(cells[8]) == bool(cells[9])
    assert any("Lightning's `MLFlowLogger`, `synchronous=False`" in row for row in rows)
    assert any("beside one busy process" in row for row in rows)
    assert any("against the physical limit" in row for row in rows)
    # row 1 split in two, from the same timings: Lightning's floor and what rnnexp adds to it
    ratio = {r.split("|")[1].strip(): float(r.split("|")[6].strip().rstrip("×")) for r in rows}
    whole = ratio["1. an epoch, `rnn_hidden` on `delayed_recall` (default sizes)"]
    floor = ratio["1. `rnn_hidden`: Lightning's floor, the plain loop's work in a bare `Trainer`"]
    added = ratio["1. `rnn_hidden`: what rnnexp adds to Lightning's loop"]
    assert floor * added == pytest.approx(whole, abs=0.02)
    assert "as the length doubles" in table and "as the hidden size doubles" in table and "exponent" in table
    assert "generate `delayed_recall`" in table and "tokenise, cold" in table


def test_the_gpu_check_is_skipped_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: `make gpu-check` runs the check itself")
    proc = run_command(
        [sys.executable, "experiments/throughput/gpu_check.py"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == (
        "gpu-check: skipped: no CUDA device here (torch.cuda.is_available() is False)"
    ), proc.stderr


@pytest.mark.integration  # slow: make test-integration
def test_the_gpu_check_runs_every_check_with_the_cpu_standing_in(tmp_path):
    # where no GPU is lent, the CPU on both sides checks the script: every case agrees, runs twice
    # identically, resumes identically, and the timing table is written
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, "experiments/throughput/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| rnn_") or line.startswith("| mlp_")]
    assert len(rows) == 7 and all("| yes (0.00 of the tolerance) | yes |" in row for row in rows)
    assert "resumed: identical to the uninterrupted run" in table and "| hidden 512, length 1000" in table
    assert table.rstrip().endswith("Every check passed.")


@pytest.mark.integration  # slow: make test-integration
def test_the_profile_finds_every_part_of_an_epoch_and_of_a_run(tmp_path):
    out = tmp_path / "profile.md"
    proc = subprocess.run(
        [sys.executable, "experiments/throughput/breakdown.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        cells[1].strip(): [c.strip() for c in cells[2:-1]]
        for cells in (line.split("|") for line in out.read_text().splitlines() if line.startswith("| "))
    }
    # a part the profile no longer finds (a function renamed in Lightning or here) would read 0
    for part in ("batches: loading and collation", "backward", "optimizer update (Adam)", "validation loop"):
        assert float(rows[part][0]) > 0 and float(rows[part][1] if rows[part][1] != "–" else 1) > 0, part
    for part in (
        "data and model (`build`)",
        "start record: params, tags, dataset",
        "training (`fit_loop.run`)",
        "test (`Trainer.test`)",
        "Lightning's sanity check",
    ):
        assert float(rows[part][0]) > 0, part
