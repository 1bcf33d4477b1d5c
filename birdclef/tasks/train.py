"""Task `train`: fit one model, keep the best checkpoint, score the labelled soundscapes."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import pandas as pd
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from birdclef.analysis.callbacks import RunFigures
from birdclef.analysis.runlog import finish
from birdclef.core.errors import ConfigError, user_error
from birdclef.core.io import write_csv
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.curation.apply import REPORT_NAME
from birdclef.data.root import synthetic_root
from birdclef.data.teacher_inputs import TeacherInputs
from birdclef.models.build import net_config
from birdclef.models.timing import cpu_ms_per_window
from birdclef.modules.callbacks import EpochTimer
from birdclef.modules.classifier import Classifier
from birdclef.modules.linear_fit import fit_linear
from birdclef.modules.schedules import budget_epochs
from birdclef.runs.envelope import main_process, run_dir, task
from birdclef.runs.jobs import job_info

log = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "val/auc", "val/balanced_acc", "val/loss", "test/soundscape_auc", "train/epoch_seconds",
    "model/params", "infer/cpu_ms_per_window",
)  # fmt: skip


def build(node: DictConfig, **derived):
    """`instantiate(node, **derived)`, raising a user error itself rather than Hydra's wrapper."""
    try:
        return instantiate(node, **derived)
    except InstantiationException as err:
        raise (user_error(err) or err) from None


def build_datamodule(
    cfg: DictConfig, background: bool = False, teacher: TeacherInputs | None = None
):
    """The DataModule of `cfg`, on data.root or on the built-in synthetic dataset.

    `teacher` (distillation): training items also carry `teacher_features`, and with
    cross-fitted teachers `teacher_mask`.
    """
    root = cfg.data.root if cfg.data.root is not None else synthetic_root(cfg)
    labels = build(cfg.label, activation=instantiate(cfg.loss).activation)
    return instantiate(
        cfg.data, root=root, frontend=instantiate(cfg.frontend), labels=labels,
        train_filter=instantiate(cfg.filter), background=background, teacher=teacher,
        _recursive_=False,
    )  # fmt: skip


def checkpoint_callbacks(cfg: DictConfig, out: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """The best (by `monitor`) and the last checkpoint, `best.ckpt` and `last.ckpt`.

    `last.ckpt` has a callback of its own: Lightning's `save_last` rewrites it only
    when the best one changes, so it would go stale after the best epoch. With
    `monitor=null` nothing is selected: `best.ckpt` is rewritten every epoch, so
    validation and test use the last epoch (for a validation set that cannot rank
    epochs, e.g. one whose recordings also feed the training mixtures). A resumed run
    keeps writing into the checkpoint folder of the run it resumes, so Lightning
    restores the best score so far and epochs before the resume still count.
    """
    folder = Path(cfg.ckpt_path).parent if cfg.ckpt_path else out / "checkpoints"
    if cfg.monitor is None and "early_stopping" in (cfg.get("callbacks") or {}):
        raise ConfigError(
            "callbacks=early_stopping needs a metric to watch, but monitor=null; "
            "set monitor=val/auc or drop early stopping."
        )
    best = ModelCheckpoint(
        dirpath=folder, filename="best", monitor=cfg.monitor, mode=cfg.monitor_mode,
        enable_version_counter=cfg.monitor is not None,
    )  # fmt: skip
    last = ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)
    return best, last


def write_data_files(dm, out: Path) -> None:
    """The set-up DataModule's split, skipped files and filter report, into the run folder."""
    write_csv(out / "split.csv", dm.split[["filename", "primary_label", "split"]])
    if len(dm.bad_files):
        write_csv(out / "skipped_files.csv", dm.bad_files)
    if dm.filter_report is not None:  # filter=none: nothing filtered, nothing to report
        write_csv(out / REPORT_NAME, dm.filter_report)


def train(
    cfg: DictConfig,
    module_factory=Classifier,
    teacher: TeacherInputs | None = None,
    extra_metrics=None,
) -> dict[str, float]:
    """Train as `cfg` says; returns the metrics (`run` also writes them to `metrics.json`).

    `val/*` and `test/*` are those of the best checkpoint (by `monitor`); `train/loss`
    is the last epoch's. Other tasks reuse this loop (task=distill): `module_factory`
    takes `Classifier`'s arguments and returns the LightningModule to fit,
    `teacher` goes to the DataModule, and `extra_metrics`
    (a dict) joins the metrics.
    """
    out = run_dir(cfg)
    main = main_process()  # DDP re-runs this function in every process
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} is not a file; give a run's checkpoints/last.ckpt."
        )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    augment = instantiate(cfg.augment)
    dm = build_datamodule(cfg, augment.needs_background, teacher)
    check_log_mel(dm.frontend, augment, cfg.model)
    dm.prepare_data()
    dm.setup("fit")
    if main:
        write_data_files(dm, out)
    module = module_factory(
        net_config(cfg.model, dm.frontend), cfg.loss, cfg.optim, dm.classes, dm.output_names,
        augment=augment, frontend=cfg.frontend,
    )  # fmt: skip
    (checkpoint, last), timer = checkpoint_callbacks(cfg, out), EpochTimer()
    extra = [instantiate(c) for c in cfg.callbacks.values() if c]
    figures = RunFigures(out, OmegaConf.to_container(cfg, resolve=True))
    epochs = cfg.trainer.max_epochs
    if epochs is None:  # the optim group's budget, from this run's batches per epoch
        steps = math.ceil(
            len(dm.train_dataloader()) / int(cfg.trainer.get("accumulate_grad_batches") or 1)
        )
        epochs = budget_epochs(cfg.optim, steps)
        log.info(
            "training for %d epochs of %d optimizer steps (optim.min_steps=%s)",
            epochs,
            steps,
            cfg.optim.min_steps,
        )
    trainer = instantiate(
        cfg.trainer, max_epochs=epochs, callbacks=[checkpoint, last, timer, figures, *extra],
        logger=instantiate(cfg.logger),
    )  # fmt: skip
    if getattr(module.net, "closed_form", False):  # the floor: a converged fit, no epochs
        metrics = fit_linear(module, dm, cfg.seed)
        best = None  # the fitted weights; saved below once the trainer holds the module
    else:
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")
        }
        best = checkpoint.best_model_path or None
    evaluated = trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)[0]
    metrics.update({k: float(v) for k, v in evaluated.items()})
    if best is None:  # the closed-form fit: its weights are both the best and the last
        for name in ("best", "last"):
            trainer.save_checkpoint(Path(checkpoint.dirpath) / f"{name}.ckpt")
        best = str(Path(checkpoint.dirpath) / "best.ckpt")
    metrics["train/epoch_seconds"] = timer.median
    metrics["train/data_seconds"] = timer.data_median  # of it, waiting for batches
    metrics["train/epochs"] = float(trainer.current_epoch)
    metrics.update(extra_metrics or {})
    metrics["model/params"] = float(sum(p.numel() for p in module.net.parameters()))
    if dm.test_set is not None:
        tested = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)[0]
        metrics.update({k: float(v) for k, v in tested.items()})
        if main:
            scores = pd.DataFrame(module.test_scores, columns=dm.classes)
            write_csv(
                out / "soundscape_predictions.csv", pd.concat([dm.soundscape_rows, scores], axis=1)
            )
    if main:
        window_samples = ROW_SECONDS * cfg.sample_rate
        metrics["infer/cpu_ms_per_window"] = cpu_ms_per_window(
            dm.frontend, module.net, window_samples
        )
        metrics.update(job_info())  # timings above are shared with this many jobs
        log.info(summary(metrics, out, best))
    finish(trainer.logger, metrics)
    return metrics


run = task(train)


def check_log_mel(frontend, augment, model: DictConfig) -> None:
    """Refuse what needs log-mel images (mixing augments, PCEN) on other features."""
    if getattr(frontend, "log_mel_image", False):
        return
    wrong = []  # (what needs log-mel images, its fix)
    if augment.active:
        wrong.append(("the augment (it mixes and masks log-mel images)", "augment=none"))
    if model.get("input_norm") == "pcen":
        wrong.append(
            ("model.input_norm=pcen (it normalises log-mel power)", "model.input_norm=dataset")
        )
    if wrong:
        raise ConfigError(
            f"{' and '.join(w for w, _ in wrong)} need log-mel features, but frontend="
            f"{type(frontend).__name__} gives other features (MFCCs or embeddings); "
            f"use {' '.join(f for _, f in wrong)} with it."
        )


def summary(metrics: dict[str, float], out: Path, best: str | None) -> str:
    lines = [f"  {k:>22}: {metrics[k]:.4g}" for k in SUMMARY_KEYS if k in metrics]
    return "\n".join(
        ["run summary", *lines, f"  {'best checkpoint':>22}: {best}", f"  {'outputs':>22}: {out}"]
    )
