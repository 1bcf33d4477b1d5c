"""What the submission tasks share: the data root, its soundscapes and solution, the output folder."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from birdclef.core.cpus import available_cpus
from birdclef.core.errors import ConfigError


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
