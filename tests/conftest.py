"""Layered fixtures: a tiny synthetic dataset, then configs composed on it."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from birdclef.data.synthetic import SynthSpec, generate

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REAL_XC = Path(os.environ.get("BIRDCLEF_REAL_XC", ROOT.parent / "shared" / "data" / "real_xc"))
SR = 32000

warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

TINY = {
    "seed": 7,
    "n_classes": 6,
    "max_recordings": 5,
    "median_seconds": 6.0,
    "long_fraction": 0.0,
    "max_seconds": 20.0,
    "n_train_soundscapes": 1,
    "n_test_soundscapes": 2,
    "soundscape_seconds": 30,
}


def compose_cfg(*overrides: str, tmp: Path):
    """The project config with `overrides`, writing into `tmp` (no Hydra run needed)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.data_dir={tmp / 'data'}",
                f"paths.output_dir={tmp / 'out'}",
                *overrides,
            ],
        )


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny synthetic dataset, generated once per test session."""
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    return generate(root, SynthSpec(**TINY), workers=0)


def write_wav(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, format="WAV", subtype="FLOAT")
    return path


def tone(seconds: float, freq: float = 1000.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_root, tmp_path_factory) -> Path:
    """best.ckpt of a one-epoch MelCNN on the tiny dataset (shared by the submission tests)."""
    from birdclef.tasks.train import run

    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = compose_cfg(
        f"data.root={tiny_root}", "data.cache.workers=0", "data.loader.batch_size=16", "data.split.min_val_recordings=2",
        "trainer.max_epochs=1", "model.channels=[8,16]", tmp=tmp,
    )  # fmt: skip
    run(cfg)
    return tmp / "out" / "checkpoints" / "best.ckpt"
