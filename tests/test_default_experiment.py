"""`make train`'s experiment, unchanged: tanh pattern 1 recalls a symbol 15 steps back, far
above chance, in well under a minute on 2 cores."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TRAIN


@pytest.mark.integration  # slow (40 epochs, about 40 s): make test-integration
@pytest.mark.new_store  # as on a fresh clone: a process of its own makes its store
def test_default_experiment_learns_far_above_chance(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run(
        [TRAIN, f"tracking.uri={store}", f"hydra.run.dir={tmp_path}/out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("delayed_recall").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["distance"] == "15" and run.data.tags["model"] == "rnn_hidden"
    assert run.data.metrics["chance_level"] == 0.125
    assert run.data.metrics["test/acc"] > 0.6  # measured 0.92 (seed 0)
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 40
