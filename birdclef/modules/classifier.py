"""The one LightningModule: owns the net, the loss, the optimizer and the metrics of every stage."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf

from birdclef.core.activations import activate
from birdclef.modules.metrics import BalancedAccuracy, CompetitionAUC
from birdclef.modules.rng import rng_states, set_rng_states
from birdclef.modules.schedules import build_optimizers

EVAL_KEYS = ("truth", "primary", "index")  # batch keys the validation/test metrics need
NO_PRETRAINED = {"weights": None, "pretrained": False}  # net kwargs that would fetch weights


def _plain(cfg: Any) -> Any:
    """Config -> plain dict, so hyper-parameters load back with `weights_only` checkpoints."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class Classifier(L.LightningModule):
    """Net + loss + optimizer, built from their configs; one `_step` for every stage.

    Metrics (keys are literal `stage/name`): `train/loss`, `val/loss`, `val/auc`
    (the competition's macro ROC-AUC on validation windows), `val/balanced_acc`,
    and `test/soundscape_auc` on the labelled soundscape rows.
    """

    def __init__(
        self,
        net: dict,
        loss: dict,
        optim: dict,
        classes: list[str],
        output_names: list[str],
        augment: torch.nn.Module | None = None,
        frontend: dict | None = None,
    ) -> None:
        super().__init__()
        net, loss, optim = _plain(net), _plain(loss), _plain(optim)
        # Only plain values are saved, so checkpoints load with torch.load(weights_only=True);
        # the augmentation is a training-time object and is not needed to predict. The net is
        # saved without its init weights: the checkpoint holds every tensor, so reloading never
        # needs the original weights file or a download (config.yaml records which were used).
        self.augment = augment
        saved_net = {**net, **{k: v for k, v in NO_PRETRAINED.items() if k in net}}
        self.save_hyperparameters(
            {
                "net": saved_net,
                "loss": loss,
                "optim": optim,
                "classes": list(classes),
                "output_names": list(output_names),
                "frontend": _plain(frontend),  # how to turn audio into this net's input
            }
        )
        self.classes, self.output_names = list(classes), list(output_names)
        self.net = instantiate(net, num_classes=len(self.output_names))
        self.loss_fn = instantiate(loss)
        self.activation = self.loss_fn.activation
        n = len(self.classes)
        # updated with rows already gathered from every process, so no second sync
        self.val_auc, self.test_auc = (
            CompetitionAUC(sync_on_compute=False),
            CompetitionAUC(sync_on_compute=False),
        )
        self.val_balanced_acc = BalancedAccuracy(n, sync_on_compute=False)
        self.test_scores: np.ndarray | None = None  # soundscape rows in dataset order, after `test`
        self._eval_rows: list[dict[str, torch.Tensor]] = []

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> Classifier:
        """A trained model from `path`, in eval mode, for prediction.

        Same as Lightning's `load_from_checkpoint` on the CPU, spelled out: the saved
        net config has no init weights, and the file loads with `weights_only=True`
        (nothing in it is executed).
        """
        state = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(**state["hyper_parameters"])
        model.load_state_dict(state["state_dict"])
        return model.eval()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Window logits [B, outputs], whatever auxiliary outputs the net also gives."""
        return self._logits(self.net(features))[0]

    def _logits(self, outputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Net output contract: a logits tensor, or a dict with `logits` [B, outputs] and
        optionally `frame_logits` [B, frames, outputs] (SED nets)."""
        if isinstance(outputs, dict):
            return outputs["logits"], outputs.get("frame_logits")
        return outputs, None

    def _loss(
        self, outputs, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss on window logits, plus `net.frame_loss_weight` x the loss on the
        frame-wise maximum where the net gives frame logits (the SED recipe); `weight` [B]
        scales each window's loss (the batch key `weight`, `data.pseudo.confidence_weight`)."""
        logits, frames = self._logits(outputs)
        loss = self.loss_fn(logits, target, weight)
        frame_weight = float(getattr(self.net, "frame_loss_weight", 0.0) or 0.0)
        if frames is not None and frame_weight > 0:
            loss = loss + frame_weight * self.loss_fn(frames.amax(dim=1), target, weight)
        return loss

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class scores in [0, 1] for the scored classes (the null column dropped)."""
        return activate(logits, self.activation)[:, : len(self.classes)]

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor | None:
        if stage == "train" and self.augment is not None:
            null_index = len(self.classes) if len(self.output_names) > len(self.classes) else None
            batch = self.augment(batch, softmax=self.activation == "softmax", null_index=null_index)
        outputs = self.net(batch["features"])
        logits = self._logits(outputs)[0]
        if stage != "train":
            rows = {k: batch[k] for k in EVAL_KEYS}
            self._eval_rows.append({**rows, "scores": self.scores(logits).detach()})
        if stage == "test":
            return None
        # train on the full objective; report val/loss on the window output alone, comparable across nets
        loss = (
            self._loss(outputs, batch["target"], batch.get("weight"))
            if stage == "train"
            else self.loss_fn(logits, batch["target"])
        )
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(logits),
            sync_dist=stage == "val",  # averaged over processes under DDP
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _gather_rows(self) -> dict[str, torch.Tensor] | None:
        """This epoch's evaluation rows from every process, each row once, in dataset order.

        Under DDP the distributed sampler splits the rows across processes and pads
        them with repeats; the metrics need every row exactly once (and the written
        predictions need them in order), so rows are gathered and de-duplicated by
        their dataset `index`.
        """
        if not self._eval_rows:
            return None
        rows = {k: torch.cat([r[k] for r in self._eval_rows]) for k in self._eval_rows[0]}
        self._eval_rows = []
        if self.trainer.world_size > 1:
            rows = {k: self.all_gather(v).flatten(0, 1) for k, v in rows.items()}
        index, order = torch.sort(rows["index"], stable=True)
        first = torch.ones_like(index, dtype=torch.bool)
        first[1:] = index[1:] != index[:-1]
        return {k: v[order[first]] for k, v in rows.items()}

    def on_validation_epoch_start(self) -> None:
        self._eval_rows = []

    def on_validation_epoch_end(self) -> None:
        rows = self._gather_rows()
        if rows is None:
            return
        self.val_auc.update(rows["scores"], rows["truth"])
        self.val_balanced_acc.update(rows["scores"], rows["primary"])
        # the same value on every process (all rows were gathered); sync_dist only silences a warning
        self.log("val/auc", self.val_auc.compute(), prog_bar=True, sync_dist=True)
        self.log("val/balanced_acc", self.val_balanced_acc.compute(), sync_dist=True)
        self.val_auc.reset()
        self.val_balanced_acc.reset()

    def on_test_epoch_start(self) -> None:
        self._eval_rows = []

    def on_test_epoch_end(self) -> None:
        rows = self._gather_rows()
        if rows is None:
            self.test_scores = None
            return
        self.test_auc.update(rows["scores"], rows["truth"])
        self.log("test/soundscape_auc", self.test_auc.compute(), sync_dist=True)
        self.test_auc.reset()
        self.test_scores = rows["scores"].float().cpu().numpy()

    def predict_step(self, batch, batch_idx):
        return self.scores(self(batch["features"]))

    def configure_optimizers(self):
        return build_optimizers(
            self.parameters(), self.hparams.optim, self.trainer.estimated_stepping_batches
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the generators decide the shuffling, dropout and augmentation still to come
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed fit continues with the random state it was saved with, so that stopping
        and resuming trains the same weights as one uninterrupted run (on the CPU)."""
        trainer = self._trainer  # None when loaded outside a Trainer
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        if fitting and "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
