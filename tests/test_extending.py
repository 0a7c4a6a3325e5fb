"""docs/extending.md, followed to the letter on a copy of the project: the model it adds trains,
is tracked and is reported like the project's own."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, SHORT_RUN, run_command

GUIDE = ROOT / "docs" / "extending.md"


def _blocks() -> dict[str, str]:
    """The guide's code blocks, by the path its `<!-- guide: PATH -->` marker names."""
    found = re.findall(r"<!-- guide: (\S+) -->\n```\w*\n(.*?)```", GUIDE.read_text(), re.S)
    return dict(found)


def _follow_the_guide(project: Path) -> None:
    blocks = _blocks()
    assert set(blocks) == {"rnnexp/models/convolution.py", "rnnexp/config.py", "conf/model/causal_conv.yaml", "run"}
    for part in ("rnnexp", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "rnnexp/models/convolution.py").write_text(blocks["rnnexp/models/convolution.py"])
    (project / "conf/model/causal_conv.yaml").write_text(blocks["conf/model/causal_conv.yaml"])
    config = project / "rnnexp/config.py"
    text = config.read_text()
    end_of_models = re.search(r"^MODELS: dict.*?^}\n", text, re.S | re.M).end()  # "after MODELS"
    config.write_text(text[:end_of_models] + "\n\n" + blocks["rnnexp/config.py"] + text[end_of_models:])


def test_a_model_added_as_the_guide_says_trains_is_tracked_and_reported(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _follow_the_guide(project)
    env = {**os.environ, "PYTHONPATH": str(project)}
    store = f"sqlite:///{tmp_path}/mlflow.db"
    # the guide's first command, a real run: the window it sees (8 steps at 3 layers) covers distance 4
    (first, *_) = _blocks()["run"].splitlines()
    overrides = first.split()[1:]
    assert overrides == ["model=causal_conv", "model.layers=3", "task.distance=4"]
    common = [f"tracking.uri={store}", *[o for o in SHORT_RUN if "limit_train" not in o and "max_epochs" not in o]]

    def in_the_copy(module: str, *args: str) -> subprocess.CompletedProcess:
        """`python -m MODULE ARGS` with the copy's code, from tmp_path."""
        command = [sys.executable, "-m", module, *args]
        return run_command(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    proc = in_the_copy("rnnexp.train", *overrides, *common, "trainer.max_epochs=4", f"hydra.run.dir={tmp_path}/o")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("delayed_recall").experiment_id])
    assert run.data.tags["model"] == "causal_conv" and run.data.tags["pattern"] == "baseline"
    assert run.data.params["model.kernel"] == "2" and run.data.params["model.layers"] == "3"
    assert run.data.metrics["test/acc"] > 0.9  # it sees the symbol 4 steps back, and learns to copy it
    # sized by parameter count, and a bad value refused in one line naming what is allowed
    sized = in_the_copy("rnnexp.train", "model=causal_conv", "model.params=19592", "--cfg", "job")
    assert sized.returncode == 0 and "kernel: 2" in sized.stdout, sized.stderr
    bad = in_the_copy("rnnexp.train", "model=causal_conv", "model.kernel=1", f"tracking.uri={store}")
    assert bad.returncode == 2 and bad.stderr.strip() == "rnnexp-train: error: model.kernel=1 is not allowed: >= 2"
    # and the report gives it its row
    report = in_the_copy("rnnexp.report", "--uri", store, "--experiment", "delayed_recall", "--out", "r")
    assert report.returncode == 0, report.stderr[-2000:]
    (row,) = csv.DictReader(open(tmp_path / "r" / "results.csv"))
    assert row["model"] == "causal_conv" and row["pattern"] == "baseline"
