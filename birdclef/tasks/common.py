"""What the submission tasks share: the data root, its soundscapes and solution, the output folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from birdclef.errors import ConfigError, DataError
from birdclef.modules.metrics import macro_auc
from birdclef.utils import available_cpus


def data_root(cfg: DictConfig) -> Path:
    """`data.root`, or the built-in synthetic dataset (generated if absent)."""
    if cfg.data.root is not None:
        return Path(cfg.data.root)
    from birdclef.tasks.synth import synthetic_root

    return synthetic_root(cfg)


def output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def predict_settings(cfg: DictConfig, root: Path | None) -> dict:
    """The plain settings `birdclef.inference.runtime` takes, from the `predict` group."""
    p = cfg.predict
    if not p.models:
        raise ConfigError(
            'predict.models is empty: give "predict.models=[<run>/checkpoints/best.ckpt]" '
            "(checkpoints, exported .onnx files or OpenVINO folders)."
        )
    post = OmegaConf.to_container(p.postprocess, resolve=True)
    workers = p.workers if p.workers is not None else available_cpus()
    taxonomy = p.taxonomy
    if (
        taxonomy is None
        and root is not None
        and any((root / n).is_file() for n in ("sample_submission.csv", "taxonomy.csv"))
    ):
        taxonomy = str(root)
    return {
        "models": [str(m) for m in p.models],
        "weights": None if p.weights is None else [float(w) for w in p.weights],
        "blend": p.blend,
        "power": float(p.power),
        "stride_seconds": float(p.stride_seconds),
        "sed_frames": bool(p.sed_frames),
        "topk": post["topk"],
        "topk_power": float(post["topk_power"]),
        "smooth_kernel": post["smooth_kernel"],
        "openvino_precision": str(p.openvino_precision),
        "threads": int(p.threads),
        "workers": int(workers),
        "taxonomy": taxonomy,
    }


def read_solution(path: Path) -> pd.DataFrame:
    """A solution CSV: `row_id` and one 0/1 column per class (the competition's format)."""
    if not path.is_file():
        raise DataError(f"score.solution={path} not found; give a CSV of row_id + class columns.")
    frame = pd.read_csv(path)
    if "row_id" not in frame.columns:
        raise DataError(
            f"{path} has no row_id column; a solution is row_id + one column per class."
        )
    frame["row_id"] = frame["row_id"].astype(str)
    return frame


def score_frames(solution: pd.DataFrame, submission: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The competition metric and a per-class table (positives, rows, AUC) of `submission`."""
    from birdclef.modules.metrics import competition_score

    try:
        overall = competition_score(solution, submission)
    except ValueError as err:
        raise DataError(f"cannot score: {err}") from err
    classes = [c for c in solution.columns if c != "row_id"]
    sub = submission.set_index("row_id").loc[solution["row_id"], classes]
    rows = []
    for c in classes:
        truth = solution[c].to_numpy()
        positives = int((truth > 0).sum())
        scored = 0 < positives < len(truth)
        auc = macro_auc(truth[:, None], sub[c].to_numpy()[:, None]) if scored else float("nan")
        rows.append({"class": c, "positives": positives, "rows": len(truth), "auc": auc})
    return overall, pd.DataFrame(rows)
