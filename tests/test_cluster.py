"""task=cluster: the clustering of frames, scored against known segments, on easy cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdclef.analysis import cluster as C
from birdclef.core.errors import ConfigError
from birdclef.data.audio import load_audio
from birdclef.data.frontend import MelFrontend, MfccFrontend
from birdclef.tasks.cluster import run
from tests.conftest import SR, compose_cfg, tone

POOL = 2
NOISE = 0.01  # -34 dB against the tones
FADE = 0.05  # s, fade in and out of each tone


def faded_tone(seconds: float, freq: float) -> np.ndarray:
    wave = tone(seconds, freq)
    ramp = np.sin(np.linspace(0.0, np.pi / 2, int(FADE * SR))) ** 2
    wave[: len(ramp)] *= ramp
    wave[-len(ramp) :] *= ramp[::-1]
    return wave


def two_tone_points(features: str = "mel"):
    """1 kHz for 2 s, 4 kHz for 2 s, 1 kHz for 2 s over faint noise: points and their known tone.

    Fades and noise matter: with hard switches and no noise, most mel bins sit at the
    floor except at the clicks where the tone changes, and standardising makes those
    few frames the outliers that K-means splits off.
    """
    wave = np.concatenate(
        [faded_tone(2.0, 1000.0), faded_tone(2.0, 4000.0), faded_tone(2.0, 1000.0)]
    )
    wave = wave + NOISE * np.random.default_rng(0).normal(size=len(wave)).astype(np.float32)
    mel = MelFrontend(SR)
    frames = mel.frames(wave)
    front = mel if features == "mel" else MfccFrontend(SR, n_mfcc=20)
    points = C.frame_features(frames, front, POOL)
    segments = pd.DataFrame({"start": [2.0], "end": [4.0], "kind": ["call"], "label": ["x"]})
    truth = C.truth_frames(segments, "high", len(points), POOL * mel.hop_length / SR)
    return points, truth


@pytest.mark.parametrize("method", ["kmeans", "ward"])
@pytest.mark.parametrize("features", ["mel", "mfcc"])
def test_two_tones_are_found(method, features):
    points, truth = two_tone_points(features)
    assert points.shape == (len(truth), 128 if features == "mel" else 20)
    assert (truth == "high").sum() == pytest.approx(len(truth) / 3, abs=2)
    ari, nmi = C.agreement(truth, C.cluster(points, method, n_clusters=2))
    assert ari > 0.9 and nmi > 0.85


def test_single_linkage_splits_off_outliers():
    """What the settings table shows on real segments: single linkage chains, then isolates the edges."""
    points, truth = two_tone_points("mel")
    labels = C.cluster(points, "single", n_clusters=2)
    assert C.agreement(truth, labels)[0] < 0.1 and min(np.bincount(labels)) <= 2


def test_dbscan_and_continuity_on_two_blobs():
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(0.0, 1.0, (60, 5)), rng.normal(8.0, 1.0, (60, 5))])
    truth = np.repeat(["a", "b"], 60)
    for continuity in ("none", "index", "mode"):
        labels = C.cluster(points, "dbscan", continuity=continuity, min_samples=5, eps_quantile=0.9)
        assert C.agreement(truth, labels)[0] > 0.9, continuity
    labels = C.cluster(points, "ward", n_clusters=3, continuity="connectivity")
    assert np.count_nonzero(np.diff(labels)) == 2  # three runs in time, no interleaving


def test_truth_frames_priority_and_names():
    segments = pd.DataFrame({
        "start": [0.0, 1.0, 1.5, 3.0], "end": [1.0, 2.0, 2.5, 4.0],
        "kind": ["voice", "call", "secondary", "silence"], "label": ["", "p", "s", ""],
    })  # fmt: skip
    truth = C.truth_frames(segments, "p", 10, 0.5)  # centres 0.25, 0.75, ..., 4.75
    assert truth.tolist() == ["voice", "voice", "p", "p", "s", "background", "silence", "silence",
                              "background", "background"]  # fmt: skip


def test_mode_filter_and_time_index():
    assert C.mode_filter(np.array([0, 0, 1, 0, 0, 1, 1, 1]), 3).tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert C.mode_filter(np.array([2, -1, 2]), 1).tolist() == [2, -1, 2]
    x = C.with_time_index(np.zeros((5, 2)), weight=2.0)
    assert x.shape == (5, 3) and x[:, 2].std() == pytest.approx(2.0) and x[:, 2].mean() == 0


def test_bad_settings_are_config_errors():
    points = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ConfigError, match="needs an agglomerative method"):
        C.cluster(points, "kmeans", continuity="connectivity")
    with pytest.raises(
        ConfigError,
        match=r"'spectral' \(task.methods / task.sweep.methods\) is not one of",
    ):
        C.cluster(points, "spectral")


def test_cluster_task_on_tiny(tiny_root, tmp_path):
    cfg = compose_cfg(
        "task=cluster", f"data.root={tiny_root}", "task.n_recordings=2", "task.figures=1",
        "task.sweep.methods=[kmeans,ward]", "task.sweep.continuity=[none,connectivity]",
        tmp=tmp_path,
    )  # fmt: skip
    metrics = run(cfg)
    out = tmp_path / "out"
    per = pd.read_csv(out / "per_recording.csv")
    # 2 recordings x (2 features x (kmeans none, ward none, ward connectivity))
    assert len(per) == 12 and per["recording"].nunique() == 2
    table = pd.read_csv(out / "settings.csv")
    assert len(table) == 6 and metrics["cluster/best_ari"] == pytest.approx(table["ari"].max())
    assert metrics["cluster/kmeans_ari"] == pytest.approx(
        per.query("features == 'mel' and method == 'kmeans' and continuity == 'none'")["ari"].mean()
    )
    # one row recomputed from the audio, outside the task
    row = per.query("features == 'mel' and method == 'ward' and continuity == 'none'").iloc[0]
    train = pd.read_csv(tiny_root / "train.csv", dtype=str).set_index("filename")
    mel = MelFrontend(SR)
    frames = mel.frames(load_audio(tiny_root / "train_audio" / row["recording"], SR))
    points = C.frame_features(frames, mel, POOL)
    segments = pd.read_csv(tiny_root / "train_audio_segments.csv")
    primary = train.loc[row["recording"], "primary_label"]
    truth = C.truth_frames(segments[segments["filename"] == row["recording"]], primary,
                           len(points), POOL * mel.hop_length / SR)  # fmt: skip
    labels = C.cluster(points, "ward", n_clusters=int(row["k"]))
    assert C.agreement(truth, labels)[0] == pytest.approx(row["ari"])
    assert len(list((out / "figures").glob("*.png"))) == 1
    assert "| kmeans |" in (out / "settings.md").read_text()
