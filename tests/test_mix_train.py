"""task=mix_train: unlabelled train_soundscapes mixed from a folder's own training windows."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.core.errors import ConfigError
from birdclef.data.metadata import load_metadata
from birdclef.data.mixtures import MixSpec, plan_mixtures, render_soundscape, rms
from birdclef.tasks.mix_train import run, training_windows
from tests.conftest import SR, build_folder, compose_cfg

N = 2  # soundscapes


def mix_train(source: Path, output: Path, *overrides: str) -> dict:
    return build_folder("mix_train", source, output, f"task.n_soundscapes={N}", *overrides)


@pytest.fixture(scope="module")
def built(tiny_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("mix_train") / "out"
    return output, mix_train(tiny_root, output)


def test_layout_links_the_source_and_adds_train_soundscapes(built, tiny_root):
    output, summary = built
    assert (output / "train_audio").is_symlink() and (output / "test_soundscapes").is_symlink()
    assert (output / "train_audio").resolve() == (tiny_root / "train_audio").resolve()
    files = sorted((output / "train_soundscapes").glob("*.ogg"))
    assert [f.stem for f in files] == ["trainmix_000", "trainmix_001"]
    audio, rate = sf.read(files[0], dtype="float32")
    assert rate == SR and len(audio) == 60 * SR
    truth = pd.read_csv(output / "train_soundscapes_truth.csv")
    assert len(truth) == summary["rows"] == N * 12
    assert truth["row_id"].iloc[0] == "trainmix_000_5"
    # the new folder trains and scores exactly as the source does
    assert list(load_metadata(output).classes) == list(load_metadata(tiny_root).classes)


def test_every_row_is_the_union_of_its_windows_labels(built, tiny_root):
    output, _ = built
    truth = pd.read_csv(output / "train_soundscapes_truth.csv").set_index("row_id")
    lines = pd.read_csv(output / "train_mixture_sources.csv")
    train = pd.read_csv(tiny_root / "train.csv")
    label_of = dict(zip(train["filename"], train["primary_label"], strict=True))
    for rid, parts in lines.groupby("row_id"):
        species = {label_of[w.split("@")[0]] for w in parts["source_row_id"]}
        assert len(species) == len(parts)  # every window adds a new species
        assert 2 <= len(parts) <= 3
        assert set(truth.columns[truth.loc[rid].to_numpy() > 0]) == species
        assert parts["snr_db"].iloc[0] == 0.0  # the level reference


def test_the_audio_is_the_planned_mixture(tiny_root):
    meta = load_metadata(tiny_root)
    windows, labels = training_windows(meta, SR)
    spec = MixSpec(n_soundscapes=1, snr_db=(-10.0, 5.0), sample_rate=SR, stem_prefix="t")
    lines = plan_mixtures(labels, None, meta.classes, spec)
    audio = render_soundscape(lines, windows, SR)
    first = lines[lines["end"] == 5]
    ref = rms(windows[first["source_row_id"].iloc[0]])
    expected = sum(
        windows[r] * (ref * 10 ** (s / 20) / rms(windows[r]))
        for r, s in zip(first["source_row_id"], first["snr_db"], strict=True)
    )
    middle = slice(SR, 4 * SR)  # away from the fades
    # the whole file may be scaled down once against clipping: one factor <= 1 for every sample
    factor = float(audio[middle] @ expected[middle] / (expected[middle] @ expected[middle]))
    assert 0.0 < factor <= 1.0 + 1e-6
    np.testing.assert_allclose(audio[middle], factor * expected[middle], atol=1e-5)
    # every training window is cut by the study's rule and labelled with its recording's label
    assert all("@" in r for r in labels["row_id"])
    assert (labels[meta.classes].sum(axis=1) == 1).all()


def test_same_settings_resume_and_other_settings_need_overwrite(built, tiny_root):
    output, _ = built
    before = sorted(p.stat().st_mtime_ns for p in (output / "train_soundscapes").glob("*.ogg"))
    mix_train(tiny_root, output)
    after = sorted(p.stat().st_mtime_ns for p in (output / "train_soundscapes").glob("*.ogg"))
    assert before == after
    with pytest.raises(ConfigError, match="overwrite"):
        mix_train(tiny_root, output, "task.seed=7")


def test_missing_source_is_one_clear_error(tmp_path):
    cfg = compose_cfg("task=mix_train", tmp=tmp_path)
    with pytest.raises(ConfigError, match="task.source is not set"):
        run(cfg)
