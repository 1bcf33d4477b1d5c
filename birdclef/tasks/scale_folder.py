"""Task `scale_folder`: a folder of the competition's shape and size from the audio at hand.

    python run.py task=scale_folder task.source=../shared/data/real_xc task.output=data/scale
    python run.py task=cache data.root=data/scale        # then train, sweep, eda ... on it

For rehearsing what happens at the competition's size (cache build, disk, memory, loader,
sweeps) without its 12 GB download. It writes, under `task.output`:

- `train_audio/<label>/<stem>.ogg`: `task.recordings` (28,000) recordings, each a hard link
  (a symbolic link across file systems) to one of `task.source`'s training recordings, taken in
  a seeded order and cycled: no audio is copied, yet every recording is decoded on its own.
- `train.csv` with the competition's columns: `task.classes` (206) labels (the source's, then
  made-up eBird-like codes for birds and iNaturalist-like numeric ids for the other taxa, read
  as strings), recordings per class from a clipped power law (a few classes with 1-2 recordings,
  the largest about `task.max_per_class`), secondary labels on a share of the recordings (some
  outside the 206), XC / iNat / CSA collections and Xeno-canto ratings in steps of 0.5.
- `train_soundscapes/`: `task.soundscapes` (9,726) one-minute files, links to
  `task.minute_files` distinct minutes cut from the source's audio and written once.
- `taxonomy.csv`, `sample_submission.csv` (header only), an empty `test_soundscapes/`, and
  `scale.json` (what was made: counts, hours, per-class spread), written last.

The labels do not describe the audio (the links are cycled): the folder measures time, disk and
memory, not accuracy. Links and files are made atomically; a rerun skips what exists, so a
killed build resumes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from birdclef.core.errors import ConfigError, DataError
from birdclef.core.io import write_csv, write_json, write_text
from birdclef.data.audio import audio_seconds, load_audio, write_audio
from birdclef.data.metadata import load_metadata
from birdclef.runs.envelope import task

log = logging.getLogger(__name__)

SAMPLE_RATE = 32000  # Hz, the competition's audio
MINUTE = 60  # s, a train soundscape's length
CLASS_SHARES = {
    "Aves": 0.71,
    "Amphibia": 0.17,
    "Insecta": 0.08,
    "Mammalia": 0.04,
}  # about the 206's
COLLECTIONS = {"XC": 0.70, "iNat": 0.25, "CSA": 0.05}
TYPES = ["['song']", "['call']", "['call', 'song']", "['flight call']", "[]"]
SUMMARY = "scale.json"  # written last: a folder with it is finished


def class_table(source_classes: dict[str, str], n_classes: int, rng) -> pd.DataFrame:
    """The source's classes (label -> taxon), then made-up ones to `n_classes`, with about the
    206's taxa."""
    rows = [{"primary_label": label, "class_name": name or "Aves"}
            for label, name in list(source_classes.items())[:n_classes]]  # fmt: skip
    taxa = list(CLASS_SHARES)
    while len(rows) < n_classes:
        name = rng.choice(taxa, p=list(CLASS_SHARES.values()))
        label = f"sc{len(rows):03d}x1" if name == "Aves" else str(1_000_000 + len(rows) * 137)
        rows.append({"primary_label": label, "class_name": name})
    table = pd.DataFrame(rows)
    table["inat_taxon_id"] = ""
    table["scientific_name"] = "Scalus " + table["primary_label"]
    table["common_name"] = "Rehearsal " + table["primary_label"]
    return table[["primary_label", "inat_taxon_id", "scientific_name", "common_name", "class_name"]]


def class_counts(n_classes: int, n_recordings: int, largest: int) -> np.ndarray:
    """Recordings per class, falling geometrically from `largest` to 1 over the classes' ranks,
    scaled to sum to `n_recordings` (the competition: a few classes with 1-2 recordings, the
    largest about 1,000, the median a few dozen)."""
    if n_recordings < n_classes or largest * n_classes < n_recordings:
        raise ConfigError(
            f"task.recordings={n_recordings} must lie between task.classes={n_classes} and "
            f"task.classes x task.max_per_class={n_classes * largest}."
        )
    base = float(largest) ** (1.0 - np.linspace(0.0, 1.0, n_classes))

    def counts_at(scale: float) -> np.ndarray:
        return np.clip(np.round(base * scale), 1, largest).astype(int)

    low, high = 0.0, float(n_recordings)
    for _ in range(60):  # the scale whose total is closest from below
        mid = (low + high) / 2
        low, high = (mid, high) if counts_at(mid).sum() <= n_recordings else (low, mid)
    counts = counts_at(low)
    for i in range(n_recordings - int(counts.sum())):  # the remainder, one each, largest first
        room = np.flatnonzero(counts < largest)
        counts[room[i % len(room)]] += 1
    return counts


def link(target: Path, source: Path) -> None:
    """`target` -> `source` as a hard link, or a symbolic one across file systems; atomic."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        os.symlink(source.resolve(), tmp)
    os.replace(tmp, target)


def train_table(classes: pd.DataFrame, counts: np.ndarray, spec, rng) -> pd.DataFrame:
    labels = classes["primary_label"].tolist()
    primary = np.repeat(labels, counts)
    n = len(primary)
    collection = rng.choice(list(COLLECTIONS), size=n, p=list(COLLECTIONS.values()))
    stems = [f"{c}{100000 + i}" for i, c in enumerate(collection)]  # XC100000.ogg, iNat100001.ogg
    rating = np.where(collection == "XC", rng.choice(np.arange(0, 5.5, 0.5), size=n,
                      p=_rating_shares()), 0.0)  # fmt: skip
    secondary = []
    for label in primary:
        if rng.random() < float(spec.secondary_share):
            k = int(rng.integers(1, 3))
            picked = [str(x) for x in rng.choice(labels, size=k, replace=False) if x != label]
            if rng.random() < 0.1:
                picked.append("outside1")  # a species outside the 206, as in the real train.csv
            secondary.append(str(picked))
        else:
            secondary.append("[]")
    return pd.DataFrame({
        "primary_label": primary,
        "secondary_labels": secondary,
        "type": rng.choice(TYPES, size=n),
        "filename": [f"{p}/{s}.ogg" for p, s in zip(primary, stems, strict=True)],
        "collection": collection,
        "rating": rating,
        "url": [f"https://example.org/{s}" for s in stems],
        "latitude": np.round(rng.uniform(-4.2, 12.5, size=n), 4),
        "longitude": np.round(rng.uniform(-79.0, -66.9, size=n), 4),
        "scientific_name": "Scalus " + pd.Series(primary),
        "common_name": "Rehearsal " + pd.Series(primary),
        "author": "birdclef scale rehearsal",
        "license": "as the linked source recording",
    })  # fmt: skip


def _rating_shares() -> np.ndarray:
    """Xeno-canto ratings 0..5 in steps of 0.5: mostly 3.5-5, some unrated (0)."""
    shares = np.array([8, 0.5, 0.5, 0.5, 1, 1, 3, 6, 12, 18, 22], dtype=float)
    return shares / shares.sum()


def minute_files(source_paths: list[Path], folder: Path, n: int) -> list[Path]:
    """`n` distinct one-minute files cut from the source recordings (concatenated), once."""
    targets = [folder / f"minute_{i:03d}.ogg" for i in range(n)]
    if all(t.is_file() for t in targets):
        return targets
    stream, need = [], n * MINUTE * SAMPLE_RATE
    for path in source_paths:
        stream.append(load_audio(path, SAMPLE_RATE))
        if sum(len(s) for s in stream) >= need:
            break
    audio = np.resize(np.concatenate(stream), need)
    for i, target in enumerate(tqdm(targets, desc="one-minute files", unit="file")):
        if not target.is_file():
            piece = audio[i * MINUTE * SAMPLE_RATE : (i + 1) * MINUTE * SAMPLE_RATE]
            write_audio(target, piece, SAMPLE_RATE)
    return targets


@task
def run(cfg: DictConfig) -> dict:
    t = cfg.task
    if t.source is None or t.output is None:
        raise ConfigError(
            "give task.source=<a competition-layout folder> and task.output=<new folder>."
        )
    source, out = Path(t.source), Path(t.output)
    if (out / SUMMARY).is_file():
        log.info("scale_folder: %s is finished (%s); delete it to rebuild", out, SUMMARY)
        return {f"scale/{k}": v for k, v in pd.read_json(out / SUMMARY, typ="series").items()
                if isinstance(v, int | float)}  # fmt: skip
    meta = load_metadata(source)
    audio = [meta.audio_path(f) for f in meta.train["filename"]]
    audio = [p for p in audio if p.is_file()]
    if not audio:
        raise DataError(f"task.source={source} has no readable train_audio recordings to link.")
    rng = np.random.default_rng(int(t.seed))
    classes = class_table(
        {c: meta.class_names.get(c, "") for c in meta.classes}, int(t.classes), rng
    )
    counts = class_counts(int(t.classes), int(t.recordings), int(t.max_per_class))
    train = train_table(classes, counts, t, rng)
    order = [audio[i] for i in rng.permutation(len(audio))]
    seconds_of = {p: audio_seconds(p) for p in order}
    sources = [order[i % len(order)] for i in range(len(train))]
    for name, src in tqdm(list(zip(train["filename"], sources, strict=True)),
                          desc="linking train_audio", unit="file"):  # fmt: skip
        link(out / "train_audio" / name, src)
    minutes = minute_files(order, out / "minutes", int(t.minute_files))
    for i in tqdm(range(int(t.soundscapes)), desc="linking train_soundscapes", unit="file"):
        link(out / "train_soundscapes" / f"SC{i:05d}_20240401_{i % 24:02d}0000.ogg",
             minutes[i % len(minutes)])  # fmt: skip
    (out / "test_soundscapes").mkdir(exist_ok=True)
    write_csv(out / "taxonomy.csv", classes)
    write_csv(
        out / "sample_submission.csv", pd.DataFrame(columns=["row_id", *classes["primary_label"]])
    )
    write_csv(out / "train.csv", train)
    write_text(out / "recording_location.txt", "A scale rehearsal: links to real recordings.\n")
    hours = sum(seconds_of[s] for s in sources) / 3600.0
    summary = {
        "recordings": len(train),
        "classes": int(t.classes),
        "train_audio_hours": hours,
        "soundscapes": int(t.soundscapes),
        "soundscape_hours": int(t.soundscapes) * MINUTE / 3600.0,
        "per_class_min": int(counts.min()),
        "per_class_median": float(np.median(counts)),
        "per_class_max": int(counts.max()),
        "with_secondary": int((train["secondary_labels"] != "[]").sum()),
        "source_recordings": len(order),
    }
    write_json(out / SUMMARY, summary)
    log.info("scale_folder: %s: %s", out, summary)
    return {f"scale/{k}": float(v) for k, v in summary.items()}
