"""The Lightning training module: one model, trained and scored on one task.

Metrics are logged per epoch as `<stage>/loss` and `<stage>/<metric>` (`acc`, `mse`, ...) for the
stages train, val and test; with `tracking.step_metrics`, also `train/loss_step` every
`trainer.log_every_n_steps` steps. Pattern 2 (`RNNOutput`) trains with teacher forcing; at validation
and test it is scored both teacher-forced (`<stage>/<metric>_tf`) and running free
(`<stage>/<metric>`): the free-running score is the one it is judged by, since at test time
there are no true outputs to feed back.

Every checkpoint holds the model's and the task's config as hyperparameters, so
`SequenceModule.load_from_checkpoint(path)` rebuilds both (`rebuild`) and loads the weights.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from rnnexp.config import MODELS, TASKS, ConfigError, Optimizer, check_plain, schema_of
from rnnexp.tasks.base import IGNORE, Task

_CHUNK = 65536  # scored steps fed to a metric at once

# (inputs, targets) or, for padded sequences of varying length, (inputs, targets, lengths)
Batch = tuple[torch.Tensor, ...]


def _unpack(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    x, y, *rest = batch
    return x, y, (rest[0] if rest else None)


_OPTIMIZERS = {Optimizer.adam: torch.optim.Adam, Optimizer.adamw: torch.optim.AdamW, Optimizer.sgd: torch.optim.SGD}


def rebuild(config: dict) -> tuple[nn.Module, Task]:
    """The model and the task (its data not yet made, but for a real-data task, whose shapes come
    from its data) that `config` describes: `{"model": ...,
    "task": ..., "seed": ...}`, resolved, as a checkpoint holds it. Read from a file, it names
    only rnnexp's own classes: each `_target_` must be one of the schemas' (rnnexp.config)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rnnexp.models.sizing import make_model

    nodes = {}
    for group, schemas in (("model", MODELS), ("task", TASKS)):
        node = dict(config.get(group) or {})
        check_plain(node, group)
        if (schema := schema_of(group, node.get("_target_"))) is None:
            known = sorted(s._target_ for s in schemas.values())
            raise ConfigError(
                f"{group}._target_",
                node.get("_target_"),
                f"one of rnnexp's {group}s ({', '.join(known)}): a checkpoint names no other code",
            )
        nodes[group] = OmegaConf.merge(OmegaConf.structured(schema), node)  # types checked too
    task = instantiate(nodes["task"], seed=int(config.get("seed", 0)))
    if getattr(task, "io", None) is None:  # a real-data task knows its shapes once its data are read
        task.setup()
    with torch.random.fork_rng(devices=[]):  # its initial weights, soon replaced, draw from no caller's stream
        model = make_model(nodes["model"], task.io)
    return model, task


class SequenceModule(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module | None = None,
        task: Task | None = None,
        *,
        optimizer: str,
        lr: float,
        weight_decay: float,
        step_metrics: bool,
        schedule: dict | None = None,
        config: dict | None = None,
    ):
        """`schedule`: the learning-rate schedule, as `optim` says it (`scheduler`, `min_lr`,
        `lr_factor`, `lr_patience`) plus `epochs` (cosine) and `monitor`, `mode` (plateau).
        `config`: the model's and the task's config (see `rebuild`), kept in every checkpoint;
        without `model` and `task` (`load_from_checkpoint`), they are built from it."""
        super().__init__()
        # in the checkpoint, not sent to the logger: the run's params are its whole config already
        self.save_hyperparameters(ignore=["model", "task"], logger=False)
        if model is None or task is None:
            if config is None:
                raise TypeError("SequenceModule needs a model and a task, or the config to build them from")
            model, task = rebuild(config)
        self.model = model
        self.schedule = dict(schedule or {"scheduler": "none"})
        self.loss_fn, self.summed_loss = task.loss, task.summed_loss
        self.flatten, self.metric_name = task.flatten, task.metric_name
        self.teacher_forced = getattr(model, "teacher_forced", False)
        self.optimizer, self.lr, self.weight_decay = Optimizer(optimizer), lr, weight_decay
        self.step_metrics = step_metrics
        stages = ["train", "val", "test"] + (["val_tf", "test_tf"] if self.teacher_forced else [])
        # keyed "<stage>_metric": a bare "train" would clash with nn.Module.train
        self.metrics = nn.ModuleDict({f"{stage}_metric": task.metric() for stage in stages})
        # an epoch's scored batches not yet fed to the metric, and its loss summed over examples
        self._pending: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {stage: [] for stage in stages}
        self._loss: dict[str, list] = {stage: [0.0, 0] for stage in stages}
        self.classes = bool(task.io.n_classes)
        # steps scored in each stage's last epoch: a binomial test of an accuracy needs its count
        self.scored: dict[str, int] = dict.fromkeys(stages, 0)
        self._scoring: dict[str, int] = dict.fromkeys(stages, 0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, lengths=lengths)

    def _score(self, stage: str, out: torch.Tensor, y: torch.Tensor, suffix: str = "") -> torch.Tensor | None:
        """The training batch's loss; the loss (the mean over scored steps) and the metric are
        logged once per epoch. Evaluation sums each step's loss in float64, so its mean does not
        depend on how the split is batched (`task.eval_batch_size`)."""
        key = f"{stage}{suffix}"
        total = self._loss[key]
        if stage == "train":
            loss = self.loss_fn(out, y)
            count = (y != IGNORE).sum() if self.classes else y.numel()  # a tensor: no device sync a step
            summed = loss.detach().double() * count
        else:
            loss, (summed, count) = None, self.summed_loss(out, y)
        total[0], total[1] = total[0] + summed, total[1] + count
        pending = self._pending[key]
        pending.append(self.flatten(out.detach(), y))
        if len(pending) * len(pending[0][1]) >= _CHUNK:  # batches of one size (the last may be smaller)
            self._feed_metric(key)
        if self.step_metrics and stage == "train":
            self._log_step(loss)
        return loss

    def _log_step(self, loss: torch.Tensor) -> None:
        """`train/loss_step` every `trainer.log_every_n_steps` steps, at Lightning's steps, straight to
        the logger: Lightning's `self.log` costs about a millisecond a call (it moves its results to
        the device each time), which per-step logging paid on every step."""
        every = self.trainer.log_every_n_steps
        if self.logger is not None and every and (self.global_step + 1) % every == 0:
            self.logger.log_metrics({"train/loss_step": loss.item()}, step=self.global_step)

    def _feed_metric(self, key: str) -> None:
        # torchmetrics' update costs a fraction of a millisecond a call whatever its size: at
        # small batches as much as the training step itself. Batches go to it in chunks.
        pending = self._pending[key]
        if pending:
            targets = torch.cat([t for _, t in pending])
            self.metrics[f"{key}_metric"].update(torch.cat([p for p, _ in pending]), targets)
            self._scoring[key] += int((targets != IGNORE).sum()) if self.classes else targets.numel()
            pending.clear()

    def _log_epoch(self, stage: str) -> None:
        # Logged once per epoch, as values: Lightning moves a logged Metric object to the device
        # on every self.log call, about a millisecond a step
        for suffix in ("", "_tf") if self.teacher_forced and stage != "train" else ("",):
            key = f"{stage}{suffix}"
            self._feed_metric(key)
            metric, (loss_sum, n) = self.metrics[f"{key}_metric"], self._loss[key]
            if n:
                # under DDP each process has its own share of the batches: the loss is averaged
                # over them (the metric's compute() reduces its state itself)
                self.log(f"{stage}/loss{suffix}", (loss_sum / n).float(), prog_bar=not suffix, sync_dist=True)
                self.log(f"{stage}/{self.metric_name}{suffix}", metric.compute(), prog_bar=not suffix, sync_dist=True)
            metric.reset()
            self._loss[key] = [0.0, 0]
            self.scored[key], self._scoring[key] = self._scoring[key], 0

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, y, lengths = _unpack(batch)
        out = self.model(x, y, lengths=lengths) if self.teacher_forced else self.model(x, lengths=lengths)
        loss = self._score("train", out, y)
        if not torch.isfinite(loss):  # stop at once: every step after a NaN is wasted
            raise FloatingPointError(
                f"the training loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: "
                "training diverged (lower optim.lr, or keep trainer.gradient_clip_val on)"
            )
        return loss

    def _evaluate(self, stage: str, batch: Batch) -> None:
        x, y, lengths = _unpack(batch)
        if self.teacher_forced:
            self._score(stage, self.model(x, y, lengths=lengths), y, suffix="_tf")
        self._score(stage, self.model(x, lengths=lengths), y)

    def validation_step(self, batch, batch_idx):
        self._evaluate("val", batch)

    def test_step(self, batch, batch_idx):
        self._evaluate("test", batch)

    # torch's global random state (dropout masks) in every checkpoint, so a resumed run draws
    # what the uninterrupted one would have (but loading one to use leaves the caller's alone)
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_initialized():  # dropout on a GPU draws from each device's own generator
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._trainer is None:  # load_from_checkpoint: a model to use, not a run to go on with
            return
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_state" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_state"])

    def configure_optimizers(self):
        optimizer = _OPTIMIZERS[self.optimizer](self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        s = self.schedule
        if s["scheduler"] == "cosine":  # stepped once an epoch: the last epoch runs at min_lr
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, s["epochs"] - 1), eta_min=s["min_lr"]
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "name": "lr"}}
        if s["scheduler"] == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=s["mode"], factor=s["lr_factor"], patience=s["lr_patience"], min_lr=s["min_lr"]
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": s["monitor"], "interval": "epoch", "name": "lr"},
            }
        return optimizer
