"""task=mix_recordings: a multi-label training set of real recordings with other species mixed in."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.core.errors import ConfigError
from birdclef.data.metadata import load_metadata
from birdclef.data.splits import SplitSpec
from tests.conftest import build_folder


def mix(source, output, *overrides):
    return build_folder("mix_recordings", source, output, "task.n_groups=2", *overrides)


@pytest.fixture(scope="module")
def built(tiny_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("multi") / "out"
    return output, mix(tiny_root, output)


def test_every_recording_keeps_its_species_and_lists_the_mixed_ones(built, tiny_root):
    output, summary = built
    source = load_metadata(tiny_root).train
    made = load_metadata(output).train  # the folder trains: train.csv, taxonomy, train_audio
    sources = pd.read_csv(output / "mixed_sources.csv")
    assert len(made) == len(source) == summary["recordings"]
    assert list(made["primary_label"]) == list(source["primary_label"])
    raw = pd.read_csv(output / "train.csv")
    for row, text in zip(made.itertuples(), raw["secondary_labels"], strict=True):
        mixed = sources[sources["filename"] == source.loc[row.Index, "filename"]]
        names = source.set_index("filename").loc[mixed["source"], "primary_label"]
        assert sorted(set(names)) == row.secondary_labels == ast.literal_eval(text)
        assert row.primary_label not in row.secondary_labels
        assert 1 <= len(mixed) <= 2 or len(row.secondary_labels) == 0
    assert summary["secondary_per_recording"] > 0.5


def test_mixing_stays_inside_a_group_and_the_audio_keeps_its_length(built, tiny_root):
    output, _ = built
    source = load_metadata(tiny_root)
    made = pd.read_csv(output / "train.csv")
    group = dict(zip(source.train["filename"], made["mix_group"], strict=True))
    sources = pd.read_csv(output / "mixed_sources.csv")
    assert all(
        group[a] == group[b] for a, b in zip(sources["filename"], sources["source"], strict=True)
    )
    for original, mixed in zip(source.train["filename"], made["filename"], strict=True):
        a, rate_a = sf.read(source.audio_path(original))
        b, rate_b = sf.read(output / "train_audio" / mixed)
        assert rate_a == rate_b and len(a) == len(b)
    assert set(made["mix_group"]) == {0, 1}


def test_a_rerun_does_nothing_and_other_settings_need_overwrite(built, tiny_root):
    output, summary = built
    before = (output / "train.csv").stat().st_mtime_ns
    assert mix(tiny_root, output)["recordings"] == summary["recordings"]
    assert (output / "train.csv").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="overwrite"):
        mix(tiny_root, output, "task.seed=3")


def test_a_split_by_mix_group_keeps_a_group_on_one_side(built):
    output, _ = built
    train = load_metadata(output).train
    for fold in (0, 1):
        held = SplitSpec(folds=2, fold=fold, group_by="mix_group").validation(train, seed=0)
        assert train.loc[held, "mix_group"].nunique() == 1
        assert not set(train.loc[held, "mix_group"]) & set(train.loc[~held, "mix_group"])
    with pytest.raises(ConfigError, match="data.split.group_by=site"):
        SplitSpec(group_by="site").validation(train, seed=0)
    assert np.array_equal(
        SplitSpec(folds=2).validation(train, seed=0),
        SplitSpec(folds=2, group_by="filename").validation(train, seed=0),
    )
