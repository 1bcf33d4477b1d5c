"""Write the built-in synthetic dataset in the competition layout, deterministically per seed.

Beside the competition files it keeps the hidden truth that real data lacks:
    train_audio_segments.csv     every call, secondary call, voice intro and silent stretch
    train_soundscapes_truth.csv  per-window presence for train_soundscapes (unlabelled there)
    synth_spec.json              the spec the folder was generated from
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from birdclef.core.io import stable_hash, write_csv, write_json
from birdclef.core.rows import ROW_SECONDS, row_id
from birdclef.data.audio import write_audio
from birdclef.data.synthetic.calls import TAXA, draw_voiceprint
from birdclef.data.synthetic.render import render_recording, render_soundscape
from birdclef.data.synthetic.spec import SynthSpec, plan_classes, plan_recordings
from birdclef.data.synthetic.speech import espeak_available

log = logging.getLogger(__name__)


def _render_job(job: dict) -> list[dict]:
    rng = np.random.default_rng(job["seed"])
    if job["kind"] == "recording":
        audio, events = render_recording(job, rng)
    else:
        audio, events = render_soundscape(job, rng)
    write_audio(job["path"], audio, job["sample_rate"])
    return events


def resolve_voice(spec: SynthSpec) -> SynthSpec:
    """`spec` with the voice that will really be rendered: espeak falls back to the formant toy
    where espeak-ng is not installed, so the folder's key names the voice its intros hold."""
    if spec.voice == "espeak" and not espeak_available():
        log.warning(
            "synth.voice=espeak but espeak-ng is not installed (apt-get install espeak-ng): "
            "the synthetic intros use the formant toy voice instead"
        )
        return replace(spec, voice="formant")
    return spec


def dataset_dir(data_dir: str | Path, spec: SynthSpec) -> Path:
    """Where the dataset of `spec` lives: one folder per distinct spec, so changes never mix."""
    return Path(data_dir) / "synthetic" / stable_hash(resolve_voice(spec).as_dict())


def ensure_synthetic(data_dir: str | Path, spec: SynthSpec, workers: int | None = None) -> Path:
    """Return the folder of the dataset of `spec`, generating it first if absent."""
    spec = resolve_voice(spec)
    root = dataset_dir(data_dir, spec)
    if (root / "synth_spec.json").is_file():
        return root
    return generate(root, spec, workers)


def generate(root: str | Path, spec: SynthSpec, workers: int | None = None) -> Path:
    """Generate into a temporary sibling folder and rename it onto `root` when complete.

    A complete `root` (with its synth_spec.json) is returned as it is; parallel jobs
    that generate the same dataset at once all end with the one complete folder.
    """
    root = Path(root)
    if (root / "synth_spec.json").is_file():
        return root
    if root.exists():
        raise FileExistsError(f"{root} exists but is not a complete synthetic dataset; remove it.")
    spec = resolve_voice(spec)
    log.info(
        "synthetic intros: %s",
        "real speech (espeak-ng)" if spec.voice == "espeak" else "formant toy voice",
    )
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_dataset(tmp, spec, workers)
        try:
            tmp.rename(root)
        except OSError:  # another process (a parallel sweep job) finished the same dataset first
            if not (root / "synth_spec.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("synthetic dataset written to %s", root)
    return root


def _write_dataset(root: Path, spec: SynthSpec, workers: int | None) -> None:
    rng = np.random.default_rng(spec.seed)
    taxonomy = plan_classes(spec, rng)
    prints = {
        row.primary_label: draw_voiceprint(row.class_name, row.band, rng)
        for row in taxonomy.itertuples()
    }
    train = plan_recordings(spec, taxonomy, rng)
    classes = taxonomy["primary_label"].tolist()

    jobs = []
    for i, row in enumerate(train.itertuples()):
        job = dict(row._asdict(), kind="recording", path=str(root / "train_audio" / row.filename),
                   seed=[spec.seed, 1, i], sample_rate=spec.sample_rate, voice=spec.voice,
                   voiceprints={lbl: prints[lbl] for lbl in [row.primary_label, *row.audible_secondary]})  # fmt: skip
        jobs.append(job)
    scapes = []
    for split, count in (("train", spec.n_train_soundscapes), ("test", spec.n_test_soundscapes)):
        for i in range(count):
            stem = (
                f"{split}_{spec.seed}_{i:04d}"
                if split == "test"
                else f"H{i:02d}_{spec.seed}_S{i:04d}"
            )
            k = int(
                rng.integers(spec.species_per_soundscape[0], spec.species_per_soundscape[1] + 1)
            )
            species = rng.choice(classes, size=min(k, len(classes)), replace=False).tolist()
            scapes.append((split, stem))
            jobs.append({"kind": "soundscape", "stem": stem, "species": species, "split": split,
                         "path": str(root / f"{split}_soundscapes" / f"{stem}.ogg"),
                         "seed": [spec.seed, 2 if split == "train" else 3, i], "sample_rate": spec.sample_rate,
                         "seconds": spec.soundscape_seconds, "window_seconds": ROW_SECONDS,
                         "snr_db": spec.soundscape_snr_db, "voiceprints": {s: prints[s] for s in species}})  # fmt: skip

    workers = os.cpu_count() if workers is None else workers
    bar = tqdm(total=len(jobs), desc="synthetic audio", unit="file", leave=False)
    results = []
    if workers and workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for events in pool.map(_render_job, jobs, chunksize=4):
                results.append(events)
                bar.update()
    else:
        for job in jobs:
            results.append(_render_job(job))
            bar.update()
    bar.close()

    n_rec = len(train)
    segments = pd.DataFrame(
        [e for events in results[:n_rec] for e in events],
        columns=["filename", "start", "end", "kind", "label"],
    )
    write_csv(root / "train_audio_segments.csv", segments)
    write_csv(root / "taxonomy.csv", taxonomy.drop(columns="band"))
    write_csv(root / "train.csv", _train_csv(train))
    for split in ("train", "test"):
        events = [
            e for (s, _), ev in zip(scapes, results[n_rec:], strict=True) if s == split for e in ev
        ]
        stems = [stem for s, stem in scapes if s == split]
        truth = _window_truth(stems, events, classes, spec)
        name = (
            "train_soundscapes_truth.csv"
            if split == "train"
            else "test_soundscapes/soundscape_labels.csv"
        )
        (root / f"{split}_soundscapes").mkdir(parents=True, exist_ok=True)
        write_csv(root / name, truth)
        if split == "test":
            uniform = truth.copy()
            uniform[classes] = 1.0 / len(classes)
            write_csv(root / "sample_submission.csv", uniform)
    (root / "recording_location.txt").write_text(
        "Synthetic soundscapes generated by birdclef.data.synthetic.\n"
    )
    write_json(root / "synth_spec.json", spec.as_dict())


def _train_csv(train: pd.DataFrame) -> pd.DataFrame:
    out = train.copy()
    out["secondary_labels"] = [str(list(x)) for x in out["secondary_labels"]]
    out["type"] = [str(list(x)) for x in out["type"]]
    columns = ["primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
               "latitude", "longitude", "scientific_name", "common_name", "author", "license"]  # fmt: skip
    return out[columns]


def _window_truth(
    stems: list[str], events: list[dict], classes: list[str], spec: SynthSpec
) -> pd.DataFrame:
    """One row per 5-s window; a class is present where one of its calls was placed."""
    ends = list(range(ROW_SECONDS, spec.soundscape_seconds + 1, ROW_SECONDS))
    rows = [row_id(stem, end) for stem in stems for end in ends]
    truth = pd.DataFrame(0, index=rows, columns=classes, dtype=np.int64)
    for e in events:
        truth.loc[row_id(e["filename"], e["window_end"]), e["label"]] = 1
    return truth.rename_axis("row_id").reset_index()


__all__ = ["TAXA", "SynthSpec", "dataset_dir", "ensure_synthetic", "generate"]
