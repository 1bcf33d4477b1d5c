"""Task `pseudo_label`: a teacher's soft scores for every 5-s row (SED: frame) of soundscapes.

    python run.py task=pseudo_label "teacher.models=[A.ckpt,B.onnx]"
    python run.py -m task=pseudo_label "teacher.models=[...]" teacher.shard=0,1,2,3 teacher.shards=4

Settings in the `teacher` group. Layout of `teacher.output` (default
`<paths.data_dir>/pseudo/<data root name>/<teacher key>`, the key hashing the model files'
paths, sizes and mtimes, the blend settings and the soundscape folder):
    files/<stem>.npy   float32 [rows, classes]: one finished file's blended row scores
    files/<stem>.frames.npy  float32 [rows * frames per row, classes]: its blended frame
                       scores, only when a teacher model is an SED net (below)
    files/<stem>.bad   why a file could not be scored (corrupt, empty): it gets no rows
    bad_files.csv      file, problem: every .bad marker (rewritten by each run)
    pseudo_labels.csv  row_id + one column per class (data root's column order), files in
                       sorted order; written once every file of every shard is done
    teacher.json       models (size, mtime), blend, weights, classes, counts, created; with
                       SED models also frame_models (their paths) and frame_seconds
    foreign/<i>_<name>.json  the description of each foreign model (below)
A file with a .bad, or with an .npy (and, for an SED teacher, a .frames.npy: it is written
first) is done and skipped by a rerun; the models are loaded on every run, as they tell
whether frames are due. Whichever shard finishes last merges (under a file lock); a run of
any shard with every file done merges again.

Frames: the models whose outputs include `frame_scores` (SED nets) also give their frames
laid along the file (`FilePredictor(file_frames=True)`, `frames_along_file`): frame k spans
[k, k + 1) * frame_seconds s, row r holds frames r * 5 / frame_seconds on, and with
overlapping windows (stride below 5 s) the frames falling on one file frame are averaged.
They are blended with the rows' rule and weights over the SED models alone (the others
give no frames); SED models with different frame lengths are blended on the finest grid,
each coarser frame repeated over the fine frames whose centres it holds. The merge checks
them and leaves them per file (rows x frames per row x classes x 4 bytes each, too many
for one array in memory): read one with `birdclef.data.pseudo_store.read_frames`. The rows
stay window scores (task=predict's default); for one SED model at the 5-s stride, the
maximum of a row's frames is its `predict.sed_frames=true` score.

Blending is per file: `mean` (the default) and `power` work row by row, so they equal a
blend over all rows. `rank` is refused: ranks over one file's rows (or over all rows) are
not probabilities, and pseudo-labels are sharpened and mixed in as probabilities.
A teacher model that is not this project's (an .onnx without birdclef metadata or a TF
SavedModel folder: Perch 2.0, ...) is read through `teacher.foreign`
(birdclef.inference.foreign): raw waveform windows in, its classes mapped to the taxonomy
by scientific name. A class it lacks is NaN: each cell blends only the models that score
it, and a class no model scores gets UNSCORED (0), counted in `pseudo/unscored_classes`
(the teacher's loading and blends: `birdclef.inference.teacher`).
Where the data root has `train_soundscapes_truth.csv` (the synthetic set) and the folder is
its `train_soundscapes`, the merged labels are scored against it (`pseudo/auc`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm.auto import tqdm

from birdclef.core.cpus import available_cpus
from birdclef.core.errors import ConfigError, DataError, InferenceError
from birdclef.core.io import atomic_path, stable_hash, write_json, write_text
from birdclef.core.rows import ROW_SECONDS
from birdclef.data.pseudo_store import (
    FILES,
    FRAMES,
    counts,
    frames_path,
    locked,
    merge,
    truth_metrics,
    write_bad_list,
)
from birdclef.data.root import data_root
from birdclef.inference.blend import check_weights
from birdclef.inference.foreign import descriptions, write_descriptions
from birdclef.inference.predict import AUDIO_SUFFIXES, FilePredictor, iter_predict_files
from birdclef.inference.submission import align, read_columns
from birdclef.inference.teacher import blend_covered, blend_frames, load_teacher, sed_models
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)

TRUTH = "train_soundscapes_truth.csv"  # the synthetic set's hidden truth of train_soundscapes
BLENDS = ("mean", "power")  # row-by-row blends; see the module docstring for rank
FOREIGN = "foreign"  # the target's folder of foreign model descriptions (inference.foreign)


@task
def run(cfg: DictConfig, planned: dict | None = None) -> dict:
    """Score this shard's files not yet done; merge when all are; metrics of what is covered.

    `planned`: `plan(cfg)` when the caller has already made it (task=rounds), so the
    models are not read twice.
    """
    tic = time.perf_counter()
    out = run_dir(cfg)
    p = planned if planned is not None else plan(cfg)
    s, root, folder, target, columns = (
        p[k] for k in ("settings", "root", "folder", "target", "columns")
    )
    files = soundscapes(folder)
    stems = [f.stem for f in files]
    models = write_descriptions(target / FOREIGN, p["foreign"], s["models"])
    mine = files[s["shard"] :: s["shards"]]
    # loaded on every run (bad models fail here): SED models decide which files are done
    predictor, unscored = load_teacher({**s, "models": models}, columns)
    sed = sed_models(predictor, s)
    framed, frame_models = bool(sed), [s["models"][i] for i in sed]
    todo = [f for f in mine if not done(target, f.stem, framed)]
    log.info("shard %d/%d: %d of %d files to score into %s",
             s["shard"], s["shards"], len(todo), len(mine), target)  # fmt: skip
    if sed:
        log.info("the frames of the SED models %s are stored too", frame_models)
    score_files(todo, {**s, "models": models}, columns, target / FILES, predictor, sed)
    with locked(target):
        bad = write_bad_list(target, files)
        complete = all(done(target, stem, framed) for stem in stems)
        table = (
            merge(target, files, columns, p["stamps"], s, bad, frame_models) if complete else None
        )
    counted = files if table is not None else mine  # all files once merged, else this shard's
    n_rows, n_bad = counts(target, counted)
    metrics = {
        "pseudo/files": len(counted),
        "pseudo/rows": n_rows,
        "pseudo/bad_files": n_bad,
        "pseudo/scored_files": len(todo),
        "pseudo/merged": float(table is not None),
    }
    if p["foreign"]:
        metrics["pseudo/unscored_classes"] = len(unscored)
    labelled = folder.resolve() == (root / "train_soundscapes").resolve()
    if table is not None and labelled and (root / TRUTH).is_file():
        metrics.update(truth_metrics(pd.read_csv(root / TRUTH), table, columns))
    metrics["pseudo/seconds"] = time.perf_counter() - tic
    write_json(out / "pseudo_label.json", {"output": str(target), "key": p["key"], **metrics})
    log.info("pseudo-labels in %s: %s", target, metrics)
    return metrics


def plan(cfg: DictConfig) -> dict:
    """What a run of `cfg` scores and where: checked settings, folders, the teacher key.

    The key hashes the model files' stamps, the blend settings and the soundscape folder
    (and, with foreign models, their descriptions and label files), so another teacher
    never reuses these labels; `target` is `teacher.output` or the folder of that key.
    """
    t, root = cfg.teacher, data_root(cfg)
    folder = Path(t.soundscapes) if t.soundscapes else root / "train_soundscapes"
    s = settings(t)
    f = t.foreign
    keys = ("sample_rate", "input_seconds", "output", "activation", "batch_size")
    foreign = descriptions(s["models"], f.labels, root / "taxonomy.csv", {k: f[k] for k in keys})
    stamps = model_stamps(s["models"])
    if foreign:  # their label files are part of the teacher
        stamps += model_stamps(sorted({d["labels"] for d in foreign.values()}))
    blend_settings = {k: s[k] for k in ("blend", "weights", "power", "stride_seconds")}
    parts = [stamps, blend_settings, str(folder.resolve())]
    if foreign:  # only then, so the keys of existing labels stay what they were
        parts.append({str(i): d for i, d in foreign.items()})
    key = stable_hash(parts)
    target = Path(t.output) if t.output else Path(cfg.paths.data_dir) / "pseudo" / root.name / key
    return {
        "settings": s, "root": root, "folder": folder, "foreign": foreign, "stamps": stamps,
        "key": key, "target": target, "columns": read_columns(root),
    }  # fmt: skip


def settings(t: DictConfig) -> dict:
    """The plain, checked teacher settings (every one a user can get wrong named in its error)."""
    if not t.models:
        raise ConfigError(
            'teacher.models is empty: give "teacher.models=[<run>/checkpoints/best.ckpt]" '
            "(checkpoints, exported .onnx files or OpenVINO folders)."
        )
    if t.blend not in BLENDS:
        raise ConfigError(
            f"teacher.blend={t.blend!r} is not one of {list(BLENDS)}: pseudo-labels must stay "
            "probabilities, and a rank blend gives ranks; use teacher.blend=mean (or power)."
        )
    if int(t.shards) < 1 or not 0 <= int(t.shard) < int(t.shards):
        raise ConfigError(
            f"teacher.shard={t.shard} must be in [0, teacher.shards={t.shards}) and shards >= 1."
        )
    if not 0 < float(t.stride_seconds) <= ROW_SECONDS:
        raise ConfigError(f"teacher.stride_seconds={t.stride_seconds} must be in (0, 5].")
    for m in t.models:
        if not Path(m).exists():
            raise ConfigError(f"teacher.models: {m} not found.")
    weights = None if t.weights is None else [float(w) for w in t.weights]
    try:
        check_weights(weights, len(t.models))
    except InferenceError as err:
        raise ConfigError(f"teacher.weights={weights}: one non-negative weight per model.") from err
    workers = int(t.workers) if t.workers is not None else available_cpus()
    if workers < 1 or int(t.threads) < 1:
        raise ConfigError("teacher.workers and teacher.threads must be >= 1 (workers null = all).")
    return {
        "models": [str(m) for m in t.models],
        "weights": weights,
        "blend": str(t.blend),
        "power": float(t.power),
        "stride_seconds": float(t.stride_seconds),
        "shard": int(t.shard),
        "shards": int(t.shards),
        "workers": workers,
        "threads": int(t.threads),
    }


def soundscapes(folder: Path) -> list[Path]:
    """The sorted audio files of `folder` (teacher.soundscapes), refusing a missing or empty one."""
    if not folder.is_dir():
        raise DataError(
            f"teacher.soundscapes={folder} is not a folder; point it at a folder of unlabelled "
            "soundscapes (null = the data root's train_soundscapes)."
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DataError(
            f"{folder} holds no audio ({', '.join(AUDIO_SUFFIXES)} files); point "
            "teacher.soundscapes at a folder of unlabelled soundscapes."
        )
    stems = [p.stem for p in files]
    if len(set(stems)) < len(stems):
        raise DataError(f"{folder} holds files with the same name and different suffixes.")
    return files


def model_stamps(models: list[str]) -> list[list]:
    """[path, size, mtime_ns] of every model file (each file of an OpenVINO folder)."""
    stamps = []
    for m in models:
        path = Path(m).resolve()
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                st = f.stat()
                stamps.append([str(f), st.st_size, st.st_mtime_ns])
    return stamps


def done(target: Path, stem: str, framed: bool = False) -> bool:
    """Whether `stem` is finished: a .bad marker, or its rows (and with `framed` its frames)."""
    if (target / FILES / f"{stem}.bad").exists():
        return True
    rows = (target / FILES / f"{stem}.npy").exists()
    return rows and (not framed or frames_path(target, stem).exists())


def score_files(
    todo: list[Path], s: dict, columns: list[str], folder: Path, predictor: FilePredictor,
    sed: Sequence[int] = (),
) -> None:  # fmt: skip
    """Score `todo`, writing each file's blended rows (or its .bad marker) as soon as it is done.

    With `sed` (model indices) the blend of those models' frames is written first, so a
    file whose run was killed between the two is not done and is scored again.
    """
    if not todo:
        return
    _, index = align([m.classes for m in predictor.models], s["models"], columns)
    bar = tqdm(total=len(todo), desc="pseudo-label", unit="file")
    results = iter_predict_files(
        s["models"], todo, s["threads"], s["workers"], s["stride_seconds"], False, "f32",
        predictor, file_frames=bool(sed),
    )  # fmt: skip
    for result in results:
        stem = Path(result.path).stem
        if result.error is not None:
            log.warning("%s: %s (no pseudo-labels)", result.path, result.error)
            write_text(folder / f"{stem}.bad", f"{result.error}\n")
        else:
            if sed:
                frames = blend_frames(result, sed, index, s)
                with atomic_path(folder / f"{stem}{FRAMES}") as tmp, open(tmp, "wb") as fh:
                    np.save(fh, np.asarray(frames, dtype=np.float32))
            per_model = [result.scores[m][:, index[m]] for m in range(len(index))]
            rows = blend_covered(per_model, s["blend"], s["weights"], s["power"])
            with atomic_path(folder / f"{stem}.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.asarray(rows, dtype=np.float32))
        bar.update(1)
    bar.close()
