"""The folder of one teacher's pseudo-labels: per-file rows, bad-file markers, the merge, a lock.

files/<stem>.npy         one soundscape's rows [rows, classes], written atomically when scored
files/<stem>.frames.npy  SED teachers only: its frames [rows * frames per row, classes],
                         written (atomically) before the rows; read with `read_frames`
files/<stem>.bad         why a soundscape could not be scored
pseudo_labels.csv        row_id + classes, every file's rows (written by the last shard, locked)
teacher.json             the models, blend and counts behind them (+ frame_seconds, frame_models)
bad_files.csv            the unreadable soundscapes
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.core.errors import DataError
from birdclef.core.io import write_csv, write_json
from birdclef.core.metric import macro_auc
from birdclef.core.rows import ROW_SECONDS, row_id
from birdclef.inference.submission import write_submission

FILES, LABELS, BAD, LOCK = "files", "pseudo_labels.csv", "bad_files.csv", ".lock"
TEACHER, FRAMES = "teacher.json", ".frames.npy"  # FRAMES: the suffix of a file's frames


def frames_path(target: Path, stem: str) -> Path:
    """Where the frames of soundscape `stem` are (SED teachers only)."""
    return Path(target) / FILES / f"{stem}{FRAMES}"


def counts(target: Path, files: list[Path]) -> tuple[int, int]:
    """(rows, bad files) written so far for `files`."""
    rows = [target / FILES / f"{p.stem}.npy" for p in files]
    n_rows = sum(len(np.load(p, mmap_mode="r")) for p in rows if p.exists())
    return n_rows, sum((target / FILES / f"{p.stem}.bad").exists() for p in files)


@contextlib.contextmanager
def locked(target: Path):
    """An exclusive lock on `target`, so concurrent shards merge one after another."""
    target.mkdir(parents=True, exist_ok=True)
    with open(target / LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_bad_list(target: Path, files: list[Path]) -> pd.DataFrame:
    markers = [(p, target / FILES / f"{p.stem}.bad") for p in files]
    bad = pd.DataFrame(
        [{"file": str(p), "problem": m.read_text().strip()} for p, m in markers if m.exists()],
        columns=["file", "problem"],
    )
    write_csv(target / BAD, bad)
    return bad


def merge(
    target: Path, files: list[Path], columns: list[str], stamps: list, s: dict, bad: pd.DataFrame,
    frame_models: Sequence[str] = (),
) -> pd.DataFrame:  # fmt: skip
    """Every file's rows in one frame; written as pseudo_labels.csv with teacher.json beside it.

    `frame_models`: the teacher's SED models. With any, every scored file's frames are
    checked against its rows (`frames_per_row`) and teacher.json records `frame_seconds`
    and `frame_models`; the frames stay in their per-file arrays.
    """
    blocks, ids, per_row = [], [], set()
    for p in files:
        path = target / FILES / f"{p.stem}.npy"
        if path.exists():
            rows = np.load(path)
            if rows.ndim != 2 or rows.shape[1] != len(columns):
                raise DataError(
                    f"{path} holds {rows.shape}, not [rows, {len(columns)}]; delete it."
                )
            blocks.append(rows)
            ids += [row_id(p.stem, (i + 1) * ROW_SECONDS) for i in range(len(rows))]
            if frame_models:
                per_row.add(frames_per_row(target, p.stem, len(rows), len(columns)))
    if len(per_row) > 1:
        raise DataError(
            f"the frames in {target / FILES} have {sorted(per_row)} frames per 5-s row, not one "
            f"count: they come from different teachers; delete the *{FRAMES} files and rerun."
        )
    values = np.concatenate(blocks) if blocks else np.zeros((0, len(columns)), np.float32)
    table = pd.DataFrame(values, columns=columns)
    table.insert(0, "row_id", ids)
    write_submission(table, target / LABELS)
    info = {
        "models": [{"path": p, "size": size, "mtime_ns": mtime} for p, size, mtime in stamps],
        **{k: s[k] for k in ("blend", "weights", "power", "stride_seconds")},
        "classes": columns,
        "files": len(files),
        "bad_files": len(bad),
        "rows": len(table),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if frame_models:
        info["frame_models"] = list(frame_models)
        info["frame_seconds"] = ROW_SECONDS / per_row.pop() if per_row else None
    write_json(target / TEACHER, info)
    return table


def frames_per_row(target: Path, stem: str, n_rows: int, n_classes: int) -> int:
    """The frames per 5-s row of `stem`'s frames file, refusing one that does not fit its rows."""
    path = frames_path(target, stem)
    if not path.exists():
        raise DataError(
            f"{path} is missing though its rows are there and the teacher is an SED net; "
            f"delete {path.with_name(f'{stem}.npy')} and rerun task=pseudo_label to rescore it."
        )
    shape = np.load(path, mmap_mode="r").shape
    if len(shape) != 2 or shape[1] != n_classes or shape[0] % n_rows or not shape[0]:
        raise DataError(
            f"{path} holds {shape}, not [{n_rows} rows x frames per row, {n_classes}]; delete it "
            "and rerun task=pseudo_label to rescore the file."
        )
    return shape[0] // n_rows


def frames_info(target: str | Path) -> dict:
    """teacher.json of a merged teacher folder whose teacher stored frames (an SED net)."""
    target = Path(target)
    if not (target / TEACHER).is_file():
        raise DataError(
            f"{target} holds no {TEACHER}: these pseudo-labels are not merged yet (or this is "
            "not a teacher folder); run task=pseudo_label with this teacher (every shard) first."
        )
    info = json.loads((target / TEACHER).read_text())
    if not info.get("frame_models"):
        models = [m["path"] for m in info.get("models", [])]
        raise DataError(
            f"{target} has no per-frame pseudo-labels: the teacher was not an SED net (none of "
            f"{models} gives frame scores), so only its rows (pseudo_labels.csv) are stored; "
            "label with an SED teacher (a model=sed checkpoint) for frames."
        )
    return info


def read_frames(
    target: str | Path, stem: str, info: dict | None = None, mmap: bool = False
) -> tuple[np.ndarray, float]:
    """Soundscape `stem`'s per-frame pseudo-labels [frames, classes] and the seconds per frame.

    `target` is a merged teacher folder (`pseudo_label.json`'s `output`); the columns are
    teacher.json's `classes`, frame `k` spans `[k, k + 1) * frame_seconds` s of the file,
    and row `r`'s frames are `r * 5 / frame_seconds` up to `(r + 1) * 5 / frame_seconds`.
    `info`: `frames_info(target)` when the caller reads many stems; `mmap`: memory-mapped.
    """
    target = Path(target)
    info = info if info is not None else frames_info(target)
    path = frames_path(target, stem)
    if not path.exists():
        bad = target / FILES / f"{stem}.bad"
        if bad.exists():
            raise DataError(
                f"{stem} could not be scored ({bad.read_text().strip()}): it has no pseudo-labels."
            )
        raise DataError(
            f"{path} not found: {stem!r} is not a soundscape this teacher scored (the stems are "
            f"the row_id prefixes of {target / LABELS})."
        )
    frames = np.load(path, mmap_mode="r" if mmap else None)
    if frames.ndim != 2 or frames.shape[1] != len(info["classes"]):
        raise DataError(f"{path} holds {frames.shape}, not [frames, {len(info['classes'])}].")
    return frames, float(info["frame_seconds"])


def truth_metrics(truth: pd.DataFrame, table: pd.DataFrame, columns: list[str]) -> dict:
    """Macro AUC of the pseudo-labels on the truth rows they cover, and mean scores by truth."""
    truth = truth.assign(row_id=truth["row_id"].astype(str))
    truth = truth[truth["row_id"].isin(table["row_id"])]
    if truth.empty:
        return {}
    y = truth.reindex(columns=columns, fill_value=0).to_numpy() > 0
    scores = table.set_index("row_id").loc[truth["row_id"], columns].to_numpy(np.float64)
    return {
        "pseudo/auc": macro_auc(y, scores),
        "pseudo/truth_rows": len(truth),
        "pseudo/positive_mean": float(scores[y].mean()) if y.any() else float("nan"),
        "pseudo/negative_mean": float(scores[~y].mean()) if (~y).any() else float("nan"),
    }
