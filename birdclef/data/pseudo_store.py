"""The folder of one teacher's pseudo-labels: per-file rows, bad-file markers, the merge, a lock.

files/<stem>.npy     one soundscape's rows [rows, classes], written atomically when scored
files/<stem>.bad     why a soundscape could not be scored
pseudo_labels.csv    row_id + classes, every file's rows (written by the last shard, locked)
teacher.json         the models, blend and counts behind them
bad_files.csv        the unreadable soundscapes
"""

from __future__ import annotations

import contextlib
import fcntl
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.errors import DataError
from birdclef.inference.rows import SCORE_SECONDS, row_id
from birdclef.inference.submission import write_submission
from birdclef.modules.metrics import macro_auc
from birdclef.utils import write_csv, write_json

FILES, LABELS, BAD, LOCK = "files", "pseudo_labels.csv", "bad_files.csv", ".lock"


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
    target: Path, files: list[Path], columns: list[str], stamps: list, s: dict, bad: pd.DataFrame
) -> pd.DataFrame:
    """Every file's rows in one frame; written as pseudo_labels.csv with teacher.json beside it."""
    blocks, ids = [], []
    for p in files:
        path = target / FILES / f"{p.stem}.npy"
        if path.exists():
            rows = np.load(path)
            if rows.ndim != 2 or rows.shape[1] != len(columns):
                raise DataError(
                    f"{path} holds {rows.shape}, not [rows, {len(columns)}]; delete it."
                )
            blocks.append(rows)
            ids += [row_id(p.stem, (i + 1) * SCORE_SECONDS) for i in range(len(rows))]
    values = np.concatenate(blocks) if blocks else np.zeros((0, len(columns)), np.float32)
    frame = pd.DataFrame(values, columns=columns)
    frame.insert(0, "row_id", ids)
    write_submission(frame, target / LABELS)
    write_json(
        target / "teacher.json",
        {
            "models": [{"path": p, "size": size, "mtime_ns": mtime} for p, size, mtime in stamps],
            **{k: s[k] for k in ("blend", "weights", "power", "stride_seconds")},
            "classes": columns,
            "files": len(files),
            "bad_files": len(bad),
            "rows": len(frame),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return frame


def truth_metrics(truth: pd.DataFrame, frame: pd.DataFrame, columns: list[str]) -> dict:
    """Macro AUC of the pseudo-labels on the truth rows they cover, and mean scores by truth."""
    truth = truth.assign(row_id=truth["row_id"].astype(str))
    truth = truth[truth["row_id"].isin(frame["row_id"])]
    if truth.empty:
        return {}
    y = truth.reindex(columns=columns, fill_value=0).to_numpy() > 0
    scores = frame.set_index("row_id").loc[truth["row_id"], columns].to_numpy(np.float64)
    return {
        "pseudo/auc": macro_auc(y, scores),
        "pseudo/truth_rows": len(truth),
        "pseudo/positive_mean": float(scores[y].mean()) if y.any() else float("nan"),
        "pseudo/negative_mean": float(scores[~y].mean()) if (~y).any() else float("nan"),
    }
