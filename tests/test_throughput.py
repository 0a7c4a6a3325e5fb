"""What the speed-ups must not change: evaluation batching leaves every metric as it was, and a
run uses the torch threads it is given."""

from __future__ import annotations

import torch

from tests.conftest import runs_named, train_run


def test_the_default_run_scores_the_same_whatever_the_evaluation_batches(tmp_path):
    """The default run, two epochs on a smaller training split (its validation and test splits
    as they are), evaluated in batches of 64 (the training batch, as before task.eval_batch_size)
    and in the default's whole-split batch: identical metrics, bit for bit."""
    metrics = {}
    for eval_batch in (64, 1024):
        proc, client = train_run(
            tmp_path / str(eval_batch),
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "task.train_size=512",
            f"task.eval_batch_size={eval_batch}",
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        (run,) = runs_named(client, "delayed_recall")
        assert run.data.params["task.eval_batch_size"] == str(eval_batch) and run.data.params["threads"] == "1"
        # every epoch's value of every metric, not only the last
        metrics[eval_batch] = {
            k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
            for k in run.data.metrics
            if k != "wall_time_s"
        }
    assert {"val/loss", "val/acc", "test/loss", "test/acc"} <= set(metrics[64]) and len(metrics[64]["val/loss"]) == 2
    assert metrics[64] == metrics[1024]


def test_the_validation_split_is_one_batch_by_default():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from tests.conftest import ROOT

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train")
    task = instantiate(cfg.task, seed=0)
    assert len(task.train_dataloader()) == 4096 // 64 and len(task.val_dataloader()) == len(task.test_dataloader()) == 1


def test_a_run_sets_the_threads_it_is_given():
    from rnnexp.train import _set_threads

    before = torch.get_num_threads()
    try:
        _set_threads(1)
        assert torch.get_num_threads() == 1
        _set_threads(None)  # one per core, outside a joblib sweep
        assert torch.get_num_threads() == (__import__("os").cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


def test_a_sweeps_own_process_imports_neither_torch_nor_lightning():
    # with joblib, the sweep's process only creates the parent run: torch and Lightning (about
    # 8 s to import here) would only delay the workers, which import them for their jobs
    import subprocess
    import sys

    code = (
        "import sys, rnnexp.sweep, rnnexp.tracking, rnnexp.config; "
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning_fabric') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
