"""Task `mix_train`: unlabelled train_soundscapes mixed from a folder's own train_audio.

    python run.py task=mix_train task.source=../shared/data/real_xc task.output=data/real_xc_train
    python run.py task=pseudo_label data.root=data/real_xc_train "teacher.models=[...]"

A real folder without train_soundscapes (real_xc) cannot run the pseudo-label and
soundscape-mixup recipes. This task writes a new folder that links the source's
train_audio, test_soundscapes and CSVs (so training and scoring are exactly the
source's) and adds `train_soundscapes/`: one-minute files whose every 5-s row mixes
2-3 fixed windows of different species cut from train_audio, each at a random level
relative to the first. Their truth (the union of the windows' primary labels) is kept
in `train_soundscapes_truth.csv`, as the synthetic set keeps its own, so the
pseudo-labels' quality can be measured; nothing trains on it. Only training audio goes
in, never test audio. Files are written atomically and the truth last; a rerun with
the same settings resumes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from birdclef.data.audio import load_audio, write_audio
from birdclef.data.metadata import load_metadata
from birdclef.data.mixtures import (
    FADE_SECONDS,
    PEAK,
    PLAN_COLUMNS,
    SILENT_RMS,
    SOURCE,
    MixSpec,
    draw_sources,
    mixture_truth,
    rms,
)
from birdclef.data.windows import SCORE_SECONDS, cut_window, recording_window_starts, row_id
from birdclef.errors import AudioError, ConfigError, DataError
from birdclef.tasks.mix import COPIED, output_state
from birdclef.utils import atomic_path, write_csv, write_json

log = logging.getLogger(__name__)

AUDIO_DIR = "train_soundscapes"
TRUTH = "train_soundscapes_truth.csv"  # written last: its presence marks a finished folder
SOURCES = "train_mixture_sources.csv"
SPEC = "mix.json"
LINKED = ("train_audio", "test_soundscapes")
VERSION = 1


def training_windows(meta, sample_rate: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Every fixed 5-s window of every readable training recording, and a 0/1 label frame of them.

    A window's id is `<filename>@<start sample>`; its truth is its recording's primary label.
    Unreadable or silent windows are left out (and logged).
    """
    size = SCORE_SECONDS * sample_rate
    windows, rows, bad = {}, [], []
    for filename, label in tqdm(
        zip(meta.train["filename"], meta.train["primary_label"], strict=True),
        total=len(meta.train),
        desc="reading train_audio",
        unit="file",
    ):
        try:
            audio = load_audio(meta.audio_path(filename), sample_rate)
        except AudioError as err:
            bad.append(f"{filename} ({err})")
            continue
        for start in recording_window_starts(len(audio), size):
            piece = cut_window(audio, start, size)
            if rms(piece) >= SILENT_RMS:
                windows[f"{filename}@{start}"] = piece
                rows.append((f"{filename}@{start}", label))
    if bad:
        log.warning("skipped %d unreadable training recording(s): %s", len(bad), bad[:5])
    if not rows:
        raise DataError(f"{meta.audio_dir} holds no readable, non-silent training window to mix.")
    ids, labels = zip(*rows, strict=True)
    truth = pd.DataFrame(0, index=range(len(ids)), columns=meta.classes)
    for i, label in enumerate(labels):
        truth.loc[i, label] = 1
    return windows, pd.concat([pd.DataFrame({"row_id": list(ids)}), truth], axis=1)


def plan(labels: pd.DataFrame, classes: list[str], spec: MixSpec) -> pd.DataFrame:
    """One line per window of every mixed row: the first at 0 dB, the others at `spec.snr_db` to it."""
    rng = np.random.default_rng(spec.seed)
    truth = labels[classes].to_numpy() > 0
    low, high = spec.sources_per_window
    lines = []
    for stem in spec.stems:
        for end in range(SCORE_SECONDS, spec.soundscape_seconds + 1, SCORE_SECONDS):
            rid = row_id(stem, end)
            picked = draw_sources(truth, int(rng.integers(low, high + 1)), rng)
            for n, index in enumerate(picked):
                snr = 0.0 if n == 0 else round(float(rng.uniform(*spec.snr_db)), 2)
                lines.append((rid, stem, end, SOURCE, labels["row_id"].iloc[index], snr))
    return pd.DataFrame(lines, columns=PLAN_COLUMNS)


def render(lines: pd.DataFrame, windows: dict[str, np.ndarray], sample_rate: int) -> np.ndarray:
    """One soundscape: per row, the windows scaled to their level over the first one's RMS, faded."""
    size = SCORE_SECONDS * sample_rate
    n_fade = int(FADE_SECONDS * sample_rate)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n_fade))
    audio = np.zeros(int(lines["end"].max()) * sample_rate, np.float64)
    for end, parts in lines.groupby("end", sort=True):
        level = rms(windows[parts["source_row_id"].iloc[0]])
        row = np.zeros(size, np.float64)
        for rid, snr in zip(parts["source_row_id"], parts["snr_db"], strict=True):
            row += windows[rid] * (level * 10 ** (snr / 20) / max(rms(windows[rid]), SILENT_RMS))
        row[:n_fade] *= ramp
        row[size - n_fade :] *= ramp[::-1]
        audio[int(end) * sample_rate - size : int(end) * sample_rate] = row
    peak = float(np.abs(audio).max())
    if peak > PEAK:
        audio *= PEAK / peak
    return audio.astype(np.float32)


def link_source(source: Path, output: Path) -> None:
    """Copy the small CSVs and symlink train_audio and test_soundscapes (relative)."""
    for name in (*COPIED, "soundscape_labels.csv"):
        if (source / name).is_file():
            with atomic_path(output / name) as tmp:
                tmp.write_bytes((source / name).read_bytes())
    for name in LINKED:
        if not (source / name).is_dir():
            continue
        link = output / name
        target = os.path.relpath((source / name).resolve(), output.resolve())
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.exists() or link.is_symlink():
            raise ConfigError(
                f"{link} exists and is not a link to {source / name}; remove it first."
            )
        os.symlink(target, link, target_is_directory=True)


def run(cfg: DictConfig) -> dict:
    task = cfg.task
    if not task.get("source"):
        raise ConfigError(
            "task.source is not set: python run.py task=mix_train task.source=PATH/TO/COMPETITION_FOLDER"
        )
    spec = MixSpec.from_config({**task, "sample_rate": cfg.sample_rate})
    source = Path(task.source).expanduser()
    output = Path(
        task.output or Path(cfg.paths.data_dir) / f"{source.resolve().name}_train"
    ).expanduser()
    if output.resolve() == source.resolve():
        raise ConfigError(f"task.output={output} is the source folder; choose a new folder.")
    if (source / AUDIO_DIR).is_dir() and any((source / AUDIO_DIR).iterdir()):
        log.warning(
            "%s already has %s; the new folder replaces them with mixtures", source, AUDIO_DIR
        )
    meta = load_metadata(source)
    fingerprint = {
        "source": str(source.resolve()),
        "spec": spec.as_dict(),
        "version": VERSION,
        "kind": "train",
    }
    state = output_state(output, fingerprint, bool(task.overwrite), finished=TRUTH)
    if state == "done":
        log.info("%s already holds these train_soundscapes; nothing to do", output)
        return {"soundscapes": spec.n_soundscapes, "output": str(output)}
    windows, labels = training_windows(meta, spec.sample_rate)
    lines = plan(labels, meta.classes, spec)
    truth = mixture_truth(lines, labels, meta.classes)
    if state == "replace":
        for path in (output / AUDIO_DIR).glob("*.ogg"):
            path.unlink()
    (output / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    write_json(output / SPEC, fingerprint)
    link_source(source, output)
    for stem, part in tqdm(lines.groupby("stem", sort=True), desc="mixing", unit="soundscape"):
        path = output / AUDIO_DIR / f"{stem}.ogg"
        if not path.is_file():
            write_audio(path, render(part, windows, spec.sample_rate), spec.sample_rate)
    per_row = truth.drop(columns="row_id").to_numpy().sum(axis=1)
    summary = {
        "soundscapes": spec.n_soundscapes,
        "rows": len(truth),
        "training_windows": len(windows),
        "windows_used": int(lines["source_row_id"].nunique()),
        "species_per_row": float(per_row.mean()),
        "output": str(output),
    }
    write_csv(output / SOURCES, lines)
    write_csv(output / TRUTH, truth)  # last: its presence marks a finished folder
    log.info("wrote %d unlabelled rows to %s", len(truth), output / AUDIO_DIR)
    print(f"train_soundscapes at {output}: {json.dumps(summary)}")
    return summary
