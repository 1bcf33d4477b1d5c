from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from birdclef.core.errors import ConfigError
from birdclef.data.audio import audio_seconds, load_audio
from birdclef.data.metadata import TAXONOMY_COLUMNS, TRAIN_COLUMNS
from birdclef.data.synthetic import SynthSpec, generate
from birdclef.data.synthetic.speech import WORDS, intro_text, render_speech
from tests.conftest import needs_espeak, tiny_spec


def test_layout_and_columns(tiny_root):
    for name in ("train.csv", "taxonomy.csv", "sample_submission.csv", "recording_location.txt",
                 "train_audio_segments.csv", "train_soundscapes_truth.csv", "synth_spec.json",
                 "test_soundscapes/soundscape_labels.csv"):  # fmt: skip
        assert (tiny_root / name).is_file(), name
    train = pd.read_csv(tiny_root / "train.csv", dtype=str)
    assert tuple(train.columns) == TRAIN_COLUMNS
    assert tuple(pd.read_csv(tiny_root / "taxonomy.csv").columns) == TAXONOMY_COLUMNS
    for filename in train["filename"]:
        assert (tiny_root / "train_audio" / filename).is_file()
    assert len(list((tiny_root / "train_soundscapes").glob("*.ogg"))) == 1
    assert len(list((tiny_root / "test_soundscapes").glob("*.ogg"))) == 2


@pytest.mark.slow  # the default spec's ~100 recordings: half a minute or more
def test_quirks_the_study_fights(tmp_path):
    root = generate(tmp_path / "d", SynthSpec(seed=3), workers=2)
    train = pd.read_csv(root / "train.csv", dtype=str)
    taxonomy = pd.read_csv(root / "taxonomy.csv", dtype=str)
    assert set(taxonomy["class_name"]) == {"Aves", "Amphibia", "Insecta", "Mammalia"}
    counts = train["primary_label"].value_counts()
    assert counts.max() >= 15 and counts.min() <= 2  # long tail with 1-2 clip classes
    seconds = np.array([audio_seconds(root / "train_audio" / f) for f in train["filename"]])
    assert seconds.min() < 3 and seconds.max() > 60
    assert set(train.loc[train["collection"] != "XC", "rating"].astype(float)) == {0.0}
    assert (train.loc[train["collection"] == "XC", "rating"].astype(float) > 0).any()
    assert (train["secondary_labels"] != "[]").any()
    segments = pd.read_csv(root / "train_audio_segments.csv")
    assert {"call", "voice", "silence", "secondary"} <= set(segments["kind"])
    truth = pd.read_csv(root / "test_soundscapes" / "soundscape_labels.csv")
    assert len(truth) == 8 * 12 and (truth.drop(columns="row_id").sum(axis=1) > 1).any()


def test_deterministic_per_seed(tiny_root, tmp_path):
    a = tiny_root  # the session's tiny dataset, generated in this process (workers=0)
    b = generate(tmp_path / "b", tiny_spec(), workers=2)
    c = generate(tmp_path / "c", replace(tiny_spec(), seed=8), workers=0)
    for name in (
        "train.csv",
        "taxonomy.csv",
        "train_audio_segments.csv",
        "test_soundscapes/soundscape_labels.csv",
    ):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "train.csv").read_bytes() != (c / "train.csv").read_bytes()
    first = pd.read_csv(a / "train.csv")["filename"].iloc[0]
    np.testing.assert_array_equal(
        load_audio(a / "train_audio" / first, 32000), load_audio(b / "train_audio" / first, 32000)
    )


def test_truth_marks_calls_in_soundscape_windows(tiny_root):
    truth = pd.read_csv(tiny_root / "test_soundscapes" / "soundscape_labels.csv")
    stem = truth["row_id"].iloc[0].rsplit("_", 1)[0]
    audio = load_audio(tiny_root / "test_soundscapes" / f"{stem}.ogg", 32000)
    assert len(audio) == 30 * 32000
    assert truth.drop(columns="row_id").to_numpy().sum() > 0


def test_bad_spec():
    with pytest.raises(ConfigError, match="unknown key"):
        SynthSpec.from_config({"n_clases": 3})
    with pytest.raises(ConfigError, match="n_classes"):
        SynthSpec.from_config({"n_classes": 1})


def window_rms(audio: np.ndarray, seconds: float, sr: int = 32000) -> np.ndarray:
    n = int(seconds * sr)
    return np.sqrt(np.mean(audio[: len(audio) // n * n].reshape(-1, n) ** 2, axis=1))


def test_hidden_truth_matches_the_audio(tmp_path):
    spec = replace(tiny_spec(), n_test_soundscapes=2, soundscape_seconds=60,
                   species_per_soundscape=(1, 1), soundscape_snr_db=(15.0, 20.0),
                   median_seconds=16.0, silence_fraction=1.0)  # fmt: skip
    root = generate(tmp_path / "d", spec, workers=0)
    truth = pd.read_csv(root / "test_soundscapes" / "soundscape_labels.csv")
    present = truth.drop(columns="row_id").sum(axis=1).to_numpy() > 0
    stems = truth["row_id"].str.rsplit("_", n=1).str[0].unique()
    rms = np.concatenate(
        [window_rms(load_audio(root / "test_soundscapes" / f"{s}.ogg", 32000), 5) for s in stems]
    )
    assert present.any() and (~present).any()
    assert rms[present].mean() > 2 * rms[~present].mean()  # labelled windows hold the calls
    segments = pd.read_csv(root / "train_audio_segments.csv")
    quiet = segments[segments["kind"] == "silence"].iloc[0]
    audio = load_audio(root / "train_audio" / quiet["filename"], 32000)
    inside = audio[int(quiet["start"] * 32000) : int(quiet["end"] * 32000)]
    calls = segments[(segments["filename"] == quiet["filename"]) & (segments["kind"] == "call")]
    call = calls.iloc[0]
    loud = audio[int(call["start"] * 32000) : int(call["end"] * 32000)]
    assert np.sqrt(np.mean(inside**2)) < 0.2 * np.sqrt(np.mean(loud**2))


def _generate_module():
    """birdclef.data.synthetic.generate (the package exports a function of that name)."""
    import sys

    return sys.modules["birdclef.data.synthetic.generate"]


@needs_espeak
def test_the_voice_is_part_of_the_datasets_key(tmp_path):
    from birdclef.data.synthetic import dataset_dir

    formant, espeak = tiny_spec(), replace(tiny_spec(), voice="espeak")
    assert "voice" not in formant.as_dict()  # folders made before the option keep their names
    assert dataset_dir(tmp_path, formant) != dataset_dir(tmp_path, espeak)


def test_without_espeak_ng_the_voice_falls_back_to_the_formant_key(tmp_path, monkeypatch, caplog):
    """The key logic and the fallback, with espeak-ng's presence faked either way."""
    from birdclef.data.synthetic import dataset_dir

    formant, espeak = tiny_spec(), replace(tiny_spec(), voice="espeak")
    assert "voice" not in formant.as_dict()  # folders made before the option keep their names
    with pytest.raises(ConfigError, match="synth.voice='opera'"):
        SynthSpec.from_config({"voice": "opera"})
    monkeypatch.setattr(_generate_module(), "espeak_available", lambda: True)
    assert dataset_dir(tmp_path, formant) != dataset_dir(tmp_path, espeak)
    monkeypatch.setattr(_generate_module(), "espeak_available", lambda: False)
    with caplog.at_level("WARNING"):
        assert dataset_dir(tmp_path, espeak) == dataset_dir(tmp_path, formant)
    assert "espeak-ng is not installed" in caplog.text


@needs_espeak
def test_espeak_intros_are_real_speech_and_deterministic_per_seed():
    a = render_speech(3.0, 32000, np.random.default_rng(5))
    b = render_speech(3.0, 32000, np.random.default_rng(5))
    c = render_speech(3.0, 32000, np.random.default_rng(6))
    assert a.shape == (96000,) and np.abs(a).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    text = intro_text("en", np.random.default_rng(0))
    assert text.split()[0] in WORDS["en"]["open"] and text == intro_text(
        "en", np.random.default_rng(0)
    )


def test_an_espeak_failure_is_one_clear_error(monkeypatch):
    import birdclef.data.synthetic.speech as speech
    from birdclef.core.errors import ConfigError

    monkeypatch.setattr(speech, "ESPEAK", "false")  # a command that fails, as a broken install
    with pytest.raises(ConfigError, match="espeak-ng failed for synth voice 'en'"):
        speech.speak("hello", "en", 150, 50, 32000)
