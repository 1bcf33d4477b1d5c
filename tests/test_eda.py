"""task=eda: durations, counts and header characteristics checked against independent numbers."""

from __future__ import annotations

import ast
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.analysis import eda
from birdclef.analysis.headers import characteristics, read_headers
from birdclef.core.errors import DataError
from birdclef.tasks.eda import run
from tests.conftest import compose_cfg, tone


def decoded_seconds(path) -> float:
    data, rate = sf.read(path, dtype="float32")
    return len(data) / rate


@pytest.fixture(scope="module")
def tiny_report(tiny_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eda")
    metrics = run(compose_cfg("task=eda", f"data.root={tiny_root}", "task.workers=2", tmp=tmp))
    return metrics, tmp / "out" / "report"


def test_durations_match_decoded_audio(tiny_root, tiny_report):
    metrics, report = tiny_report
    train = pd.read_csv(tiny_root / "train.csv", dtype=str)
    seconds = np.array([decoded_seconds(tiny_root / "train_audio" / f) for f in train["filename"]])
    assert metrics["eda/labelled_recordings"] == len(train) == 14
    assert metrics["eda/labelled_hours"] == pytest.approx(seconds.sum() / 3600, rel=1e-6)
    assert metrics["eda/labelled_mean_seconds"] == pytest.approx(seconds.mean(), rel=1e-6)
    assert metrics["eda/labelled_share_under_short"] == pytest.approx((seconds < 30).mean())
    modal = Counter((seconds // 10).astype(int)).most_common(1)[0][0] * 10
    text = (report / "report.md").read_text()
    assert f"| modal 10-s bin | {modal}-{modal + 10} s | 30-40 s | 30-40 s |" in text
    assert metrics["eda/unlabelled_recordings"] == 1 and metrics["eda/test_recordings"] == 2
    assert metrics["eda/unlabelled_hours"] == pytest.approx(30 / 3600)
    assert metrics["eda/unreadable"] == 0 and metrics["eda/files"] == 17


def test_label_counts_match_train_csv(tiny_root, tiny_report):
    metrics, report = tiny_report
    train = pd.read_csv(tiny_root / "train.csv", dtype=str, keep_default_na=False)
    types = {t for cell in train["type"] for t in ast.literal_eval(cell)}
    no_secondary = sum(ast.literal_eval(c) == [] for c in train["secondary_labels"])
    assert metrics["eda/classes_recorded"] == train["primary_label"].nunique()
    assert metrics["eda/type_distinct"] == len(types)
    assert metrics["eda/share_without_secondary"] == pytest.approx(no_secondary / len(train))
    for name in ("durations", "primary_by_rank", "secondary_sand", "types", "ratings", "clips",
                 "soundscape"):  # fmt: skip
        assert (report / f"{name}.png").stat().st_size > 1000, name
    saved = json.loads((report.parent / "metrics.json").read_text())
    assert saved["eda/labelled_recordings"] == 14
    assert "Skipped" not in (report / "report.md").read_text()


def test_duration_summary_values():
    summary = eda.duration_summary(pd.Series([5.0, 8.0, 12.0, 25.0, 61.0, 9.0]))
    assert summary == {"count": 6, "mean_s": 20.0, "modal_bin": "0-10 s", "total_h": 120 / 3600}
    assert eda.duration_summary(pd.Series([60.0, 60.0]))["modal_bin"] == "60-70 s"
    assert eda.share_under(pd.Series([5.0, 29.9, 30.0, 100.0]), 30) == 0.5


def test_tables_on_a_small_frame():
    train = pd.DataFrame({
        "primary_label": ["a", "a", "b", "c"],
        "secondary_labels": ["['b']", "[]", "['a', 'x']", ""],
        "type": ["['song', 'call']", "['Song']", "[]", "call; flight call"],
        "collection": ["XC", "XC", "iNat", "XC"],
        "rating": ["4.5", "0", "0", "bad"],
    })  # fmt: skip
    assert eda.primary_counts(train).to_dict() == {"a": 2, "b": 1, "c": 1}
    sand = eda.secondary_matrix(train, include_empty=True)
    assert list(sand.index) == ["(none)", "a", "b", "x"]
    assert sand.loc["(none)"].to_dict() == {"a": 1, "b": 0, "c": 1}
    assert eda.secondary_matrix(train, include_empty=False).shape == (3, 3)
    counts, distinct, lowered = eda.type_counts(train)
    assert counts.to_dict() == {"call": 2, "(no type)": 1, "Song": 1, "flight call": 1, "song": 1}
    assert (distinct, lowered) == (4, 3)
    assert eda.rating_table(train).to_dict() == {"XC": {0.0: 1, 4.5: 1}, "iNat": {0.0: 1, 4.5: 0}}
    means = eda.rating_means(train).set_index("collection")
    assert means.loc["XC", "recordings"] == 3 and means.loc["XC", "mean_rating"] == 4.5
    fewest = eda.fewest_seconds(train, pd.Series([10.0, 5.0, 3.0, 20.0]), ["a", "b", "c", "d"], 3)
    assert fewest.to_dict("list") == {"class": ["d", "b", "a"], "recordings": [0, 1, 2],
                                      "seconds": [0.0, 3.0, 15.0]}  # fmt: skip


def test_parse_list_loose():
    assert eda.parse_list_loose("['song', 'call']") == ["song", "call"]
    assert eda.parse_list_loose("['']") == []
    assert eda.parse_list_loose("[song, call]") == ["song", "call"]
    assert eda.parse_list_loose("['unclosed") == ["unclosed"]
    assert eda.parse_list_loose("song") == ["song"]
    assert eda.parse_list_loose(float("nan")) == [] and eda.parse_list_loose("") == []


def test_header_characteristics_of_written_files(tmp_path):
    wav, ogg, bad = tmp_path / "a.wav", tmp_path / "b.ogg", tmp_path / "c.ogg"
    sf.write(wav, np.stack([tone(1.5, sr=48000)] * 2, axis=1), 48000, subtype="PCM_16")
    sf.write(ogg, tone(2.0), 32000, format="OGG", subtype="VORBIS")
    bad.write_bytes(b"not audio at all")
    rows = read_headers([wav, ogg, bad], workers=2).set_index("path")
    a, b, c = rows.loc[str(wav)], rows.loc[str(ogg)], rows.loc[str(bad)]
    assert (a["seconds"], a["sample_rate"], a["channels"], a["format"], a["subtype"]) == (
        1.5, 48000, 2, "WAV", "PCM_16",
    )  # fmt: skip
    assert a["kbps"] == pytest.approx(wav.stat().st_size * 8 / 1.5 / 1000)
    assert a["kbps"] == pytest.approx(
        48000 * 2 * 16 / 1000, rel=0.01
    )  # PCM: rate x channels x bits
    assert (b["seconds"], b["sample_rate"], b["channels"], b["subtype"]) == (
        2.0,
        32000,
        1,
        "VORBIS",
    )
    assert c["error"] and np.isnan(c["seconds"])
    table = characteristics(rows.reset_index())
    assert table["files"].tolist() == [1, 1] and set(table["format"]) == {"WAV", "OGG"}


def test_missing_columns_skip_sections(tiny_root, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "train_audio").symlink_to(tiny_root / "train_audio")
    train = pd.read_csv(tiny_root / "train.csv", dtype=str)
    train.drop(columns=["type", "rating", "secondary_labels"]).to_csv(
        root / "train.csv", index=False
    )
    metrics = run(compose_cfg("task=eda", f"data.root={root}", "task.clips=1", tmp=tmp_path))
    text = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "*Skipped: train.csv has no 'type' column.*" in text
    assert "*Skipped: train.csv has no 'rating' column.*" in text
    assert "*Skipped: train.csv has no 'secondary_labels' column.*" in text
    assert "No audio in: unlabelled, test." in text
    assert metrics["eda/labelled_recordings"] == 14 and metrics["eda/classes_recorded"] == 6


def test_missing_root_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.root=.*nowhere does not exist"):
        run(compose_cfg("task=eda", f"data.root={tmp_path / 'nowhere'}", tmp=tmp_path))
