"""The Lightning side of tracking: the MLflow logger a run writes through, and the callback that
keeps its unwritten metrics in each checkpoint. (`rnnexp.tracking` is the store side, which a
sweep's own process uses without importing torch or Lightning.)"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import RichModelSummary
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from rnnexp.config import TrainConfig
from rnnexp.store import Store, one_try

_BATCH_METRICS = 1000  # metrics that wait before a write, whatever the time


class BatchedMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, writing metrics in batches. Lightning hands the logger each
    step's (or epoch's) metrics at once, and the parent writes them at once: one database write
    of a few milliseconds each time, which per-step logging pays on every step. Here they wait in
    memory and go in one `log_batch` (which MLflow's client splits in its own chunks) every `flush_every_s` seconds, and
    whenever the run ends, fails or is interrupted (`finalize`), so nothing is lost but what a
    SIGKILL cuts off in the last seconds. A metric at a step it has already logged is dropped;
    a resumed run starts from what its run has (`logged_through`: each metric's last step).

    Epoch metrics (all that Lightning hands over: it adds the `epoch`) are logged at step = the
    epoch, so the UI's charts read in epochs; the per-step loss (`train/loss_step`, logged by
    the module itself) and the learning rate (`lr`, by Lightning's LearningRateMonitor, as each
    epoch starts) keep Lightning's global step."""

    def __init__(
        self, *args: Any, flush_every_s: float = 2.0, logged_through: Mapping[str, int] | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.flush_every_s = flush_every_s
        self.logged_through = dict(logged_through or {})
        self._pending: list[Metric] = []
        self._flushed_at = time.monotonic()
        self.store = Store(self._tracking_uri) if self._tracking_uri else None
        self.store_file = self.store.file_identity() if self.store else None  # (path, identity) of SQLite

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        step = int(metrics["epoch"]) if "epoch" in metrics else step or 0
        new = {
            k: float(v) for k, v in metrics.items() if not isinstance(v, str) and step > self.logged_through.get(k, -1)
        }
        self._pending += [Metric(k, v, now, step) for k, v in new.items()]
        self.logged_through.update(dict.fromkeys(new, step))
        if len(self._pending) >= _BATCH_METRICS or time.monotonic() - self._flushed_at >= self.flush_every_s:
            self.flush()

    @property
    def pending(self) -> list[Metric]:
        """The metrics not written yet."""
        return list(self._pending)

    @rank_zero_only
    def flush(self) -> None:
        Store.check_file(self.store_file)  # a deleted store would take the metrics and keep them from everyone
        if self._pending:
            self.experiment.log_batch(self.run_id, metrics=self._pending)
            self._pending.clear()
        self._flushed_at = time.monotonic()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Write what waits and log the checkpoints, but leave the run's status alone: Lightning
        calls this when `fit` ends, before the run is tested, and a run must not show FINISHED
        without its test metrics. rnnexp sets the status once, after testing (`end_run`). After
        a failure, one try: a store that failed has had its retries."""
        with one_try() if status == "failed" else contextlib.nullcontext():
            self._write_out()

    def _write_out(self) -> None:
        self.flush()
        if self._initialized and self._checkpoint_callback:
            self._scan_and_log_checkpoints(self._checkpoint_callback)


class MetricsInCheckpoint(Callback):
    """Every metric up to a checkpoint is in the store or in the checkpoint, so that a run resumed
    from it loses none: what the logger has not written yet goes into the checkpoint, and a run
    resumed from it logs those of them its run lacks. (Lightning checkpoints at the end of an
    epoch before it hands the logger that epoch's training metrics: they are taken from
    `callback_metrics` here, and the logger drops them when Lightning hands them over.) No write
    to the store waits for a checkpoint."""

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, BatchedMLFlowLogger):
                epoch_end = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
                if epoch_end:
                    logger.log_metrics({**epoch_end, "epoch": trainer.current_epoch})  # as Lightning will hand them
                checkpoint["unlogged_metrics"] = [(m.key, m.value, m.step) for m in logger.pending]

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, BatchedMLFlowLogger):
                for key, value, step in checkpoint.get("unlogged_metrics", []):
                    logger.log_metrics({key: value}, step=step)


def make_logger(
    spec: TrainConfig,
    experiment: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    logged_through: Mapping[str, int] | None = None,
) -> MLFlowLogger:
    """Lightning's MLflow logger (batched) over the configured store, for a new run or (`run_id`) a resumed
    one. The store URI is always passed: Lightning's default, a `./mlruns` file store, is refused
    by MLflow 3.13+."""
    return BatchedMLFlowLogger(
        logged_through=logged_through,
        experiment_name=experiment,
        run_name=run_name,
        run_id=run_id,
        tracking_uri=spec.tracking.uri,
        tags=dict(tags or {}),
        artifact_location=spec.tracking.store.artifact_location(spec.tracking.artifacts),
        log_model=spec.tracking.log_checkpoint,
    )


def log_model(uri: str, run_id: str, model: Any, example: Any) -> str:
    """Log `model` (a torch module, its best weights loaded) to run `run_id` with MLflow's own
    `mlflow.pytorch.log_model`, so the UI lists it under "Logged models" and
    `mlflow.pytorch.load_model` loads it back; its URI (`models:/<id>`). Saved as a `pt2` program
    (`torch.export`), which loads without running pickled code. The signature is `example`'s
    shape with any batch size: a recurrent model's graph is traced at the trained length."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model = model.cpu().eval()
    with torch.no_grad():
        out = model(example)

    def spec(tensor: torch.Tensor) -> TensorSpec:
        return TensorSpec(np.dtype(str(tensor.dtype).removeprefix("torch.")), (-1, *tensor.shape[1:]))

    signature = ModelSignature(inputs=Schema([spec(example)]), outputs=Schema([spec(out)]))
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):  # the run is ended right after by rnnexp.train, whatever this sets
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example.numpy(),
            serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    return info.model_uri


class ModelSummary(RichModelSummary):
    """Lightning's model summary less its FLOPs column and total: Lightning counts FLOPs only from
    a module's `example_input_array`, which rnnexp's modules do not set (the shapes come from the
    task), so both would read 0."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, *_, **kwargs):
        from pytorch_lightning.utilities.model_summary import get_human_readable_count
        from pytorch_lightning.utilities.model_summary.model_summary import get_formatted_model_size
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            left = name == "Name"
            table.add_column(
                name, style="dim" if name == " " else None, justify="left" if left else "right", no_wrap=left
            )
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        lines = Table.grid(expand=True)
        lines.add_column()
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", total_training_modes["train"]),
            ("Modules in eval mode", total_training_modes["eval"]),
        ):
            lines.add_row(f"[bold]{label}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(lines)
