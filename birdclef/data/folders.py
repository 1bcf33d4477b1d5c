"""Competition-layout folders derived from another (task=mix, task=mix_train): resume state, copies, links.

Each derived folder records its settings and the source's fingerprint in `mix.json`; its
`finished` file is written last, so a killed build resumes and a finished one is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from birdclef.core.errors import ConfigError
from birdclef.core.io import atomic_path, write_csv
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.audio import load_audio
from birdclef.data.mixtures import MixSpec
from birdclef.data.windows import cut_window

log = logging.getLogger(__name__)

LABELS = "soundscape_labels.csv"  # written last: its presence marks a finished folder
SOURCES = "mixture_sources.csv"  # every component of every mixed row
SPEC = "mix.json"  # the settings and the source's fingerprint; marks a folder task=mix made
README = "README.md"
COPIED = ("train.csv", "taxonomy.csv", "sample_submission.csv", "recording_location.txt")
AUDIO_DIR = "test_soundscapes"


def load_windows(root: Path, labels: pd.DataFrame, sample_rate: int) -> dict[str, np.ndarray]:
    """Every labelled row's window [end - 5 s, end) of `root/test_soundscapes/<stem>.ogg`, by row id."""
    window_samples = ROW_SECONDS * sample_rate
    windows = {}
    groups = labels.groupby("stem", sort=True)
    for stem, rows in tqdm(
        groups, total=groups.ngroups, desc="reading test soundscapes", unit="file"
    ):
        audio = load_audio(root / AUDIO_DIR / f"{stem}.ogg", sample_rate)
        for rid, end in zip(rows["row_id"], rows["end"], strict=True):
            windows[rid] = cut_window(
                audio, int(end) * sample_rate - window_samples, window_samples
            ).copy()
    return windows


def output_state(output: Path, fingerprint: dict, overwrite: bool, finished: str = LABELS) -> str:
    """What to do with `output`: "new", "resume" (same settings, unfinished), "done" or "replace".

    A folder is done when its `finished` file (written last) exists.

    Only a folder that an earlier `task=mix` made (it has mix.json) is ever replaced,
    and only with `task.overwrite=true`.
    """
    if not output.exists() or not any(output.iterdir()):
        return "new"
    spec_path = output / SPEC
    if not spec_path.is_file():
        raise ConfigError(
            f"task.output={output} already exists and was not made by task=mix or mix_train (no {SPEC}); "
            "choose a new or empty folder."
        )
    if json.loads(spec_path.read_text()) == fingerprint:
        return "done" if (output / finished).is_file() else "resume"
    if not overwrite:
        raise ConfigError(
            f"task.output={output} holds mixtures made with other settings or another source "
            f"(see {spec_path}); choose another task.output or pass task.overwrite=true to replace them."
        )
    return "replace"


def clear_output(output: Path) -> None:
    """Remove what an earlier task=mix wrote into `output`, and nothing else."""
    log.info("replacing the mixtures in %s (task.overwrite=true)", output)
    for name in (LABELS, SOURCES, README, SPEC, *COPIED):
        (output / name).unlink(missing_ok=True)
    for path in (output / AUDIO_DIR).glob("*.ogg"):
        path.unlink()
    if (output / "train_audio").is_symlink():
        (output / "train_audio").unlink()


def copy_files(source: Path, output: Path, names) -> None:
    """Copy the small files `names` of `source` that exist into `output`, atomically."""
    for name in names:
        if (source / name).is_file():
            with atomic_path(output / name) as tmp:
                shutil.copyfile(source / name, tmp)


def link_folder(source: Path, output: Path, name: str) -> None:
    """Symlink `output/name` to `source/name` (relative); an existing other file is an error."""
    link = output / name
    target = os.path.relpath((source / name).resolve(), output.resolve())
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.exists() or link.is_symlink():
        raise ConfigError(f"{link} exists and is not a link to {source / name}; remove it first.")
    os.symlink(target, link, target_is_directory=True)


def link_training_data(source: Path, output: Path) -> None:
    """Copy the small CSVs and symlink train_audio, so data.root=output trains as on source."""
    copy_files(source, output, COPIED)
    link_folder(source, output, "train_audio")


def folders(cfg: DictConfig, suffix: str) -> tuple[MixSpec, Path, Path]:
    """The mixing settings, the source folder and the output folder (default: <data_dir>/<source><suffix>)."""
    task = cfg.task
    if not task.get("source"):
        raise ConfigError(
            f"task.source is not set: python run.py task={cfg.task.fn.split('.')[-2]} "
            "task.source=PATH/TO/COMPETITION_FOLDER"
        )
    spec = MixSpec.from_config({**task, "sample_rate": cfg.sample_rate})
    source = Path(task.source).expanduser()
    output = Path(
        task.output or Path(cfg.paths.data_dir) / f"{source.resolve().name}{suffix}"
    ).expanduser()
    if output.resolve() == source.resolve():
        raise ConfigError(f"task.output={output} is the source folder; choose a new folder.")
    return spec, source, output


def subset_root(source: Path, filenames: list[str], output: Path) -> Path:
    """A competition-layout folder of only `filenames` of `source`'s train.csv: its own
    train.csv, the taxonomy and sample submission copied, train_audio linked, no test."""
    train = pd.read_csv(source / "train.csv", dtype=str)
    keep = train[train["filename"].isin(set(filenames))]
    missing = set(filenames) - set(keep["filename"])
    if missing:
        raise ConfigError(f"{sorted(missing)[:3]} are not in {source / 'train.csv'}.")
    output.mkdir(parents=True, exist_ok=True)
    copy_files(source, output, ("taxonomy.csv", "sample_submission.csv"))
    link_folder(source, output, "train_audio")
    write_csv(output / "train.csv", keep)
    return output
