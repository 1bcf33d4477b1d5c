"""Task `score`: the competition metric of a submission against a solution, and per-class AUCs.

python run.py task=score predict.output=submission.csv task.solution=solution.csv
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from birdclef.core.errors import ConfigError, DataError
from birdclef.core.io import write_csv
from birdclef.core.metric import read_solution, score_tables
from birdclef.data.metadata import find_soundscape_labels
from birdclef.data.root import data_root
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)


@task
def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    if not cfg.predict.output:
        raise ConfigError("task=score needs predict.output=<submission.csv> to score.")
    submission_path = Path(cfg.predict.output)
    if not submission_path.is_file():
        raise DataError(f"predict.output={submission_path} not found; write it with task=predict.")
    solution_path = (
        Path(cfg.task.solution) if cfg.task.solution else find_soundscape_labels(data_root(cfg))
    )
    if solution_path is None:
        raise ConfigError(
            "task.solution is not set and the data root has no soundscape_labels.csv."
        )
    submission = pd.read_csv(submission_path)
    if "row_id" not in submission.columns:
        raise DataError(f"{submission_path} has no row_id column.")
    submission["row_id"] = submission["row_id"].astype(str)
    overall, per_class = score_tables(read_solution(solution_path), submission)
    write_csv(out / "per_class_auc.csv", per_class.sort_values("auc"))
    scored = per_class.dropna(subset=["auc"])
    metrics = {
        "score/auc": overall,
        "score/classes": len(scored),
        "score/rows": int(per_class["rows"].iloc[0]),
    }
    log.info(
        "competition score %.4f over %d classes; worst: %s",
        overall,
        len(scored),
        ", ".join(
            f"{r['class']} {r['auc']:.3f}" for _, r in scored.sort_values("auc").head(5).iterrows()
        ),
    )
    return metrics
