"""Training draws windows only from the kept windows; validation and the report stay right."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from birdclef.data.curation.apply import REPORT_NAME
from birdclef.data.curation.manifest import WindowManifest
from birdclef.data.curation.window_filter import WindowFilter
from birdclef.data.datasets import _kept_spans
from birdclef.tasks.train import build_datamodule, write_data_files
from tests.conftest import compose_cfg, train_cfg
from tests.test_curation import LoudDetector

FILTER_OPTIONS = (
    "voice",
    "yamnet",
    "rating_yamnet",
    "yamnet_voice",
    "rating_voice",
    "rating_yamnet_voice",
)


def test_kept_spans_keep_random_crops_inside_runs_of_kept_windows():
    hop, n = 1, 5  # frames: a 5-frame window
    # kept windows 0-5, 5-10 (one run 0-10), 20-25 (alone), and a short 30-33 at the end
    spans = _kept_spans([20, 0, 5, 30], [25, 5, 10, 33], hop, n, None)
    assert spans == [(0, 0, 5), (5, 0, 5), (20, 20, 20), (30, 30, 30)]
    assert _kept_spans([0, 5], [5, 10], hop, n, 7) == [(0, 0, 2), (5, 0, 2)]  # crop_seconds limit


@pytest.mark.parametrize("option", FILTER_OPTIONS)
def test_every_filter_option_builds_a_window_filter(option, tmp_path):
    # the study's combinations of stages, each stage switched on by its own key
    stages = [f"filter.{stage}.enabled=true" for stage in option.split("_")]
    cfg = compose_cfg(*stages, "seed=5", tmp=tmp_path)
    f = instantiate(cfg.filter)
    assert isinstance(f, WindowFilter) and f.seed == 5
    assert (f.rating is not None) == option.startswith("rating")
    assert (f.yamnet is not None) == ("yamnet" in option)
    assert (f.voice_drop == 0.5) == ("voice" in option)
    if f.yamnet is not None:
        assert len(f.yamnet.keep) == 27 and f.yamnet.handle == "https://tfhub.dev/google/yamnet/1"


@pytest.fixture()
def loud_voice(monkeypatch):
    """filter.voice with a cheap deterministic detector in place of Silero (speech = loud)."""

    def manifests(self, paths, keys, groups, cache_dir, sample_rate, workers=None):
        detector = LoudDetector()
        detector.name = "silero"
        return {
            "silero": WindowManifest(cache_dir, detector, sample_rate, 0).build(paths, keys, groups)
        }

    monkeypatch.setattr(WindowFilter, "manifests", manifests)


def datamodule(tiny_root, tmp_path, *overrides):
    cfg = train_cfg(tiny_root, *overrides, tmp=tmp_path)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def items(dataset) -> set[tuple[int, int]]:
    return set(zip(dataset.recording.tolist(), dataset.start.tolist(), strict=True))


def test_training_draws_only_kept_windows_and_validation_is_unchanged(
    tiny_root, tmp_path, loud_voice
):
    base = datamodule(tiny_root, tmp_path / "a", "seed=3")
    dm = datamodule(
        tiny_root, tmp_path / "b", "filter.voice.enabled=true", "filter.voice.drop=0.5", "seed=3"
    )
    assert items(dm.val_set) == items(base.val_set) and len(dm.val_set) == len(base.val_set)
    manifest = dm.window_manifests["silero"].windows
    frames = dm.train_set.frames
    train_files = set(dm.split.loc[dm.split["split"] == "train", "filename"])
    scored = manifest[manifest["file"].isin(train_files)]
    flagged = int((scored["speech_s"] >= 0.5).sum())
    hop = frames.hop_length
    kept = {
        (frames.position[f], round(s / hop))
        for f, s in zip(scored["file"], scored["start"], strict=True)
    }
    assert items(dm.train_set) < kept  # a strict subset of the training windows
    rescued = sum(dm.train_filter.rescued.values())  # species whose every window was dropped
    assert (len(kept), flagged, rescued, len(dm.train_set)) == (11, 9, 2, 11 - round(0.5 * 9) + 2)
    assert not (tmp_path / "b" / "out" / REPORT_NAME).exists()  # task=train writes it, not dm
    report = dm.filter_report.set_index("class")
    assert report.loc["all", "windows_before"] == len(scored)
    assert report.loc["all", "windows_after"] == len(dm.train_set)
    assert report.loc["all", "rescued_windows"] == rescued
    again = datamodule(
        tiny_root, tmp_path / "c", "filter.voice.enabled=true", "filter.voice.drop=0.5", "seed=3"
    )
    assert items(again.train_set) == items(dm.train_set)  # the same draw for the same seed


def test_random_crops_stay_inside_kept_audio(tiny_root, tmp_path, loud_voice):
    dm = datamodule(
        tiny_root,
        tmp_path,
        "filter.voice.enabled=true",
        "filter.voice.drop=1.0",
        "data.windows.crop=random",
    )
    ds, n = dm.train_set, dm.train_set.n_frames
    drawn, cut = [], ds._features
    ds._features = lambda frames, rec, start: (drawn.append(start), cut(frames, rec, start))[1]
    kept = {}  # recording -> kept frames
    for rec, start in zip(ds.recording, ds.start, strict=True):
        kept.setdefault(int(rec), set()).update(range(start, start + n))
    torch.manual_seed(0)
    moved = 0
    for i in range(len(ds)):
        for _ in range(5):
            drawn.clear()
            ds[i]
            low, high = ds.crop_range[i]
            assert low <= drawn[0] <= high
            if high > low:  # a run of at least one window: the whole crop is kept audio
                assert set(range(drawn[0], drawn[0] + n)) <= kept[int(ds.recording[i])]
                moved += drawn[0] != ds.start[i]
    assert moved > 0


def test_the_rating_filter_writes_its_per_class_report_too(tiny_root, tmp_path):
    dm = datamodule(
        tiny_root,
        tmp_path,
        "filter.rating.enabled=true",
        "filter.rating.min_rating=4.5",
        "filter.rating.keep_top=1",
    )
    write_data_files(dm, tmp_path)  # what task=train writes into its run folder
    report = pd.read_csv(tmp_path / REPORT_NAME).set_index("class")
    assert list(report.reset_index().columns) == list(dm.filter_report.columns)
    assert report.loc["all", "windows_after"] == len(dm.train_set)  # every window of kept rows
    assert report.loc["all", "recordings_after"] == (dm.split["split"] == "train").sum()
    # the dropped recordings stay in split.csv, so --rare counts classes before the filter
    dropped = report.loc["all", "recordings_before"] - report.loc["all", "recordings_after"]
    assert dropped > 0 and (dm.split["split"] == "filtered").sum() == dropped
    assert report.loc["all", "rescued_recordings"] == sum(dm.train_filter.rescued.values())
    assert report.loc["all", "rescued_windows"] == 0
    none = datamodule(tiny_root, tmp_path / "none")
    write_data_files(none, tmp_path / "none")
    assert none.filter_report is None and not (tmp_path / "none" / REPORT_NAME).exists()
