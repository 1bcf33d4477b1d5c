"""The Lightning callback that writes a run's figures and tables (`birdclef.analysis.runlog`)."""

from __future__ import annotations

import lightning as L

from birdclef.analysis.runlog import is_wandb, log_run_figures


class RunFigures(L.Callback):
    """After testing on the labelled soundscapes: the per-class AUC table, the most confused
    class pairs and a few windows with their predictions, written into `out` as CSV and PNG
    and, under a W&B logger, logged there too (`birdclef.analysis.runlog`). With a W&B
    logger, the whole resolved run config (`config`) is logged when fitting starts."""

    def __init__(self, out, config: dict | None = None, n_windows: int = 4) -> None:
        self.out, self.config, self.n_windows = out, config, n_windows

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.config is not None and is_wandb(trainer.logger) and trainer.is_global_zero:
            trainer.logger.experiment.config.update(self.config, allow_val_change=True)

    def on_test_end(self, trainer, pl_module) -> None:
        dm, scores = trainer.datamodule, getattr(pl_module, "test_scores", None)
        if not trainer.is_global_zero or scores is None or dm is None or dm.test_set is None:
            return
        names = dm.soundscape_rows["row_id"].tolist()
        log_run_figures(
            self.out, dm.test_set.truth, scores, dm.classes, names,
            lambda i: dm.test_set[i]["features"][0].numpy(), trainer.logger, self.n_windows,
        )  # fmt: skip
