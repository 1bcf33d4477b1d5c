"""data.pseudo: pseudo-labelled train_soundscapes windows joined to the training set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from birdclef.core.errors import ConfigError, DataError, user_error
from birdclef.data.metadata import load_metadata
from birdclef.data.samplers import EpochRedrawSampler
from birdclef.data.teacher_inputs import TeacherInputs
from birdclef.tasks.train import build_datamodule, run
from tests.conftest import TRAIN_FAST, compose_cfg, fast_cfg, train_cfg

SR, HOP = 32000, 500  # the mel front end's rate and hop
ROW = 5  # s


@pytest.fixture(scope="module")
def shared(tiny_root, tmp_path_factory) -> dict:
    """The tiny root's classes and stem, a frame cache shared by the tests, a labels file."""
    tmp = tmp_path_factory.mktemp("pseudo")
    classes = load_metadata(tiny_root).classes
    (stem,) = [p.stem for p in (tiny_root / "train_soundscapes").glob("*.ogg")]
    # row j: class j % n gets 0.3 + 0.1 j, every other class 0.05 j / n: distinct rows
    n = len(classes)
    scores = np.array(
        [[0.3 + 0.1 * j if c == j % n else 0.05 * j / n for c in range(n)] for j in range(6)]
    )
    table = pd.DataFrame(scores, columns=classes)
    table.insert(0, "row_id", [f"{stem}_{ROW * (j + 1)}" for j in range(6)])
    labels = tmp / "pseudo_labels.csv"
    table.to_csv(labels, index=False)
    return {"tmp": tmp, "classes": classes, "stem": stem, "scores": scores, "labels": labels}


def datamodule(shared, tmp: Path, *overrides: str):
    cfg = compose_cfg(*TRAIN_FAST, f"data.cache.dir={shared['tmp'] / 'cache'}", *overrides, tmp=tmp)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def expected_softmax(scores: np.ndarray, power: float) -> np.ndarray:
    sharp = scores**power
    full = np.concatenate([sharp, np.maximum(0.0, 1.0 - sharp.sum(1, keepdims=True))], axis=1)
    return (full / full.sum(1, keepdims=True)).astype(np.float32)


def row_of(target: torch.Tensor, expected: np.ndarray) -> int:
    (match,) = [j for j in range(len(expected)) if np.array_equal(target.numpy(), expected[j])]
    return match


def test_pseudo_windows_join_training_with_sharpened_targets_and_their_frames(
    shared, tiny_root, tmp_path
):
    root = f"data.root={tiny_root}"
    plain = datamodule(shared, tmp_path / "a", root)
    dm = datamodule(
        shared, tmp_path / "b", root, f"data.pseudo.labels={shared['labels']}",
        "data.pseudo.ratio=0.5", "data.pseudo.power=2",
    )  # fmt: skip
    labelled = len(plain.train_set)
    assert len(dm.train_set) == labelled
    assert len(dm.fit_set) == labelled + round(0.5 * labelled)
    assert len(dm.val_set) == len(plain.val_set) and len(dm.test_set) == len(plain.test_set)
    expected = expected_softmax(shared["scores"], 2.0)
    frames = dm._soundscape_frames()
    n = dm.train_set.n_frames
    for k in range(len(dm.pseudo_set)):
        item = dm.pseudo_set[k]
        j = row_of(item["target"], expected)
        start = j * ROW * SR // HOP  # row j ends at 5 (j + 1) s
        want = dm.frontend.finish(frames.window(frames.position[shared["stem"]], start, n))
        assert torch.equal(item["features"], want.unsqueeze(0))
        assert torch.equal(item["truth"], torch.tensor(expected[j, :-1] > 0.5, dtype=torch.float32))
        assert item["primary"].item() == -1
    batch = next(iter(torch.utils.data.DataLoader(dm.fit_set, batch_size=len(dm.fit_set))))
    assert batch["features"].shape[0] == len(dm.fit_set)
    assert set(batch) == set(dm.train_set[0])


def test_sigmoid_targets_are_the_powered_scores_and_min_confidence_drops_rows(
    shared, tiny_root, tmp_path
):
    dm = datamodule(
        shared, tmp_path, f"data.root={tiny_root}", "loss=bce",
        f"data.pseudo.labels={shared['labels']}", "data.pseudo.ratio=3",
        "data.pseudo.power=1.5", "data.pseudo.min_confidence=0.65",
    )  # fmt: skip
    expected = (shared["scores"] ** 1.5).astype(np.float32)
    rows = {row_of(dm.pseudo_set[k]["target"], expected) for k in range(len(dm.pseudo_set))}
    assert rows == {4, 5}  # max scores 0.3 .. 0.8: only rows 4 (0.7) and 5 (0.8) are kept
    assert len(dm.pseudo_set) == round(3 * len(dm.train_set))
    weights = dm.balanced_sampler().weights  # pseudo windows keep their share of draws
    assert len(weights) == len(dm.fit_set)
    assert torch.allclose(weights[len(dm.train_set) :], weights[: len(dm.train_set)].mean())


@pytest.mark.parametrize(
    ("change", "overrides", "error", "message"),
    [
        ("none", ["data.pseudo.ratio=-1"], ConfigError, "ratio"),
        ("none", ["data.pseudo.power=0"], ConfigError, "power"),
        ("none", ["data.pseudo.min_confidence=1.5"], ConfigError, "min_confidence"),
        ("none", ["data.pseudo.threshold=0"], ConfigError, "threshold"),
        ("none", ["data.pseudo.threshold=0.5", "data.pseudo.power=2"], ConfigError, "power=1"),
        ("missing", [], DataError, "not a file"),
        ("columns", [], DataError, "one column per class"),
        ("stem", [], DataError, "not readable in train_soundscapes"),
        ("none", ["data.pseudo.min_confidence=0.95"], DataError, "no row"),
    ],
)
def test_bad_pseudo_settings_and_files_are_one_clear_error(
    shared, tiny_root, tmp_path, change, overrides, error, message
):
    table = pd.read_csv(shared["labels"])
    if change == "columns":
        table = table.drop(columns=shared["classes"][0])
    if change == "stem":
        table["row_id"] = table["row_id"].str.replace(shared["stem"], "elsewhere")
    labels = tmp_path / "pseudo_labels.csv"
    if change != "missing":
        table.to_csv(labels, index=False)
    with pytest.raises(Exception) as caught:  # noqa: PT011 (Hydra wraps errors of __init__)
        datamodule(
            shared, tmp_path, f"data.root={tiny_root}", f"data.pseudo.labels={labels}", *overrides
        )
    found = user_error(caught.value)  # what run.py shows: the user error behind the wrapping
    assert isinstance(found, error) and message in str(found)


def test_one_epoch_with_pseudo_labels_writes_metrics(shared, tiny_root, tmp_path):
    cfg = fast_cfg(
        tiny_root, f"data.cache.dir={shared['tmp'] / 'cache'}",
        f"data.pseudo.labels={shared['labels']}", "data.pseudo.power=2", tmp=tmp_path,
    )  # fmt: skip
    metrics = run(cfg)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.isfinite(written["train/loss"]) and "test/soundscape_auc" in written
    assert written["train/loss"] == pytest.approx(metrics["train/loss"])


def test_distillation_teacher_hears_the_pseudo_windows_too(shared, tiny_root, tmp_path):
    """With a teacher's front end (task=distill), pseudo-labelled windows carry the teacher's
    features of the same span, cut from train_soundscapes cached with that front end."""
    from birdclef.data.frontend import MelFrontend

    teacher = MelFrontend(SR, n_mels=32, hop_length=1000)  # another cache key and frame rate
    cfg = train_cfg(
        tiny_root, f"data.cache.dir={shared['tmp'] / 'cache'}",
        f"data.pseudo.labels={shared['labels']}", tmp=tmp_path,
    )  # fmt: skip
    dm = build_datamodule(cfg, teacher=TeacherInputs(teacher))
    dm.prepare_data()
    dm.setup("fit")
    expected = expected_softmax(shared["scores"], 1.0)
    frames = dm._soundscape_frames(teacher)
    assert frames.hop_length == 1000
    n = dm.train_set.n_frames * HOP // 1000
    for k in range(len(dm.pseudo_set)):
        item = dm.pseudo_set[k]
        j = row_of(item["target"], expected)
        want = teacher.finish(
            frames.window(frames.position[shared["stem"]], j * ROW * SR // 1000, n)
        )
        assert torch.equal(item["teacher_features"], want.unsqueeze(0))
    batch = next(iter(torch.utils.data.DataLoader(dm.fit_set, batch_size=len(dm.fit_set))))
    assert batch["teacher_features"].shape == (len(dm.fit_set), 1, 32, n)
    # cross-fitted teachers: no teacher trained on a soundscape, so every one scores its windows
    every = set(dm.split["filename"])
    dm = build_datamodule(cfg, teacher=TeacherInputs(teacher, [set(), every]))
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(torch.utils.data.DataLoader(dm.fit_set, batch_size=len(dm.fit_set))))
    labelled = len(dm.train_set)
    assert batch["teacher_mask"][:labelled].tolist() == [[True, False]] * labelled
    assert batch["teacher_mask"][labelled:].all() and len(dm.fit_set) > labelled


def test_distill_on_pseudo_labelled_windows(shared, tiny_root, tiny_checkpoint, tmp_path):
    """task=distill with data.pseudo: the student learns from the teacher on both kinds of window."""
    from birdclef.tasks.distill import run as distill

    cfg = fast_cfg(
        tiny_root, "task=distill", "augment=none", f"teacher.models=[{tiny_checkpoint}]",
        f"data.cache.dir={shared['tmp'] / 'cache'}", f"data.pseudo.labels={shared['labels']}",
        "data.pseudo.ratio=1", tmp=tmp_path,
    )  # fmt: skip
    metrics = distill(cfg)
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["train/kd_loss"])
    assert metrics["distill/teacher"] == str(tiny_checkpoint)


def _sed_teacher_folder(shared, tmp: Path, n_frames: int, frame_seconds: float) -> np.ndarray:
    """A merged SED teacher folder: the shared rows, teacher.json (classes reversed, so the
    reader must reorder them) and one frames file; returns the frames in taxonomy order."""
    import json as _json

    classes = shared["classes"]
    k, c = np.meshgrid(np.arange(n_frames), np.arange(len(classes)), indexing="ij")
    scores = ((7 * k + 3 * c) % 11 / 11.0).astype(np.float32)  # [frames, classes], distinct
    (tmp / "files").mkdir(parents=True)
    np.save(tmp / "files" / f"{shared['stem']}.frames.npy", scores[:, ::-1])
    (tmp / "pseudo_labels.csv").write_bytes(shared["labels"].read_bytes())
    info = {"classes": classes[::-1], "frame_models": ["sed.ckpt"], "frame_seconds": frame_seconds}
    (tmp / "teacher.json").write_text(_json.dumps({**info, "models": []}))
    return scores


@pytest.mark.parametrize("weighted", [False, True])
def test_frame_pseudo_windows_are_random_crops_targeted_by_the_teachers_frames(
    shared, tiny_root, tmp_path, monkeypatch, weighted
):
    """data.pseudo.frames: each read cuts a random window of the soundscape, and its target is
    each class's highest teacher frame centred inside that window, sharpened and renormalised."""
    import birdclef.data.datasets as datasets

    scores = _sed_teacher_folder(shared, tmp_path / "teacher", 60, 0.5)  # 30 s of 0.5-s frames
    dm = datamodule(
        shared, tmp_path / "dm", f"data.root={tiny_root}", "data.pseudo.power=2",
        f"data.pseudo.labels={tmp_path / 'teacher' / 'pseudo_labels.csv'}", "data.pseudo.frames=true",
        f"data.pseudo.confidence_weight={str(weighted).lower()}",
    )  # fmt: skip
    assert len(dm.pseudo_set) == round(0.5 * len(dm.train_set))
    frames = dm._soundscape_frames()
    n, seconds = dm.train_set.n_frames, HOP / SR
    for start in (0, 100, 641, 1600):  # student frames; 1600 = 25 s: the last window of 30 s
        monkeypatch.setattr(datasets, "_random_start", lambda total, n, limit, s=start: s)
        item = dm.pseudo_set[0]
        centres = (np.arange(60) + 0.5) * 0.5
        inside = (centres >= start * seconds) & (centres < (start + n) * seconds)
        expected = expected_softmax(scores[inside].max(axis=0)[None].astype(np.float64), 2.0)[0]
        np.testing.assert_allclose(item["target"].numpy(), expected, rtol=1e-6)
        assert torch.equal(item["truth"], torch.tensor(expected[:-1] > 0.5, dtype=torch.float32))
        want = dm.frontend.finish(frames.window(frames.position[shared["stem"]], start, n))
        assert torch.equal(item["features"], want.unsqueeze(0))
        if weighted:  # the window's confidence: its highest teacher frame score
            assert item["weight"].item() == pytest.approx(scores[inside].max())
        else:
            assert "weight" not in item
    batch = next(iter(torch.utils.data.DataLoader(dm.fit_set, batch_size=len(dm.fit_set))))
    assert set(batch) == set(dm.train_set[0])


def test_frame_pseudo_labels_need_an_sed_teacher(shared, tiny_root, tmp_path):
    with pytest.raises(Exception) as caught:  # noqa: PT011 (Hydra wraps errors of __init__)
        datamodule(
            shared, tmp_path, f"data.root={tiny_root}", f"data.pseudo.labels={shared['labels']}",
            "data.pseudo.frames=true",
        )  # fmt: skip
    found = user_error(caught.value)
    assert isinstance(found, DataError) and "teacher.json" in str(found)


def test_redraw_sampler_reads_every_labelled_window_and_new_pseudo_ones_each_epoch():
    sampler = EpochRedrawSampler(labelled=5, extra=20, draws=4, seed=3)
    epochs = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) == 9
        assert sorted(k for k in order if k < 5) == [0, 1, 2, 3, 4]  # each labelled one once
        pseudo = [k for k in order if k >= 5]
        assert len(set(pseudo)) == 4 and max(pseudo) < 25  # 4 distinct pseudo windows
        epochs.append(order)
    sampler.set_epoch(3)
    assert list(sampler) == epochs[3]  # seeded by (seed, epoch): a resumed run draws the same
    assert len({tuple(sorted(e)) for e in epochs}) > 1  # other epochs, other pseudo windows
    assert {k for e in epochs for k in e if k >= 5} == set(range(5, 25))  # all read over the epochs
    with pytest.raises(ValueError):
        EpochRedrawSampler(labelled=5, extra=3, draws=4, seed=0)


def test_pseudo_redraw_keeps_every_row_and_the_epoch_length(shared, tiny_root, tmp_path):
    """data.pseudo.redraw: the pseudo set holds every row; an epoch reads ratio x labelled."""
    common = (f"data.root={tiny_root}", f"data.pseudo.labels={shared['labels']}")
    fixed = datamodule(shared, tmp_path / "fixed", *common, "data.pseudo.ratio=0.25")
    draws = round(0.25 * len(fixed.train_set))
    assert 0 < draws < 6  # fewer draws than the 6 rows, so a redraw can read others
    assert len(fixed.pseudo_set) == draws and not fixed.redraws
    dm = datamodule(
        shared, tmp_path / "redraw", *common, "data.pseudo.ratio=0.25", "data.pseudo.redraw=true"
    )
    assert (dm.pseudo_draws, len(dm.pseudo_set)) == (draws, 6) and dm.redraws
    expected = expected_softmax(shared["scores"], 1.0)
    assert {row_of(dm.pseudo_set[k]["target"], expected) for k in range(6)} == set(range(6))
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, EpochRedrawSampler)
    assert len(sampler) == len(dm.train_set) + draws
    balanced = dm.balanced_sampler()  # balanced draws: the pseudo windows keep their share
    n = len(dm.train_set)
    assert balanced.num_samples == n + draws
    mean = balanced.weights[:n].mean()
    assert torch.allclose(balanced.weights[n:].sum(), mean * draws)


@pytest.mark.parametrize("loss", ["bce", "focal"])
def test_thresholded_pseudo_targets_are_hard(shared, tiny_root, tmp_path, loss):
    """data.pseudo.threshold: 1 where the teacher's score reaches it, else 0 (softmax: with null)."""
    dm = datamodule(
        shared, tmp_path, f"data.root={tiny_root}", f"loss={loss}",
        f"data.pseudo.labels={shared['labels']}", "data.pseudo.ratio=3", "data.pseudo.threshold=0.5",
    )  # fmt: skip
    hard = (shared["scores"] >= 0.5).astype(np.float64)  # rows 2..5 have one class >= 0.5
    if loss == "focal":  # softmax: rows with a class go to it, the others to null
        hard = np.concatenate([hard, 1.0 - hard.max(axis=1, keepdims=True)], axis=1)
    targets = {tuple(dm.pseudo_set[k]["target"].tolist()) for k in range(len(dm.pseudo_set))}
    assert targets == {tuple(row) for row in hard.astype(np.float32).tolist()}


def test_confidence_weight_weighs_pseudo_windows_by_their_top_score(shared, tiny_root, tmp_path):
    """data.pseudo.confidence_weight: labelled items weigh 1, pseudo items their row's top score;
    a training step reads the batch key (a run completes)."""
    dm = datamodule(
        shared, tmp_path, f"data.root={tiny_root}", f"data.pseudo.labels={shared['labels']}",
        "data.pseudo.ratio=3", "data.pseudo.power=2", "data.pseudo.confidence_weight=true",
    )  # fmt: skip
    assert all(dm.train_set[k]["weight"].item() == 1.0 for k in range(len(dm.train_set)))
    expected = expected_softmax(shared["scores"], 2.0)
    top = shared["scores"].max(axis=1)
    for k in range(len(dm.pseudo_set)):
        item = dm.pseudo_set[k]
        assert item["weight"].item() == pytest.approx(top[row_of(item["target"], expected)])
    batch = next(iter(dm.train_dataloader()))
    assert batch["weight"].shape == (len(batch["target"]),)
    plain = datamodule(shared, tmp_path / "plain", f"data.root={tiny_root}",
                       f"data.pseudo.labels={shared['labels']}")  # fmt: skip
    assert "weight" not in plain.pseudo_set[0] and "weight" not in plain.train_set[0]
