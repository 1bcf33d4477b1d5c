"""Task `curate`: build the manifests the window filters use, and measure their detectors.

    python run.py task=curate filter.voice.enabled=true [filter.yamnet.enabled=true filter.yamnet.model=<SavedModel>]

Scores every 5-s window of train_audio with the detectors of `filter` (YAMNet, Silero
VAD), once (later runs and training read the cached manifest). Writes into the run
folder `windows_<detector>.csv` (times in seconds), `speech_windows.csv` (the
speech-flagged windows) and `metrics.json`: windows, speed of this build, share
flagged as speech and kept by YAMNet and, on the synthetic set (whose side file holds
the true intros and silences), precision and recall of each detector.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from birdclef.core.errors import ConfigError
from birdclef.core.io import write_csv
from birdclef.data.curation.evaluate import precision_recall, window_truth
from birdclef.data.metadata import load_metadata
from birdclef.data.root import data_root
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)


def _seconds(table: pd.DataFrame, rate: int) -> pd.DataFrame:
    out = table.copy()
    out["start"], out["end"] = (out["start"] / rate).round(3), (out["end"] / rate).round(3)
    return out


@task
def run(cfg: DictConfig) -> dict:
    root, out = data_root(cfg), run_dir(cfg)
    train_filter = instantiate(cfg.filter)
    if not hasattr(train_filter, "manifests"):
        raise ConfigError(
            "no detector to run: task=curate scores 5-s windows with the detectors of the "
            "enabled filter stages; set filter.voice.enabled=true and/or filter.yamnet.enabled=true."
        )
    paths, files, groups = load_metadata(root).train_files()
    rate = cfg.sample_rate
    manifests = train_filter.manifests(
        paths, files, groups, cfg.data.cache.dir, rate, cfg.data.cache.workers
    )
    metrics: dict[str, float] = {"windows/files": float(len(files))}
    for name, manifest in manifests.items():
        windows = manifest.windows
        write_csv(out / f"windows_{name}.csv", _seconds(windows, rate))
        if len(manifest.bad):
            write_csv(out / f"skipped_files_{name}.csv", manifest.bad)
        flagged = windows["speech_s"].to_numpy(float) >= train_filter.min_speech_seconds
        metrics.update({
            f"{name}/windows": float(len(windows)), f"{name}/skipped_files": float(len(manifest.bad)),
            f"{name}/speech_share": float(flagged.mean()) if len(windows) else float("nan"),
        })  # fmt: skip
        if manifest.scored:
            metrics[f"{name}/windows_per_s"] = manifest.scored / manifest.seconds
        if "keep" in windows:
            metrics[f"{name}/kept_share"] = float(windows["keep"].astype(bool).mean())
        truth = window_truth(windows, root, rate, train_filter.min_speech_seconds)
        if truth is not None:
            for key, value in precision_recall(flagged, truth["truth_voice"]).items():
                metrics[f"{name}/speech_{key}"] = float(value)
            if "keep" in windows:
                dropped = ~windows["keep"].astype(bool).to_numpy()
                for key, value in precision_recall(dropped, truth["truth_empty"]).items():
                    metrics[f"{name}/drop_{key}"] = float(value)
            metrics["truth/voice_windows"] = float(truth["truth_voice"].sum())
            metrics["truth/empty_windows"] = float(truth["truth_empty"].sum())
        speech = _seconds(windows[flagged], rate)
        write_csv(out / f"speech_windows_{name}.csv", speech)
        for file in list(dict.fromkeys(speech["file"]))[: cfg.task.examples]:
            times = ", ".join(f"{a:g}-{b:g} s" for a, b in speech.loc[speech["file"] == file, ["start", "end"]].to_numpy())  # fmt: skip
            log.info("%s flags speech in %s: %s", name, file, times)
    log.info(
        "windows of %s:\n%s", root,
        "\n".join(f"  {k:>28}: {v:.4g}" for k, v in metrics.items() if not np.isnan(v)),
    )  # fmt: skip
    return metrics
