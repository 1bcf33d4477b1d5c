"""Task `mix`: a competition-layout folder whose test soundscapes mix real labelled windows (multi-label).

    python run.py task=mix task.source=../shared/data/real_xc task.output=data/real_xc_mix
    python run.py data.root=data/real_xc_mix   # train on the source's train_audio, score on the mixtures

Only the source's labelled test soundscapes are cut (never train_audio, which the new
folder links to for training). Each file is written atomically and the labels last,
so a killed run leaves no half file; rerunning the same settings resumes.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from birdclef.core.errors import DataError
from birdclef.core.io import stable_hash, write_csv, write_json, write_text
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.audio import write_audio
from birdclef.data.folders import (
    AUDIO_DIR,
    LABELS,
    README,
    SOURCES,
    SPEC,
    clear_output,
    folders,
    link_training_data,
    load_windows,
    output_state,
)
from birdclef.data.metadata import find_soundscape_labels, load_metadata, load_soundscape_labels
from birdclef.data.mixtures import (
    FADE_SECONDS,
    PEAK,
    SILENT_RMS,
    SOURCE,
    VERSION,
    mixture_truth,
    plan_mixtures,
    render_soundscape,
    rms,
    split_rows,
)
from birdclef.runs.envelope import task

log = logging.getLogger(__name__)


def summarize(truth: pd.DataFrame, plan: pd.DataFrame) -> dict:
    """Counts of the mixed rows: species present, positives per row, source and background windows used."""
    values = truth.drop(columns="row_id").to_numpy()
    per_species = values.sum(axis=0)
    present = per_species[per_species > 0]
    sources = plan["component"] == SOURCE
    return {
        "soundscapes": int(plan["stem"].nunique()),
        "rows": len(truth),
        "species": len(present),
        "positives": int(values.sum()),
        "positives_per_row": {
            int(k): int(v) for k, v in sorted(Counter(values.sum(axis=1)).items())
        },
        "rows_per_species": {
            "min": int(present.min()),
            "median": float(np.median(present)),
            "max": int(present.max()),
        },  # fmt: skip
        "source_windows": int(plan.loc[sources, "source_row_id"].nunique()),
        "background_windows": int(plan.loc[~sources, "source_row_id"].nunique()),
    }


def readme(fingerprint: dict, summary: dict, source: Path, output: Path) -> str:
    spec, per_row, per_species = (
        fingerprint["spec"],
        summary["positives_per_row"],
        summary["rows_per_species"],
    )
    low, high = spec["sources_per_window"]
    return f"""# {output.name}: multi-label mixtures of real labelled windows

Made by `python run.py task=mix task.source={source} task.output={output}` (birdclef.tasks.mix)
with seed {spec["seed"]}; every setting is in `{SPEC}`. Train on the source's train_audio and
score on these rows with `python run.py data.root={output}`.

How: each {ROW_SECONDS}-s row is one background window (a row of the source's soundscape labels
with no species) plus {low} to {high} labelled windows (rows with a species), all cut from the
source's test_soundscapes at [end - {ROW_SECONDS} s, end). Each labelled window is scaled to an SNR
drawn uniformly from {spec["snr_db"]} dB: its RMS over the background window's RMS. Species are
drawn evenly (not by their row counts) and each labelled window adds a species not yet in the
row. Rows are faded in and out over {FADE_SECONDS * 1000:g} ms; a soundscape peaking above {PEAK} is
scaled down as a whole. A row's truth is the union of its labelled windows' labels.

| what | count |
|---|---|
| soundscapes (`{AUDIO_DIR}/`, {spec["soundscape_seconds"]} s, {spec["sample_rate"] / 1000:g} kHz mono Ogg Vorbis) | {summary["soundscapes"]} |
| rows (`{LABELS}`) | {summary["rows"]} |
| species present | {summary["species"]} |
| positives | {summary["positives"]} |
| rows by species per row | {", ".join(f"{k}: {v}" for k, v in per_row.items())} |
| rows per species, min / median / max | {per_species["min"]} / {per_species["median"]:g} / {per_species["max"]} |
| distinct labelled windows used | {summary["source_windows"]} |
| distinct background windows used | {summary["background_windows"]} |

`{SOURCES}` lists every component of every row (source row id, SNR in dB). `train_audio`
links to the source's (held out from its test soundscapes); train.csv, taxonomy.csv and
sample_submission.csv are copies.

Caveats: windows repeat across rows (few labelled windows); background and labelled windows may
hold calls of unlabelled species, as field recordings do.
"""


@task
def run(cfg: DictConfig) -> dict:
    task = cfg.task
    spec, source, output = folders(cfg, "_mix")
    meta = load_metadata(source)
    labels = load_soundscape_labels(source, meta.classes)
    if labels is None:
        raise DataError(
            f"task.source={source} has no soundscape_labels.csv (nor {AUDIO_DIR}/soundscape_labels.csv): "
            "mixing needs labelled test soundscapes."
        )
    labels_file = find_soundscape_labels(source)
    fingerprint = {
        "source": str(source.resolve()),
        "source_labels": stable_hash(labels_file.read_text()),
        "spec": spec.as_dict(),
        "version": VERSION,
    }
    state = output_state(output, fingerprint, bool(task.overwrite))
    if state == "done":
        log.info("%s already holds these mixtures; nothing to do", output)
        return summarize(pd.read_csv(output / LABELS), pd.read_csv(output / SOURCES))

    windows = load_windows(source, labels, spec.sample_rate)
    silent = sorted(r for r, w in windows.items() if rms(w) < SILENT_RMS)
    if silent:
        log.warning("skipping %d silent labelled window(s): %s", len(silent), silent[:5])
    sources, background = split_rows(labels[~labels["row_id"].isin(silent)], meta.classes)
    plan = plan_mixtures(
        sources, background, meta.classes, spec
    )  # a bad source fails here, before any write
    truth = mixture_truth(plan, labels, meta.classes)

    if state == "replace":
        clear_output(output)
    (output / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    write_json(output / SPEC, fingerprint)
    link_training_data(source, output)
    for stem, lines in tqdm(plan.groupby("stem", sort=True), desc="mixing", unit="soundscape"):
        path = output / AUDIO_DIR / f"{stem}.ogg"
        if not path.is_file():  # an earlier run of the same settings wrote it whole
            write_audio(path, render_soundscape(lines, windows, spec.sample_rate), spec.sample_rate)
    summary = summarize(truth, plan)
    write_csv(output / SOURCES, plan)
    write_text(output / README, readme(fingerprint, summary, source, output))
    write_csv(output / LABELS, truth)  # last: its presence marks a finished folder
    log.info("wrote %d rows of %d species to %s", summary["rows"], summary["species"], output)
    print(f"mixtures at {output}: {json.dumps(summary)}")
    print(f"train and score on them with: python run.py data.root={output}")
    return summary
