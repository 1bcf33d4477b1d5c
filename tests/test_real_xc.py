"""Training on real recordings in the competition layout (skipped when the folder is absent)."""

import numpy as np
import pandas as pd
import pytest

from birdclef.data.metadata import load_metadata
from birdclef.tasks.train import run
from tests.conftest import REAL_XC, compose_cfg

pytestmark = pytest.mark.skipif(
    not (REAL_XC / "train.csv").is_file(), reason=f"no real_xc data at {REAL_XC}"
)


def test_metadata_of_real_folder():
    meta = load_metadata(REAL_XC)
    assert len(meta.classes) == 56 and len(meta.train) == 88
    assert set(meta.class_names.values()) >= {"Aves", "Amphibia"}


@pytest.mark.slow  # two epochs of the default MelCNN on 88 real recordings: half a minute
def test_trains_and_scores_real_soundscapes(tmp_path):
    cfg = compose_cfg(f"data.root={REAL_XC}", "trainer.max_epochs=2", tmp=tmp_path)
    metrics = run(cfg)
    assert np.isfinite(metrics["val/auc"]) and np.isfinite(metrics["test/soundscape_auc"])
    predictions = pd.read_csv(tmp_path / "out" / "soundscape_predictions.csv")
    solution = pd.read_csv(REAL_XC / "soundscape_labels.csv")
    assert len(predictions) == len(solution) == 212
    assert list(predictions["row_id"]) == list(solution["row_id"])
