"""task=embed: grouped kNN and silhouette on toy sets with known answers, and a run on the tiny set."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from sklearn.metrics import silhouette_score

from birdclef.analysis.embed import (
    chance_accuracy,
    knn_accuracy,
    markdown_table,
    pooled_stats,
    silhouette,
    standardize,
)
from birdclef.data.windows import recording_window_starts
from birdclef.models.melcnn import MelCNN
from birdclef.tasks.embed import penultimate
from tests.conftest import compose_cfg, train_cfg

N_CLASSES, PER_CLASS, DIMS = 8, 30, 16


def blobs(spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (N_CLASSES, DIMS))
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    return centres[labels] + rng.normal(0, spread, (len(labels), DIMS)), labels


def test_knn_is_perfect_on_separable_classes_and_chance_on_shuffled_labels():
    x, labels = blobs(spread=0.5)
    assert knn_accuracy(standardize(x), labels, k=5) == 1.0
    shuffled = np.random.default_rng(1).permutation(labels)
    accuracy = knn_accuracy(standardize(x), shuffled, k=5)
    assert chance_accuracy(labels) == pytest.approx(1 / N_CLASSES)
    assert abs(accuracy - 1 / N_CLASSES) < 0.08  # 240 items: chance is 0.125 +- ~0.02


def test_knn_never_asks_windows_of_the_same_recording():
    # each recording: two near-identical windows; its class has no other recording nearby
    x = np.array([[0.0], [0.01], [10.0], [10.01], [5.0], [5.01]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    groups = np.array([0, 0, 1, 1, 2, 2])
    assert knn_accuracy(x, labels, None, k=1) == 1.0  # the twin answers
    assert knn_accuracy(x, labels, groups, k=1) == 0.0  # only other recordings may answer
    assert np.isnan(knn_accuracy(x, labels, np.zeros(6), k=1))  # nobody has a neighbour


def test_knn_ties_go_to_the_nearest_voter():
    x = np.array([[0.0], [1.0], [2.5]])
    labels = np.array([2, 2, 1])
    # k=2: items 0 and 1 each see one class-2 and one class-1 voter; the nearer is class 2
    # (right), where "smallest label wins" would answer 1; item 2 sees two class-2 voters
    assert knn_accuracy(x, labels, k=2) == pytest.approx(2 / 3)


def test_silhouette_equals_sklearn_and_separates_blobs():
    x, labels = blobs(spread=0.5)
    z = standardize(x)
    assert silhouette(z, labels) == pytest.approx(silhouette_score(z, labels))
    assert silhouette(z, labels) > 0.8
    noisy, _ = blobs(spread=50.0)
    assert silhouette(standardize(noisy), labels) < 0.1
    assert np.isnan(silhouette(z, np.zeros(len(z))))


def test_pooled_stats_are_band_means_then_stds():
    features = torch.tensor([[[[1.0, 3.0], [2.0, 2.0]]]])  # [1, 1, bands=2, frames=2]
    np.testing.assert_allclose(pooled_stats(features), [[2.0, 2.0, 1.0, 0.0]])


def test_penultimate_is_the_input_of_the_last_linear_layer():
    net = MelCNN(num_classes=5, channels=[4, 8], freq_bins=0, band_stats=0).eval()
    features = torch.randn(3, 1, 32, 40)
    embedding = penultimate(net)(features)
    assert embedding.shape == (3, net.head[-1].in_features)
    np.testing.assert_allclose(
        net.head[-1](torch.from_numpy(embedding)).detach(), net(features).detach(), atol=1e-5
    )


def test_markdown_table_formats_floats_and_blanks_nan():
    text = markdown_table(
        [{"a": "mel", "b": 0.12345, "c": float("nan")}], {"a": "A", "b": "B", "c": "C"}
    )
    assert text.splitlines() == ["| A | B | C |", "|---|---:|---:|", "| mel | 0.123 |  |"]


def test_embed_task_on_the_tiny_set(tiny_root, tiny_checkpoint, tmp_path):
    from birdclef.tasks.embed import run

    cfg = train_cfg(
        tiny_root, "task=embed", "task.umap=false", "task.representations=[mel,mfcc,model,vae]",
        f"task.checkpoint={tiny_checkpoint}", "task.vae.epochs=2", "model.channels=[4,8]", tmp=tmp_path,
    )  # fmt: skip
    metrics = run(cfg)
    out = tmp_path / "out"
    table = pd.read_csv(out / "representations.csv")
    assert sorted(table["representation"]) == ["mel", "mfcc", "model", "vae"]
    assert table["knn_accuracy"].is_monotonic_decreasing
    dims = dict(zip(table["representation"], table["dims"], strict=True))
    assert dims["mel"] == 2 * 128 and dims["mfcc"] == 2 * 40 and dims["vae"] == 16
    for name in ("mel", "mfcc", "model", "vae"):
        assert 0.0 <= metrics[f"embed/{name}/knn_accuracy"] <= 1.0
        assert -1.0 <= metrics[f"embed/{name}/silhouette"] <= 1.0
    files = pd.read_csv(tiny_root / "train.csv")["filename"].unique()
    lengths = [sf.info(tiny_root / "train_audio" / f).frames for f in files]
    window = 5 * cfg.sample_rate
    assert metrics["embed/windows"] == sum(
        len(recording_window_starts(n, window)[:3]) for n in lengths
    )
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics, nan_ok=True)
    assert metrics["embed/vae/last_loss"] < metrics["embed/vae/first_loss"]
    text = (out / "representations.md").read_text()
    assert "| representation | dims | kNN accuracy |" in text and "birdnet" not in text
    assert (out / "vae.ckpt").is_file() and len(pd.read_csv(out / "vae_loss.csv")) == 2


def test_embed_leaves_out_recordings_another_front_end_could_not_read(
    tiny_root, tiny_checkpoint, tmp_path, monkeypatch
):
    """Every representation is scored on the same windows: a recording that one front end's
    cache lists as unreadable is left out for all, and listed, instead of a bare KeyError."""
    import birdclef.tasks.embed as embed

    real = embed.other_frames
    files = sorted(pd.read_csv(tiny_root / "train.csv")["filename"].unique())

    class Without:  # the model front end's cache, as if files[0] had failed to decode
        def __init__(self, frames):
            self.frames = frames
            self.position = {f: i for f, i in frames.position.items() if f != files[0]}

        def __getattr__(self, name):
            return getattr(self.frames, name)

    def other_frames(*args):
        return {k: (Without(f), *rest) for k, (f, *rest) in real(*args).items()}

    monkeypatch.setattr(embed, "other_frames", other_frames)
    cfg = train_cfg(
        tiny_root, "task=embed", "task.umap=false", "task.representations=[mel,model]",
        f"task.checkpoint={tiny_checkpoint}", tmp=tmp_path,
    )  # fmt: skip
    metrics = embed.run(cfg)
    window = 5 * cfg.sample_rate
    kept = [f for f in files if f != files[0]]
    lengths = [sf.info(tiny_root / "train_audio" / f).frames for f in kept]
    assert metrics["embed/windows"] == sum(
        len(recording_window_starts(n, window)[:3]) for n in lengths
    )
    assert {"embed/mel/knn_accuracy", "embed/model/knn_accuracy"} <= set(metrics)
    text = (tmp_path / "out" / "representations.md").read_text()
    assert f"Left out 1 recording(s) that not every front end could read: {files[0]}." in text


def test_embed_refuses_unknown_representations(tmp_path):
    from birdclef.core.errors import ConfigError
    from birdclef.tasks.embed import run

    cfg = compose_cfg("task=embed", "task.representations=[mel,pixels]", tmp=tmp_path)
    with pytest.raises(ConfigError, match="pixels"):
        run(cfg)


@pytest.mark.slow
def test_embed_umap_plots_and_birdnet(tiny_root, tmp_path):
    """UMAP (numba compiles for ~20 s) and BirdNET, when their extras are installed."""
    pytest.importorskip("umap")
    from birdclef.tasks.embed import run

    cfg = train_cfg(tiny_root, "task=embed", "task.representations=[mel,birdnet]", tmp=tmp_path)
    metrics = run(cfg)
    out = tmp_path / "out"
    assert (out / "umap_mel.png").stat().st_size > 10_000
    if "embed/birdnet/knn_accuracy" in metrics:
        assert (out / "umap_birdnet.png").is_file()
        assert (
            pd.read_csv(out / "representations.csv")
            .set_index("representation")
            .at["birdnet", "dims"]
            == 1024
        )
