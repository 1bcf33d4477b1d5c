"""Task `train`: fit one model, keep the best checkpoint, score the labelled soundscapes."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pandas as pd
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from birdclef.callbacks import EpochTimer
from birdclef.modules.classifier import Classifier
from birdclef.synth import synthetic_root
from birdclef.utils import add_file_log, remove_file_log, write_csv, write_json, write_text

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig):
    """The DataModule of `cfg`, on data.root or on the built-in synthetic dataset."""
    root = cfg.data.root if cfg.data.root is not None else synthetic_root(cfg)
    return instantiate(
        cfg.data, root=root, frontend=instantiate(cfg.frontend), labels=instantiate(cfg.label),
        row_filter=instantiate(cfg.filter), _recursive_=False,
    )  # fmt: skip


def run(cfg: DictConfig) -> dict[str, float]:
    """Train as `cfg` says; returns the metrics also written to `<output_dir>/metrics.json`."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    handler = add_file_log(out)
    try:
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = build_datamodule(cfg)
        dm.prepare_data()
        dm.setup("fit")
        write_csv(out / "split.csv", dm.split[["filename", "primary_label", "split"]])
        if len(dm.bad_files):
            write_csv(out / "skipped_files.csv", dm.bad_files)
        module = Classifier(cfg.model, cfg.loss, cfg.optim, dm.classes, dm.output_names)
        checkpoint = ModelCheckpoint(
            dirpath=out / "checkpoints",
            filename="best",
            monitor=cfg.monitor,
            mode=cfg.monitor_mode,
            save_last=True,
        )
        timer = EpochTimer()
        trainer = instantiate(
            cfg.trainer, callbacks=[checkpoint, timer], logger=instantiate(cfg.logger)
        )
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics[cfg.monitor] = (
            float(checkpoint.best_model_score)
            if checkpoint.best_model_score is not None
            else float("nan")
        )
        metrics["train/epoch_seconds"] = timer.median
        metrics["model/params"] = float(sum(p.numel() for p in module.net.parameters()))
        if dm.test_set is not None:
            best = checkpoint.best_model_path or None
            metrics.update(
                {
                    k: float(v)
                    for k, v in trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)[
                        0
                    ].items()
                }
            )
            scores = pd.DataFrame(module.test_scores, columns=dm.classes)
            write_csv(
                out / "soundscape_predictions.csv", pd.concat([dm.soundscape_rows, scores], axis=1)
            )
        write_json(out / "metrics.json", metrics)
        _print_summary(metrics, out, checkpoint.best_model_path)
        return metrics
    finally:
        remove_file_log(handler)


def _print_summary(metrics: dict[str, float], out: Path, best: str) -> None:
    keys = [
        "val/auc",
        "val/balanced_acc",
        "val/loss",
        "test/soundscape_auc",
        "train/epoch_seconds",
        "model/params",
    ]
    lines = [f"  {k:>22}: {metrics[k]:.4g}" for k in keys if k in metrics]
    text = "\n".join(
        ["run summary", *lines, f"  {'best checkpoint':>22}: {best}", f"  {'outputs':>22}: {out}"]
    )
    print(text)
