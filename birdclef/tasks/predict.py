"""Task `predict`: a validated `submission.csv` for a folder of soundscapes, from one model or a blend.

    python run.py task=predict "predict.models=[A.ckpt,B.onnx]" predict.soundscapes=DIR predict.output=FILE

Where the data root has labelled soundscapes (and `predict.soundscapes` is its
`test_soundscapes`), the submission is also scored (`predict/soundscape_auc`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from birdclef.core.io import write_csv, write_json
from birdclef.core.metric import read_solution, score_tables
from birdclef.data.metadata import find_soundscape_labels
from birdclef.data.root import data_root
from birdclef.inference.runtime import run as run_predict
from birdclef.inference.runtime import settings_from_group
from birdclef.runs.envelope import run_dir, task

log = logging.getLogger(__name__)


@task
def run(cfg: DictConfig) -> dict:
    out = run_dir(cfg)
    root = data_root(cfg) if cfg.predict.soundscapes is None or cfg.data.root is not None else None
    folder = Path(cfg.predict.soundscapes) if cfg.predict.soundscapes else root / "test_soundscapes"
    output = Path(cfg.predict.output) if cfg.predict.output else out / "submission.csv"
    settings = settings_from_group(cfg.predict, root)
    report = run_predict(folder, output, settings, progress=True)
    for issue in report["bad_files"]:
        log.warning("%s: %s (%s)", issue["file"], issue["problem"], issue["rows"])
    metrics = {
        "predict/files": report["files"],
        "predict/rows": report["rows"],
        "predict/bad_files": len(report["bad_files"]),
        "predict/realtime_factor": report["realtime_factor"],
        "predict/wall_seconds": report["wall_seconds"],
    }
    if report.get("note"):  # no audio: nothing to score
        log.info("%s to %s", report["note"], output)
        write_json(out / "predict_report.json", {**report, "settings": settings})
        return metrics
    labels = find_soundscape_labels(root) if root is not None else None
    if labels is not None and folder.resolve() == (root / "test_soundscapes").resolve():
        import pandas as pd

        overall, per_class = score_tables(read_solution(labels), pd.read_csv(output))
        metrics["predict/soundscape_auc"] = overall
        write_csv(out / "per_class_auc.csv", per_class)
    write_json(out / "predict_report.json", {**report, "settings": settings})
    log.info(
        "wrote %s (%d rows, %d files, %.0fx real time)",
        output,
        report["rows"],
        report["files"],
        report["realtime_factor"],
    )
    return metrics
