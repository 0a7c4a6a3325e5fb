"""rnnexp-eval: a trained run's best checkpoint, evaluated on its own task or another distance,
logged as a run beside it; SequenceModule.load_from_checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import BIN, TRAIN, run_command

REPORT = str(BIN / "rnnexp-report")

TINY = [
    "model.cell=gru",
    "task.length=12",
    "task.distance=3",
    "task.train_size=256",
    "task.val_size=128",
    "task.test_size=128",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "tracking.log_model=true",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run: (folder, store URI, client, the run)."""
    tmp = tmp_path_factory.mktemp("eval")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client, (run,) = _train_one(tmp, uri, "delayed_recall", *TINY)
    return tmp, uri, client, run


def _eval(tmp: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    return run_command(
        [sys.executable, "-m", "rnnexp.evaluation", "--uri", uri, *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _train_one(tmp_path: Path, uri: str, experiment: str, *overrides: str, out: str = "out"):
    """One short training run into `uri`: the client, and the runs of `experiment` (latest first)."""
    proc = run_command(
        [TRAIN, f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/{out}", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def _evaluations(client, run) -> list:
    return client.search_runs([run.info.experiment_id], f"tags.evaluated_run = '{run.info.run_id}'")


def test_the_checkpoint_loads_back_with_its_config_and_gives_the_trained_outputs(trained):
    from rnnexp.module import SequenceModule

    tmp, _, _, run = trained
    (best,) = [p for p in (tmp / "out" / "checkpoints").glob("epoch=*.ckpt")]
    torch.manual_seed(5)
    stream = torch.get_rng_state()
    module = SequenceModule.load_from_checkpoint(best, weights_only=True)
    assert torch.equal(torch.get_rng_state(), stream)  # loading draws nothing from the caller's random stream
    assert type(module.model).__name__ == "RNNHidden" and module.model.recurrence.hidden_size == 64
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())
    x = torch.randint(8, (4, 12))
    twin = SequenceModule.load_from_checkpoint(best, weights_only=True)
    assert torch.equal(module(x), twin(x)) and module(x).shape == (4, 12, 8)
    assert not any(key.startswith("config") for key in run.data.params)  # hparams stay out of the run's params


def test_eval_on_the_runs_own_task_reproduces_its_test_metrics_exactly(trained):
    tmp, uri, client, run = trained
    proc = _eval(tmp, uri, "--run", run.info.run_id)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (evaluation,) = _evaluations(client, run)
    for key in ("acc", "loss"):
        assert evaluation.data.metrics[f"eval/{key}"] == run.data.metrics[f"test/{key}"], key
    assert evaluation.data.metrics["chance_level"] == run.data.metrics["chance_level"]
    assert evaluation.data.tags["mlflow.parentRunId"] == run.info.run_id and evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["mlflow.runName"] == f"{run.data.tags['mlflow.runName']} @ own task"
    # named for what it is; its experiment opens in the UI as model training
    assert (
        run.data.tags["mlflow.runName"] == "rnn_hidden-gru-delayed_recall-d3-h64-T12-train_size256-val_size128-"
        "test_size128-max_epochs3-s0"
    )
    kind = client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"


def test_eval_at_another_distance_logs_a_linked_run_with_that_distance(trained):
    tmp, uri, client, run = trained
    before = {r.info.run_id for r in _evaluations(client, run)}
    proc = _eval(tmp, uri, "--run", run.info.run_id, "task.distance=6", "seed=7")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (evaluation,) = [r for r in _evaluations(client, run) if r.info.run_id not in before]
    assert evaluation.data.tags["evaluated_with"] == "seed=7 task.distance=6"  # sorted: one spelling
    assert evaluation.data.tags["distance"] == "6" and evaluation.data.params["task.distance"] == "6"
    # the trained value beside the new one; the network's seed kept, the data's apart
    assert (
        evaluation.data.params["trained.task.distance"] == "3" and evaluation.data.params["trained.task.length"] == "12"
    )
    assert evaluation.data.params["seed"] == run.data.params["seed"] and evaluation.data.params["eval.seed"] == "7"
    assert evaluation.data.tags["evaluation"] == "true"
    assert 0.0 <= evaluation.data.metrics["eval/acc"] <= 1.0 and evaluation.data.metrics["chance_level"] == 0.125
    assert evaluation.data.metrics["n_eval_scored"] == 128 * (12 - 6)  # the steps with a symbol 6 back
    assert f"eval/acc       {evaluation.data.metrics['eval/acc']:.4f}" in proc.stdout


@pytest.mark.parametrize(
    "override,message",
    [
        ("task.symbols=16", "task.symbols=16 changes the model's shapes (vocab_size 8 -> 16, n_classes 8 -> 16)"),
        ("model.hidden_size=8", "model.hidden_size='8' is not allowed at evaluation: the model is the trained one"),
        ("task.distanse=4", "task.distanse='4' is not allowed: task.distanse is not a key of task delayed_recall"),
        ("task._target_=os.system", "task._target_='os.system' is not allowed: task._target_ is not a key"),
        ("task.distance=20", "task.distance=20 is not allowed: 0 <= distance < task.length (12)"),
        ("task.distance=4 task.distance=5", "task.distance is given twice (task.distance=4 and task.distance=5)"),
    ],
)
def test_an_override_that_changes_the_model_or_is_not_the_tasks_is_one_line_and_logs_nothing(
    trained, override, message
):
    tmp, uri, client, run = trained
    before = len(client.search_runs([run.info.experiment_id]))
    proc = _eval(tmp, uri, "--run", run.info.run_id, *override.split())
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("rnnexp-eval: error: "), proc.stderr
    assert message in lines[0], lines[0]
    assert len(client.search_runs([run.info.experiment_id])) == before


def test_a_whole_experiment_is_evaluated_once_per_override_and_reported(trained):
    tmp, uri, client, run = trained
    # the second time, in another order, the run is skipped: already evaluated with these overrides
    for overrides in (["task.length=24", "task.test_size=64"], ["task.test_size=64", "task.length=24"]):
        proc = _eval(tmp, uri, "--experiment", "delayed_recall", *overrides)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 skipped (done before)" in proc.stdout
    with_ = "task.length=24 task.test_size=64"
    assert len([r for r in _evaluations(client, run) if r.data.tags["evaluated_with"] == with_]) == 1
    assert _eval(tmp, uri, "--run", run.info.run_id).returncode == 0  # at its own length too: task.length varies

    def report(out: str, *more: str):
        command = [REPORT, "--experiment", "delayed_recall", "--uri", uri, "--out", str(tmp / out), *more]
        return run_command(command, capture_output=True, text=True, timeout=300)

    evaluated = report("report", "--evaluations")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "task.length" in evaluated.stdout.splitlines()[0] and "evaluation runs of rnnexp-eval" in evaluated.stdout
    plain = report("plain")
    assert plain.returncode == 0 and "evaluation run(s) of rnnexp-eval left out" in plain.stdout
    assert "1 variants (1-1 seeds) from 1 runs" in plain.stdout


def test_the_logged_model_loads_back_with_mlflow_and_gives_the_checkpoints_outputs(trained):
    import mlflow.pytorch

    from rnnexp.module import SequenceModule

    tmp, uri, client, run = trained
    mlflow.set_tracking_uri(uri)
    (logged,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert logged.source_run_id == run.info.run_id and run.data.tags["logged_model"] == f"models:/{logged.model_id}"
    loaded = mlflow.pytorch.load_model(run.data.tags["logged_model"])
    (best,) = [p for p in (tmp / "out" / "checkpoints").glob("epoch=*.ckpt")]
    module = SequenceModule.load_from_checkpoint(best, weights_only=True).eval()
    x = torch.randint(8, (5, 12))  # any batch size, the trained length
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))
    assert mlflow.models.get_model_info(run.data.tags["logged_model"]).signature.inputs.to_dict()[0]["tensor-spec"] == {
        "dtype": "int64",
        "shape": (-1, 12),
    }


def test_tracking_log_model_false_logs_no_model(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_command(
        [
            TRAIN,
            f"tracking.uri={uri}",
            f"hydra.run.dir={tmp_path}/out",
            *TINY[:-1],
            "trainer.max_epochs=1",
            "tracking.log_model=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import mlflow

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("delayed_recall").experiment_id])
    mlflow.set_tracking_uri(uri)
    assert mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list") == []
    assert "logged_model" not in run.data.tags and run.info.status == "FINISHED"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU evaluates on it")
def test_a_device_the_machine_lacks_is_one_line_and_logs_nothing(trained):
    tmp, uri, client, run = trained
    before = len(client.search_runs([run.info.experiment_id]))
    proc = _eval(tmp, uri, "--run", run.info.run_id, "trainer.accelerator=gpu")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("rnnexp-eval: error: trainer.accelerator=gpu (trainer.precision=32-true) is not allowed")
    assert len(client.search_runs([run.info.experiment_id])) == before


def test_a_checkpoint_naming_other_code_or_a_huge_model_is_one_line(trained, tmp_path):
    from rnnexp.evaluation import EvalError, _check_model

    tmp, _, _, run = trained
    (best,) = [p for p in (tmp / "out" / "checkpoints").glob("epoch=*.ckpt")]
    model = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]["config"]["model"]
    _check_model(model, "r")  # as trained: fine
    with pytest.raises(EvalError, match="names model._target_='os.system', not one of rnnexp's models"):
        _check_model({**model, "_target_": "os.system"}, "r")
    with pytest.raises(EvalError, match="model.hidden_size"):
        _check_model({**model, "hidden_size": "many"}, "r")
    with pytest.raises(EvalError, match="model.dropout=5.0 is not allowed"):
        _check_model({**model, "dropout": 5.0}, "r")
    # a size the weights do not have (a huge one would be allocated): counted, not built
    from rnnexp.evaluation import _checkpoint_config, check

    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    for size in (128, 1_000_000):
        checkpoint["hyper_parameters"]["config"]["model"]["hidden_size"] = size
        torch.save(checkpoint, tmp_path / "tampered.ckpt")
        saved = _checkpoint_config(tmp_path / "tampered.ckpt", "r")
        assert saved["_weights"] == sum(
            p.numel() for k, p in checkpoint["state_dict"].items() if k.startswith("model.")
        )
    import types

    folder = types.SimpleNamespace(
        info=types.SimpleNamespace(run_id="r"), data=types.SimpleNamespace(tags={"checkpoint_dir": str(tmp_path)})
    )
    (tmp_path / "tampered.ckpt").rename(tmp_path / "epoch=0-step=1.ckpt")
    with pytest.raises(EvalError, match="its model config makes .* parameters, its weights hold"):
        check(None, folder, {}, tmp_path)


@pytest.mark.parametrize("mode,best", [("min", "epoch=7-step=64"), ("max", "epoch=1-step=16")])
def test_without_its_folder_the_best_logged_checkpoint_is_the_best_scored_not_the_first(tmp_path, mode, best):
    # a resumed run's artifacts: its first attempt's best (epoch 1) and the better one after resuming (epoch 7)
    import yaml

    from rnnexp.evaluation import best_checkpoint

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = client.create_run(client.create_experiment("e", artifact_location=str(tmp_path / "art"))).info.run_id
    for stem, score in (("epoch=1-step=16", 0.9), ("epoch=7-step=64", 0.4), ("last", 0.1)):
        folder = tmp_path / stem
        folder.mkdir()
        (folder / f"{stem}.ckpt").write_bytes(b"weights")
        (folder / "metadata.yaml").write_text(yaml.safe_dump({"score": score, "Checkpoint": {"mode": mode}}))
        client.log_artifacts(run_id, str(folder), stem)
    run = client.get_run(run_id)  # no checkpoint_dir tag: its folder is gone
    assert best_checkpoint(client, run, tmp_path / "down").name == f"{best}.ckpt"


def test_a_run_sized_by_model_params_is_evaluated_at_its_solved_size(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sized = [o for o in TINY if not o.startswith(("trainer.max_epochs", "tracking.log_model"))]
    client, (run,) = _train_one(
        tmp_path, uri, "delayed_recall", *sized, "model.cell=lstm", "model.params=19592", "trainer.max_epochs=1"
    )
    assert run.data.params["model.hidden_size"] != "64"  # solved from model.params: not the default width
    evaluated = _eval(tmp_path, uri, "--run", run.info.run_id, "task.distance=4")
    assert evaluated.returncode == 0, evaluated.stderr
    (evaluation,) = _evaluations(client, run)
    assert evaluation.data.params["model.hidden_size"] == run.data.params["model.hidden_size"]
    # a second run, at distance 8: an experiment-wide override that one of them cannot take logs nothing
    _train_one(tmp_path, uri, "delayed_recall", *sized, "task.distance=8", "trainer.max_epochs=1", out="out2")
    before = len(client.search_runs([run.info.experiment_id]))
    refused = _eval(tmp_path, uri, "--experiment", "delayed_recall", "task.length=6")
    assert refused.returncode == 2 and "task.distance=8 is not allowed" in refused.stderr, refused.stderr
    assert len(client.search_runs([run.info.experiment_id])) == before


def test_a_char_lm_run_is_evaluated_though_its_shapes_come_from_its_data(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    client, (run,) = _train_one(
        tmp_path, uri, "char_lm", "task=char_lm", f"task.path={text}", "task.length=16", "trainer=smoke"
    )
    evaluated = _eval(tmp_path, uri, "--run", run.info.run_id, "task.length=32")
    assert evaluated.returncode == 0, evaluated.stderr
    (evaluation,) = _evaluations(client, run)
    assert evaluation.data.params["task.length"] == "32" and evaluation.data.tags["smoke"] == "true"


def test_fresh_data_leaves_out_the_sequences_the_model_trained_on(tmp_path):
    # running parity at length 8 has 256 sequences: another seed's test split draws many of seed 0's training ones
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, (run,) = _train_one(
        tmp_path,
        uri,
        "running_parity",
        "task=running_parity",
        "task.length=8",
        "task.train_size=100",
        "task.val_size=50",
        "task.test_size=50",
        "trainer=smoke",
    )
    for args in ([], ["seed=7"]):
        assert _eval(tmp_path, uri, "--run", run.info.run_id, *args).returncode == 0
    own, fresh = sorted(_evaluations(client, run), key=lambda r: r.data.tags["evaluated_with"])
    assert own.data.tags["evaluated_with"] == "none" and own.data.metrics["n_eval_seen_in_training"] == 0
    seen = fresh.data.metrics["n_eval_seen_in_training"]
    # left out of its own test split (at most 50: it keeps none of its own training sequences either)
    assert (
        seen > 0
        and fresh.data.metrics["n_eval_scored"] % 8 == 0
        and fresh.data.metrics["n_eval_scored"] / 8 + seen <= 50
    )
