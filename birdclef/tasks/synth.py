"""Task `synth`: generate the built-in synthetic dataset once and report where it is."""

from __future__ import annotations

import logging

import pandas as pd
from omegaconf import DictConfig

from birdclef.data.root import synthetic_root
from birdclef.runs.envelope import task

log = logging.getLogger(__name__)


@task
def run(cfg: DictConfig) -> dict:
    root = synthetic_root(cfg)
    train = pd.read_csv(root / "train.csv", dtype=str)
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype=str)
    summary = {
        "classes": len(taxonomy),
        "recordings": len(train),
        "train_soundscapes": len(list((root / "train_soundscapes").glob("*.ogg"))),
        "test_soundscapes": len(list((root / "test_soundscapes").glob("*.ogg"))),
    }
    print(f"synthetic dataset at {root}")
    for key, value in summary.items():
        print(f"  {key:>18}: {value}")
    print(f"train on it with: python run.py data.root={root}")
    return summary
