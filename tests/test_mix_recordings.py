"""task=mix_recordings: a multi-label training set of real recordings with other species mixed in."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.core.errors import ConfigError
from birdclef.data.metadata import load_metadata
from birdclef.data.mixtures import mixed_spans, row_presence
from birdclef.data.splits import SplitSpec
from birdclef.tasks.evaluate import oof_truth
from birdclef.tasks.mix_recordings import mix_into
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


def test_the_spans_say_where_each_species_was_mixed_in(built):
    output, _ = built
    made = load_metadata(output).train.set_index("filename")
    spans = mixed_spans(output)
    assert len(spans) == len(pd.read_csv(output / "mixed_sources.csv")) > 0
    for span in spans.itertuples():
        assert span.species in made.loc[span.mixed, "secondary_labels"]
        assert 0 <= span.start < span.end <= span.start + 5.0 + 1e-9
    lengths = {f: sf.info(output / "train_audio" / f).duration for f in spans["mixed"]}
    for span in spans.itertuples():  # a whole 5-s window, or what is left of the recording
        assert span.end - span.start == pytest.approx(min(5.0, lengths[span.mixed] - span.start))


def test_mix_into_returns_where_the_window_went():
    audio, piece = np.zeros(32000 * 12, np.float32) + 0.1, np.ones(32000 * 5, np.float32)
    mixed, start, end = mix_into(audio, piece, -6.0, np.random.default_rng(0))
    changed = np.flatnonzero(mixed != audio)
    assert (changed[0], changed[-1] + 1) == (start, end) and end - start == len(piece)
    short = np.zeros(32000 * 3, np.float32) + 0.1  # a recording shorter than the window
    mixed, start, end = mix_into(short, piece, -6.0, np.random.default_rng(0))
    assert (start, end) == (0, len(short)) and (mixed != short).all()


def test_a_secondary_species_is_present_only_on_the_rows_that_hold_a_second_of_it(built):
    spans = pd.DataFrame(
        {"mixed": ["a", "a"], "species": ["x", "y"], "start": [7.0, 9.5], "end": [12.0, 14.5]}
    )
    truth = row_presence(spans, ["a"] * 4 + ["b"], [5, 10, 15, 20, 5], ["x", "y", "z"])
    assert truth.tolist() == [
        [0, 0, 0],  # 0-5 s: neither
        [1, 0, 0],  # 5-10 s: 3 s of x, 0.5 s of y (under a second)
        [1, 1, 0],  # 10-15 s: 2 s of x, 4.5 s of y
        [0, 0, 0],
        [0, 0, 0],  # another file
    ]
    output, _ = built
    made = load_metadata(output).train
    rows = pd.DataFrame(
        [(f, f"{f}_{e}") for f in made["filename"] for e in (5, 10, 15)], columns=["file", "row_id"]
    )
    truth = oof_truth(load_metadata(output), rows, mixed_spans(output))
    classes = load_metadata(output).classes
    primary = [classes.index(p) for p in made["primary_label"] for _ in (5, 10, 15)]
    assert truth[np.arange(len(rows)), primary].all()  # the recording's own species on every row
    secondary = truth.sum() - len(rows)
    listed = made["secondary_labels"].map(len).sum() * 3  # what recording-level labels would mark
    assert 0 < secondary < listed
    recording_level = oof_truth(load_metadata(output), rows, None)  # any other folder
    assert recording_level.sum() - len(rows) == listed
