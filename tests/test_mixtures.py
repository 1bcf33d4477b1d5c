"""task=mix: multi-label test soundscapes mixed from real labelled windows, checked row by row."""

import filecmp
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.core.errors import ConfigError, DataError
from birdclef.data.folders import load_windows
from birdclef.data.metadata import find_soundscape_labels, load_metadata, load_soundscape_labels
from birdclef.data.mixtures import (
    BACKGROUND,
    SOURCE,
    MixSpec,
    mix_window,
    plan_mixtures,
    render_soundscape,
    rms,
)
from birdclef.tasks.mix import run
from tests.conftest import SR, build_folder, compose_cfg

N = 2  # soundscapes per test folder
ENDS = list(range(5, 61, 5))  # s, the 12 rows of a 60-s soundscape


def mix(source: Path, output: Path, *overrides: str) -> dict:
    return build_folder("mix", source, output, f"task.n_soundscapes={N}", *overrides)


@pytest.fixture(scope="module")
def built(tiny_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("mix") / "out"
    return output, mix(tiny_root, output)


def decode(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == SR and audio.ndim == 1
    return audio


def test_layout_row_ids_and_audio_length(built, tiny_root):
    output, summary = built
    meta = load_metadata(output)  # the folder trains: train.csv, taxonomy, train_audio
    assert (output / "train_audio").is_symlink()
    assert (output / "train_audio").resolve() == (tiny_root / "train_audio").resolve()
    for name in ("train.csv", "taxonomy.csv", "sample_submission.csv"):
        assert filecmp.cmp(output / name, tiny_root / name, shallow=False)
    truth = pd.read_csv(output / "soundscape_labels.csv")
    stems = ["mix_000", "mix_001"]
    assert list(truth["row_id"]) == [f"{s}_{e}" for s in stems for e in ENDS]
    submission = pd.read_csv(tiny_root / "sample_submission.csv", nrows=0).columns
    assert list(truth.columns) == list(submission)  # row_id, then the classes in scored order
    assert set(np.unique(truth[meta.classes])) <= {0, 1}
    assert load_soundscape_labels(output, meta.classes) is not None  # audio present for every row
    assert sorted(p.name for p in (output / "test_soundscapes").iterdir()) == [
        f"{s}.ogg" for s in stems
    ]
    for stem in stems:
        assert len(decode(output / "test_soundscapes" / f"{stem}.ogg")) == 60 * SR
    assert summary["rows"] == N * len(ENDS) and summary["soundscapes"] == N
    assert sum(summary["positives_per_row"].values()) == summary["rows"]
    assert "seed 42" in (output / "README.md").read_text()


def test_every_row_is_the_union_of_its_sources(built, tiny_root):
    output, _ = built
    classes = load_metadata(tiny_root).classes
    source = load_soundscape_labels(tiny_root, classes).set_index("row_id")[classes]
    truth = pd.read_csv(output / "soundscape_labels.csv").set_index("row_id")[classes]
    parts = pd.read_csv(output / "mixture_sources.csv")
    assert set(parts["row_id"]) == set(truth.index)
    for rid, lines in parts.groupby("row_id"):
        backs = lines[lines["component"] == BACKGROUND]["source_row_id"]
        sources = lines[lines["component"] == SOURCE]
        assert (
            len(backs) == 1 and source.loc[backs.iloc[0]].sum() == 0
        )  # background: no labelled call
        assert 2 <= len(sources) <= 3 and sources["source_row_id"].is_unique
        assert sources["snr_db"].between(-5, 10).all()
        union = source.loc[sources["source_row_id"]].max(axis=0).astype(int)
        assert (source.loc[sources["source_row_id"]].sum(axis=1) > 0).all()
        assert union.to_dict() == truth.loc[rid].to_dict(), rid


def test_the_audio_is_the_planned_mixture(built, tiny_root):
    output, _ = built
    classes = load_metadata(tiny_root).classes
    windows = load_windows(tiny_root, load_soundscape_labels(tiny_root, classes), SR)
    plan = pd.read_csv(output / "mixture_sources.csv")
    expected = render_soundscape(plan[plan["stem"] == "mix_001"], windows, SR)
    written = decode(output / "test_soundscapes" / "mix_001.ogg")
    assert np.corrcoef(expected, written)[0, 1] > 0.95  # Vorbis is lossy, but the rows are in place


def test_sources_are_scaled_to_their_snr_over_the_background():
    rng = np.random.default_rng(0)
    background, call = rng.normal(0, 0.01, 5 * SR), rng.normal(0, 0.3, 5 * SR)
    mixed = mix_window(background, [call], [6.0], n_fade=0)
    assert rms(mixed - background) / rms(background) == pytest.approx(10 ** (6 / 20))


def test_each_source_adds_a_species_and_species_are_drawn_evenly():
    # x has three rows and y two, z one; row "a" holds both x and y
    classes = ["x", "y", "z"]
    sources = pd.DataFrame(
        {"row_id": list("abcde"), "x": [1, 1, 1, 0, 0], "y": [1, 0, 0, 1, 0], "z": [0, 0, 0, 0, 1]}
    )
    background = pd.DataFrame({"row_id": ["quiet"], "x": [0], "y": [0], "z": [0]})
    plan = plan_mixtures(
        sources, background, classes, MixSpec(n_soundscapes=10, sources_per_window=(2, 2))
    )
    truth = sources.set_index("row_id")[classes]
    counts = pd.Series(0, index=classes)
    for _, lines in plan[plan["component"] == SOURCE].groupby("row_id", sort=False):
        assert len(lines) == 2
        covered = pd.Series(0, index=classes)
        for source in lines["source_row_id"]:  # in the order drawn
            assert (truth.loc[source] > covered).any(), f"{source} adds no species"
            covered = covered | truth.loc[source]
        counts += covered
    assert counts.min() >= 0.75 * counts.max(), (
        counts.to_dict()
    )  # x's three rows give it no 3x share


def test_same_settings_give_the_same_folder_and_resume(built, tiny_root, tmp_path):
    output, summary = built
    again = tmp_path / "again"
    assert mix(tiny_root, again) == summary
    for name in ("soundscape_labels.csv", "mixture_sources.csv"):
        assert filecmp.cmp(output / name, again / name, shallow=False)
    for ogg in (output / "test_soundscapes").glob("*.ogg"):
        np.testing.assert_array_equal(decode(ogg), decode(again / "test_soundscapes" / ogg.name))
    # a killed run: one soundscape and the labels missing; the rerun writes them, the rest is kept
    kept = again / "test_soundscapes" / "mix_000.ogg"
    before = kept.stat().st_mtime_ns
    (again / "test_soundscapes" / "mix_001.ogg").unlink()
    (again / "soundscape_labels.csv").unlink()
    assert mix(tiny_root, again) == summary
    assert kept.stat().st_mtime_ns == before
    np.testing.assert_array_equal(
        decode(output / "test_soundscapes" / "mix_001.ogg"),
        decode(again / "test_soundscapes" / "mix_001.ogg"),
    )


def test_other_settings_need_overwrite(tiny_root, tmp_path):
    output = tmp_path / "out"
    mix(tiny_root, output)
    with pytest.raises(ConfigError, match=r"other settings.*task.overwrite=true"):
        mix(tiny_root, output, "seed=1")
    first = pd.read_csv(output / "mixture_sources.csv")
    mix(tiny_root, output, "seed=1", "task.overwrite=true")
    assert not first.equals(pd.read_csv(output / "mixture_sources.csv"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not made by task=mix"):
        mix(tiny_root, foreign, "task.overwrite=true")
    assert (foreign / "notes.txt").read_text() == "mine"


def copy_source(tiny_root: Path, dst: Path, labels: pd.DataFrame | None) -> Path:
    """A source folder like `tiny_root` (audio linked) with other soundscape labels, or none."""
    (dst / "test_soundscapes").mkdir(parents=True)
    for name in ("train.csv", "taxonomy.csv", "sample_submission.csv"):
        shutil.copyfile(tiny_root / name, dst / name)
    os.symlink(tiny_root / "train_audio", dst / "train_audio")
    for ogg in (tiny_root / "test_soundscapes").glob("*.ogg"):
        os.symlink(ogg, dst / "test_soundscapes" / ogg.name)
    if labels is not None:
        labels.to_csv(dst / "soundscape_labels.csv", index=False)
    return dst


def test_bad_sources_are_one_clear_error(tiny_root, tmp_path):
    with pytest.raises(ConfigError, match="task.source is not set"):
        run(compose_cfg("task=mix", tmp=tmp_path))
    with pytest.raises(DataError, match="no soundscape_labels.csv"):
        mix(copy_source(tiny_root, tmp_path / "unlabelled", None), tmp_path / "a")
    labels = pd.read_csv(find_soundscape_labels(tiny_root))
    calls_only = labels[labels.drop(columns="row_id").sum(axis=1) > 0]
    with pytest.raises(DataError, match="no usable all-zero row"):
        mix(copy_source(tiny_root, tmp_path / "no_background", calls_only), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-made
    with pytest.raises(ConfigError, match="sources_per_window"):
        MixSpec(sources_per_window=(3, 2)).validate()


def test_the_shipped_command_fails_in_one_line_without_a_source(cfg, run_main):
    """`python run.py task=mix`, run.py's main in this process."""
    status, output = run_main(cfg("task=mix"))
    assert status == 2, output
    assert "task.source is not set" in output
    assert "Traceback" not in output
