"""Resuming a stopped run: `rnnexp-train resume=<run id>` continues a KILLED or FAILED run into
the same MLflow run, from its last checkpoint.

Every epoch ends by writing `last.ckpt` to the run's checkpoint folder (the run's tag
`checkpoint_dir`); a run that stops also logs it as an artifact (`tracking.log_checkpoint`), so
it can be resumed where the folder is gone. A resumed run goes on in the resume command's own
output folder (`hydra.run.dir`), with the checkpoints copied from the old one (or its artifacts):
it never writes where the store's tag says. The checkpoint holds the weights, the optimizer,
Lightning's loop state (epoch and step, so metrics go on at the right step), the order of the
training batches (`Task.state_dict`) and torch's random state (`SequenceModule.on_save_checkpoint`),
so the resumed run draws what an uninterrupted one would: its final metrics are the same. An epoch cut short is
run again from its start.

The config is not read back from the run's logged YAML (which could name any `_target_`): it is
composed again from the run's logged command-line overrides, as the run itself composed it, and
must come out with the same `config_hash`. Checkpoints are loaded with `weights_only=True`, so
loading one never runs code from it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint

from rnnexp import config, safety

LAST = "last.ckpt"  # what Lightning's ModelCheckpoint(save_last=...) keeps at every epoch's end
RESUMABLE = ("KILLED", "FAILED")


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint keeping the best epoch's checkpoint, and `last.ckpt` for resume
    at the end of every epoch: in an epoch that made a new best, a link to it (one file written,
    not two); in any other, a file of its own. (Lightning 2.6 writes `last.ckpt` only in an epoch
    that also made a new best one, and with save_last="link" links it to the best of an earlier
    epoch: a run resumed from it would repeat every epoch since its best.)"""

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:  # where it saves, validating each epoch
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer) and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))  # nothing saved this epoch

    def __init__(self, **kwargs: Any):
        # the last checkpoint is always `last.ckpt`, which the next resume loads: Lightning's
        # counter would write `last-v1.ckpt` beside an older one in a folder it did not write
        super().__init__(**{"enable_version_counter": False, **kwargs})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resumed run writes in its own folder, not the one it ran in: the checkpoints its
        state names in the old folder (copied here with the same names) are read as here."""
        old = state_dict.get("dirpath")
        if old and self.dirpath and os.path.normpath(old) != os.path.normpath(self.dirpath):

            def here(path: Any) -> Any:
                moved = isinstance(path, str) and path and os.path.dirname(path) == os.path.normpath(old)
                return os.path.join(self.dirpath, os.path.basename(path)) if moved else path

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                **{k: here(state_dict.get(k)) for k in ("best_model_path", "kth_best_model_path", "last_model_path")},
                "best_k_models": {here(k): v for k, v in state_dict.get("best_k_models", {}).items()},
            }
        super().load_state_dict(state_dict)

    def _save_last_checkpoint(self, trainer: Any, monitor_candidates: dict) -> None:
        path = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        best_now = (
            self._last_global_step_saved == trainer.global_step
            and bool(self._last_checkpoint_saved)
            and self._last_checkpoint_saved != path
        )
        if trainer.is_global_zero and os.path.islink(path):  # a link to an earlier best: not to be written through
            os.remove(path)  # (by rank 0 alone, which writes checkpoints: under DDP the others would race it)
        self.save_last = "link" if best_now else True
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self.save_last = True


@dataclass(frozen=True)
class Resumed:
    run_id: str
    experiment: str
    checkpoint: Path  # last.ckpt, checked readable
    checkpoint_dir: Path  # the run's own folder, so the best checkpoint it knows keeps its path
    # the last step logged, per metric: the interrupted epoch runs again, and on CPU gives the
    # same values, which the run may already have (logged before its store went away, say)
    logged_through: dict[str, int]


def prepare(spec: config.TrainConfig) -> tuple[DictConfig, Resumed]:
    """The config and checkpoint to continue run `spec.resume` with; ConfigError if it cannot be."""
    from mlflow.exceptions import MlflowException

    from rnnexp.store import RunRecord

    run_id, store = spec.resume, spec.tracking.store
    client = store.client()
    store.mark_stale(client)  # a run whose process died (with its store out of reach, say) is resumable
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise config.ConfigError("resume", run_id, f"the id of a KILLED or FAILED run in {store.shown}") from None
    if RunRecord.of(run).sweep:
        raise config.ConfigError(
            "resume",
            run_id,
            "the id of one KILLED or FAILED run; this one is a sweep's parent: "
            "a stopped sweep goes on with its command, -m and resume_sweep=ID",
        )
    if run.info.status not in RESUMABLE:
        raise config.ConfigError(
            "resume",
            run_id,
            f"a KILLED or FAILED run; this one is {run.info.status}"
            + (" (`make stale` marks a dead process's run KILLED)" if run.info.status == "RUNNING" else ""),
        )
    given = config.identity_overrides(config.typed_overrides(HydraConfig.get().overrides.task))
    if given:
        raise config.ConfigError(
            "resume",
            run_id,
            "given without other overrides than tracking.* and hydra.*: "
            f"the run goes on with its own config (drop {' '.join(given)})",
        )
    resumed_cfg = _compose_again(client, run)
    # written in this command's own output folder (hydra.run.dir), never where the store says:
    # a record can be edited to any path. The run's old folder, as its record names it, is only read.
    folder = (Path(HydraConfig.get().runtime.output_dir) / "checkpoints").resolve()
    recorded = RunRecord.of(run).checkpoint_dir or ""
    old = Path(recorded) if os.path.isabs(recorded) else None
    experiment = client.get_experiment(run.info.experiment_id).name
    logged_through = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    last = _last_checkpoint(client, run_id, old, folder)
    return resumed_cfg, Resumed(run_id, experiment, last, folder, logged_through)


def _compose_again(client, run) -> DictConfig:
    from rnnexp.store import RunRecord
    from rnnexp.tracking import config_hash

    with tempfile.TemporaryDirectory() as tmp:
        logged = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "overrides.yaml", tmp)).read_text())
    # the store is where the run is found now; the overrides it was made with, as logged
    where = [
        o for o in config.typed_overrides(HydraConfig.get().overrides.task) if o.lstrip("+~").startswith("tracking")
    ]
    logged = logged or []
    replayed = safety.replayable(
        logged if isinstance(logged, list) else [logged], f"resume={run.info.run_id} overrides.yaml"
    )
    resumed_cfg = compose("train", overrides=replayed + where)
    record = RunRecord.of(run)
    if config_hash(resumed_cfg) != record.config_hash:
        commit = record.git_commit or "unknown"
        raise config.ConfigError(
            "resume",
            run.info.run_id,
            "a run whose config composes the same here; its "
            f"overrides give a different config at this commit (it ran at {commit[:12]}: "
            "check that out to resume it)",
        )
    return resumed_cfg


def _last_checkpoint(client, run_id: str, old: Path | None, folder: Path) -> Path:
    """`folder/last.ckpt`, copied with the run's other checkpoints from its old folder `old`, or
    else brought back from its artifacts; checked to load as weights only."""
    import torch

    last = source = folder / LAST
    if not last.is_file() and old is not None and (old / LAST).is_file() and old.resolve() != folder:
        source = old / LAST
        folder.mkdir(parents=True, exist_ok=True)
        for found in old.glob("*.ckpt"):
            if found.is_file():
                shutil.copyfile(found, folder / found.name)  # a link (last.ckpt to the best) as a file
    if not last.is_file():
        _restore_from_artifacts(client, run_id, folder)
    if not last.is_file():
        raise config.ConfigError(
            "resume",
            run_id,
            f"a run with a checkpoint; {old / LAST if old else LAST} is "
            f"missing and the run logged no {LAST} (it stopped before its first epoch ended: "
            "start it again)",
        )
    try:
        torch.load(last, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a checkpoint, or holding objects other than weights
        reason = " ".join(str(err).split())[:200]
        raise config.ConfigError(
            "resume", run_id, f"a run whose checkpoint loads; {source} does not ({type(err).__name__}: {reason})"
        ) from None
    return last


def _restore_from_artifacts(client, run_id: str, folder: Path) -> None:
    """Lightning's logger logs each checkpoint as `<name>/<name>.ckpt`: put them back in `folder`."""
    for entry in client.list_artifacts(run_id):
        if not entry.is_dir:
            continue
        for item in client.list_artifacts(run_id, entry.path):
            if item.path.endswith(".ckpt"):
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory() as tmp:
                    shutil.move(client.download_artifacts(run_id, item.path, tmp), folder / Path(item.path).name)
