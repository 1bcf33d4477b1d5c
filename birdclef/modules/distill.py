"""Knowledge distillation: a `Classifier` whose loss also follows a frozen teacher's soft scores.

    loss = (1 - kd_weight) * label_loss + kd_weight * T^2 * kd

with `kd` = KL(q || softmax(student_logits / T)) for a softmax student and the mean
binary cross-entropy of sigmoid(student_logits / T) against q for a sigmoid one, where
q are the teacher's scores at temperature T (softmax or sigmoid of teacher_logits / T,
by the teacher's own loss) mapped onto the student's outputs by class name. A student
`null` column gets the teacher's leftover mass, max(0, 1 - sum of its class scores):
the teacher's own `null` score for a softmax teacher with one, 0 for a softmax teacher
without. For a softmax student q is then renormalised to sum to one (it already does,
except for a sigmoid teacher, or a teacher with a `null` column and a student without).
T^2 keeps the teacher term's gradients on the scale of the label loss's (Hinton et al.).

The teacher is a project checkpoint read by `Classifier.from_checkpoint`, or an exported
log-mel model (`birdclef.modules.exported_teacher.ExportedTeacher`: its scores turned back
into logits, a softmax one's dropped `null` column restored from the leftover mass; a
softmax export that does not record its outputs, from an older version, has no `null`
column, so its softened scores are renormalised over the scored classes). It reads the batch key
`teacher_features` (its own front end's features of the student's window) and returns
logits [B, its outputs]. It is held outside the module's registered children: it is
never trained, never put in train mode, and neither its weights nor its settings reach
the student's checkpoint, which therefore loads as a plain `Classifier` (and in
`birdclef.inference`).

Several teachers (one front end): q is the mean of their class scores at temperature T.
Cross-fitted teachers (each trained with one fold of the recordings held out) come with
a batch key `teacher_mask` [B, teachers]: a window's q is then the mean over the teachers
that did not train on its recording, so its soft scores are the teachers' predictions on
unseen audio, not what they memorised (a BirdNET head ends with a training loss of 1e-6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from birdclef.core.activations import activate
from birdclef.core.errors import ConfigError
from birdclef.modules.classifier import Classifier
from birdclef.modules.exported_teacher import ExportedTeacher


class Distiller(Classifier):
    """A `Classifier` trained on its labels and on frozen teachers' scores (see module doc)."""

    def __init__(
        self,
        net: dict,
        loss: dict,
        optim: dict,
        classes: list[str],
        output_names: list[str],
        teacher: Classifier | ExportedTeacher | Sequence[Classifier | ExportedTeacher],
        temperature: float = 2.0,
        kd_weight: float = 0.7,
        augment: torch.nn.Module | None = None,
        frontend: dict | None = None,
    ) -> None:
        if temperature <= 0 or not 0.0 <= kd_weight <= 1.0:
            raise ConfigError(
                f"teacher.temperature={temperature} must be positive and teacher.kd_weight="
                f"{kd_weight} in [0, 1] (the weight of the teacher term)."
            )
        teachers = list(teacher) if isinstance(teacher, Sequence) else [teacher]
        if not teachers:
            raise ConfigError("distillation needs at least one teacher (teacher.models).")
        for t in teachers:
            if sorted(t.classes) != sorted(classes):
                extra = sorted(set(t.classes) ^ set(classes))
                raise ConfigError(
                    f"a teacher has {len(t.classes)} classes and the data {len(classes)}, "
                    f"differing in {extra[:5]}: distil from teachers trained on the same classes."
                )
        super().__init__(
            net, loss, optim, classes, output_names, augment=augment, frontend=frontend
        )
        # not registered as children: kept out of state_dict, parameters() and .train()
        object.__setattr__(self, "teachers", [t.eval().requires_grad_(False) for t in teachers])
        self.temperature, self.kd_weight = float(temperature), float(kd_weight)
        columns = []
        for t in self.teachers:
            lookup = {c: i for i, c in enumerate(t.output_names)}
            columns.append([lookup[c] for c in self.classes])
        # [teachers, classes]: each teacher's column of each of the student's classes
        self.register_buffer("teacher_columns", torch.tensor(columns), persistent=False)
        self._teacher_logits: list[torch.Tensor] | None = None
        self._teacher_mask: torch.Tensor | None = None

    def teacher_targets(
        self,
        teacher_logits: torch.Tensor | Sequence[torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The teachers' scores at temperature T on the student's outputs [B, outputs].

        `teacher_logits`: one tensor [B, teacher outputs] per teacher (a bare tensor for one).
        Several teachers: the mean of their class scores, over the teachers `mask` [B, teachers]
        allows for each window (cross-fitting), or over all without a mask.
        """
        if isinstance(teacher_logits, torch.Tensor):
            teacher_logits = [teacher_logits]
        if len(teacher_logits) != len(self.teachers):
            raise ValueError(
                f"{len(teacher_logits)} teacher logits for {len(self.teachers)} teachers"
            )
        columns = self.teacher_columns.to(teacher_logits[0].device)
        scores = torch.stack(
            [
                activate(z.float() / self.temperature, t.activation)[:, columns[k]]
                for k, (t, z) in enumerate(zip(self.teachers, teacher_logits, strict=True))
            ]
        )  # [teachers, B, classes]
        if mask is None:
            q = scores.mean(dim=0)
        else:
            w = mask.to(scores).T.unsqueeze(-1)  # [teachers, B, 1]
            q = (scores * w).sum(dim=0) / w.sum(dim=0).clamp_min(1.0)
        if len(self.output_names) > len(self.classes):  # the student's `null` column
            q = torch.cat([q, (1.0 - q.sum(dim=1, keepdim=True)).clamp_min(0.0)], dim=1)
        if self.activation == "softmax":
            q = q / q.sum(dim=1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
        return q

    def kd_loss(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | Sequence[torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """T^2 x the distance of the student's scores at temperature T from the teachers'."""
        q = self.teacher_targets(teacher_logits, mask)
        z = student_logits.float() / self.temperature
        if self.activation == "softmax":
            distance = F.kl_div(F.log_softmax(z, dim=1), q, reduction="batchmean")
        else:
            distance = F.binary_cross_entropy_with_logits(z, q)
        return self.temperature**2 * distance

    def _loss(
        self, outputs, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        label = super()._loss(outputs, target, weight)  # the weight scales the label term only
        if self._teacher_logits is None or self.kd_weight == 0.0:
            return label
        kd = self.kd_loss(self._logits(outputs)[0], self._teacher_logits, self._teacher_mask)
        if self._trainer is not None:  # also called by hand, outside a Trainer
            self.log("train/kd_loss", kd, on_step=False, on_epoch=True, batch_size=len(target))
        return (1.0 - self.kd_weight) * label + self.kd_weight * kd

    def training_step(self, batch, batch_idx):
        if "teacher_features" not in batch:
            raise ConfigError(
                "distillation batches need `teacher_features`: build the DataModule with "
                "teacher_frontend= (task=distill does)."
            )
        with torch.no_grad():
            self._teacher_logits = [
                t.to(self.device)(batch["teacher_features"]).float() for t in self.teachers
            ]
        self._teacher_mask = batch.get("teacher_mask")
        try:
            return self._step(batch, "train")
        finally:
            self._teacher_logits = self._teacher_mask = None
