"""Task `mix_recordings`: a multi-label training set from real audio, to measure multi-label targets.

    python run.py task=mix_recordings task.source=../shared/data/real_xc task.output=data/real_xc_multi
    python run.py task=evaluate "task.roots=[data/real_xc_multi]" data.split.group_by=mix_group

A folder whose `train.csv` names no secondary species (real_xc) cannot show what secondary
labels do to training. This task writes a new folder where every training recording of the
source is kept whole as the primary species and 1-2 windows of other species, cut from other
recordings, are mixed into it at a lower level; those species become its `secondary_labels`,
as the competition's train.csv lists birds heard in the background. `mixed_sources.csv` says
where each went (mixed file, species, start and end in seconds): `task=evaluate` counts a
secondary species present only on the 5-s rows that hold at least a second of it, where the
competition's recording-level labels would mark every row. Only training audio goes
in. Recordings are dealt into `n_groups` groups (the `mix_group` column, stratified by
species) and mixed only within their group, so a K-fold split by `data.split.group_by=mix_group`
never trains on audio of a recording it validates on. The test soundscapes and CSVs are the
source's (linked). Files are written atomically, `train.csv` last; a rerun with the same
settings resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from birdclef.core.errors import ConfigError, DataError
from birdclef.core.io import write_csv, write_json
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.audio import load_audio, write_audio
from birdclef.data.folders import SPEC, copy_files, link_folder, output_state
from birdclef.data.metadata import load_metadata
from birdclef.data.mixtures import RECORDING_SOURCES, SILENT_RMS, rms
from birdclef.data.splits import fold_split
from birdclef.data.windows import cut_window, recording_window_starts
from birdclef.runs.envelope import task

log = logging.getLogger(__name__)

AUDIO_DIR = "train_audio"
COPIED = (
    "taxonomy.csv",
    "sample_submission.csv",
    "recording_location.txt",
    "soundscape_labels.csv",
)
VERSION = 2  # 2: mixed_sources.csv says where each window went (its rows' truth)


def settings(cfg: DictConfig) -> tuple[dict, Path, Path]:
    t = cfg.task
    if not t.get("source"):
        raise ConfigError(
            "task.source is not set: python run.py task=mix_recordings task.source=FOLDER"
        )
    source = Path(t.source).expanduser()
    output = Path(t.output or Path(cfg.paths.data_dir) / f"{source.resolve().name}_multi")
    if output.expanduser().resolve() == source.resolve():
        raise ConfigError(f"task.output={output} is the source folder; choose a new folder.")
    low, high = (int(v) for v in t.mixed_per_recording)
    snr_low, snr_high = (float(v) for v in t.snr_db)
    if not 1 <= low <= high or snr_low > snr_high or int(t.n_groups) < 2:
        raise ConfigError(
            f"task.mixed_per_recording={list(t.mixed_per_recording)} must be 1 <= low <= high, "
            f"task.snr_db={list(t.snr_db)} low <= high and task.n_groups={t.n_groups} >= 2."
        )
    spec = {"seed": int(t.seed), "n_groups": int(t.n_groups), "mixed": [low, high],
            "snr_db": [snr_low, snr_high], "sample_rate": int(cfg.sample_rate)}  # fmt: skip
    return spec, source, output.expanduser()


def windows_of(audio: np.ndarray, sample_rate: int) -> list[np.ndarray]:
    """The recording's audible fixed 5-s windows (the study's rule)."""
    size = ROW_SECONDS * sample_rate
    pieces = [cut_window(audio, s, size) for s in recording_window_starts(len(audio), size)]
    return [p for p in pieces if rms(p) >= SILENT_RMS]


def mix_into(
    audio: np.ndarray, piece: np.ndarray, snr_db: float, rng
) -> tuple[np.ndarray, int, int]:
    """`piece` added to `audio` at a random offset, its RMS `snr_db` below the recording's;
    returns the mixture and the piece's first and past-the-end samples in it."""
    start = int(rng.integers(0, max(len(audio) - len(piece), 0) + 1))
    piece = piece[: len(audio) - start]
    gain = rms(audio) / max(rms(piece), 1e-9) * 10 ** (snr_db / 20)
    out = audio.copy()
    out[start : start + len(piece)] += gain * piece
    return out, start, start + len(piece)


@task
def run(cfg: DictConfig) -> dict:
    spec, source, output = settings(cfg)
    meta = load_metadata(source)
    fingerprint = {"source": str(source.resolve()), "spec": spec, "version": VERSION,
                   "kind": "recordings"}  # fmt: skip
    state = output_state(output, fingerprint, bool(cfg.task.overwrite), finished="train.csv")
    if state == "done":
        log.info("%s already holds these recordings; nothing to do", output)
        return {"recordings": float(len(pd.read_csv(output / "train.csv"))), "output": str(output)}
    rate, rng = spec["sample_rate"], np.random.default_rng(spec["seed"])
    train = meta.train.reset_index(drop=True)
    groups = np.zeros(len(train), dtype=int)
    for g in range(spec["n_groups"]):  # stratified by species, as the K-fold split deals them
        groups[fold_split(train, spec["n_groups"], g, spec["seed"])] = g
    audio, pieces = {}, {}
    for filename in tqdm(train["filename"], desc="reading train_audio", unit="file"):
        try:
            audio[filename] = load_audio(meta.audio_path(filename), rate)
        except DataError as err:
            log.warning("skipped %s (%s)", filename, err)
            continue
        pieces[filename] = windows_of(audio[filename], rate)
    (output / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    write_json(output / SPEC, fingerprint)
    copy_files(source, output, COPIED)
    if (source / "test_soundscapes").is_dir():
        link_folder(source, output, "test_soundscapes")
    rows, sources = [], []
    for i, row in tqdm(list(train.iterrows()), desc="mixing", unit="recording"):
        if row["filename"] not in audio:
            continue
        others = [
            j for j in np.flatnonzero(groups == groups[i])
            if train.at[j, "primary_label"] != row["primary_label"] and pieces.get(train.at[j, "filename"])
        ]  # fmt: skip
        k = min(int(rng.integers(spec["mixed"][0], spec["mixed"][1] + 1)), len(others))
        picked = rng.choice(others, size=k, replace=False) if k else []
        mixed, secondary = audio[row["filename"]], []
        name = f"{row['primary_label']}/{Path(row['filename']).stem}_multi.ogg"
        for j in picked:
            other = train.at[j, "filename"]
            w = int(rng.integers(len(pieces[other])))
            snr = float(rng.uniform(*spec["snr_db"]))
            mixed, start, end = mix_into(mixed, pieces[other][w], snr, rng)
            secondary.append(train.at[j, "primary_label"])
            sources.append(
                {"filename": row["filename"], "mixed": name, "species": secondary[-1],
                 "start": start / rate, "end": end / rate, "source": other, "window": w,
                 "snr_db": snr}
            )  # fmt: skip
        path = output / AUDIO_DIR / name
        if not path.is_file():
            peak = float(np.abs(mixed).max())
            write_audio(path, mixed / peak * 0.9 if peak > 1.0 else mixed, rate)
        rows.append({**row.to_dict(), "filename": name, "secondary_labels": sorted(set(secondary)),
                     "mix_group": int(groups[i])})  # fmt: skip
    table = pd.DataFrame(rows)
    per_recording = float(table["secondary_labels"].map(len).mean())
    for column in ("secondary_labels", "type"):  # lists back to their literal text, as in train.csv
        if column in table:
            table[column] = table[column].map(lambda v: str(list(v)))
    write_csv(output / RECORDING_SOURCES, pd.DataFrame(sources))
    write_csv(output / "train.csv", table)  # last: its presence marks a finished folder
    summary = {
        "recordings": float(len(table)),
        "secondary_per_recording": per_recording,
        "output": str(output),
    }
    log.info("wrote %d multi-label recordings to %s", len(table), output)
    return summary
