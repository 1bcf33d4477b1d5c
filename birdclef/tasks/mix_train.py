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
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from birdclef.core.errors import AudioError, DataError
from birdclef.core.io import write_csv, write_json
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.audio import load_audio, write_audio
from birdclef.data.folders import COPIED, copy_files, folders, link_folder, output_state
from birdclef.data.metadata import load_metadata
from birdclef.data.mixtures import (
    SILENT_RMS,
    mixture_truth,
    plan_mixtures,
    render_soundscape,
    rms,
)
from birdclef.data.windows import cut_window, recording_window_starts
from birdclef.runs.envelope import task

log = logging.getLogger(__name__)

AUDIO_DIR = "train_soundscapes"
TRUTH = "train_soundscapes_truth.csv"  # written last: its presence marks a finished folder
SOURCES = "train_mixture_sources.csv"
SPEC = "mix.json"
LINKED = ("train_audio", "test_soundscapes")
VERSION = 1


def training_windows(meta, sample_rate: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Every fixed 5-s window of every readable training recording, and a 0/1 label table of them.

    A window's id is `<filename>@<start sample>`; its truth is its recording's primary label.
    Unreadable or silent windows are left out (and logged).
    """
    size = ROW_SECONDS * sample_rate
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


def link_source(source: Path, output: Path) -> None:
    """Copy the small CSVs and symlink train_audio and test_soundscapes (relative)."""
    copy_files(source, output, (*COPIED, "soundscape_labels.csv"))
    for name in LINKED:
        if (source / name).is_dir():
            link_folder(source, output, name)


@task
def run(cfg: DictConfig) -> dict:
    task = cfg.task
    spec, source, output = folders(cfg, "_train")
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
    lines = plan_mixtures(labels, None, meta.classes, spec)  # no background: windows alone
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
            write_audio(path, render_soundscape(part, windows, spec.sample_rate), spec.sample_rate)
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
