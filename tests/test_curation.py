"""Window manifest (resume, changed files, bad audio) and the window filter's rules, exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.core.errors import ConfigError
from birdclef.data.curation.manifest import Manifest, WindowManifest, seconds_of, window_spans
from birdclef.data.curation.window_filter import WindowFilter, filter_report
from tests.conftest import ROOT, SR, tone, write_wav


class LoudDetector:
    """A cheap stand-in detector: `speech_s` = 5 s when the window's RMS exceeds 0.1."""

    name = "loud"

    def __init__(self, fail_after: int | None = None, delay: float = 0.0) -> None:
        self.calls, self.fail_after, self.delay = 0, fail_after, delay

    def params(self) -> dict:
        return {"detector": self.name}

    def check(self) -> None:
        pass

    def load(self) -> None:
        pass

    def score(self, audio, spans):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # as a Ctrl-C in the middle of a build
        self.calls += 1
        time.sleep(self.delay)
        return [
            {"speech": 1.0, "speech_s": 5.0}
            if np.sqrt(np.mean(audio[a:b] ** 2)) > 0.1
            else {"speech": 0.0, "speech_s": 0.0}
            for a, b in spans
        ]


def folder_of_clips(root: Path, n: int = 5) -> list[Path]:
    """n clips of 13 s (3 windows each): loud, then quiet, then loud."""
    paths = []
    for i in range(n):
        audio = np.concatenate([tone(5, 1000 + 100 * i), 0.01 * tone(5), tone(3)])
        paths.append(write_wav(root / f"c{i}" / f"clip{i}.wav", audio))
    return paths


def build(cache: Path, paths, detector) -> Manifest:
    keys = [f"{p.parent.name}/{p.name}" for p in paths]
    return WindowManifest(cache, detector, SR, workers=0).build(
        paths, keys, [p.parent.name for p in paths]
    )


def test_windows_are_the_studys_five_second_windows():
    assert window_spans(13 * SR, SR) == [(0, 5 * SR), (5 * SR, 10 * SR), (8 * SR, 13 * SR)]
    assert window_spans(12 * SR, SR) == [(0, 5 * SR), (5 * SR, 10 * SR)]  # a 2-s tail is dropped
    assert window_spans(3 * SR, SR) == [(0, 3 * SR)]
    frame = pd.DataFrame(
        {"file": ["a", "a", "a", "b"], "start": [0, 5, 7, 0], "end": [5, 10, 12, 3]}
    )
    assert seconds_of(frame, 1) == 15.0  # a: 0-12 once, b: 3 s


def test_manifest_scores_each_file_once_resumes_and_rescores_only_a_changed_file(tmp_path):
    paths = folder_of_clips(tmp_path / "audio")
    bad = write_wav(tmp_path / "audio" / "c9" / "broken.wav", tone(1))
    bad.write_bytes(b"not audio")
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "cache", [*paths, bad], LoudDetector(fail_after=2))
    resumed = LoudDetector()
    manifest = build(tmp_path / "cache", [*paths, bad], resumed)
    assert resumed.calls == 3  # the two files done before the interruption are not scored again
    assert manifest.scored == 9 and len(manifest.windows) == 15
    assert manifest.bad["file"].tolist() == ["c9/broken.wav"]
    first = manifest.windows[manifest.windows["file"] == "c0/clip0.wav"]
    assert first["speech_s"].tolist() == [5.0, 0.0, 5.0]
    assert first["start"].tolist() == [0, 5 * SR, 8 * SR]
    again = LoudDetector()
    build(tmp_path / "cache", [*paths, bad], again)
    assert again.calls == 0
    write_wav(paths[3], 0.01 * tone(13))  # a changed file: its stamp changes, only it is re-scored
    changed = LoudDetector()
    manifest = build(tmp_path / "cache", [*paths, bad], changed)
    assert changed.calls == 1
    assert manifest.windows.loc[manifest.windows["file"] == "c3/clip3.wav", "speech_s"].sum() == 0


KILLED_BUILD = """
import sys
from pathlib import Path
from tests.test_curation import LoudDetector, build, folder_of_clips
paths = folder_of_clips(Path(sys.argv[1]), 8)
build(Path(sys.argv[2]), paths, LoudDetector(delay=0.3))
"""


def test_a_killed_build_resumes_where_it_stopped(tmp_path):
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path / "audio"), str(cache)],
        cwd=ROOT, env={**os.environ, "BIRDCLEF_CPUS": "1"},
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.rglob("parts/*/*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(cache.rglob("parts/*/*.json")))
    assert 3 <= done < 8
    assert not list(cache.rglob("parts/*/.*.tmp"))  # nothing half-written
    resumed = LoudDetector()
    paths = sorted((tmp_path / "audio").rglob("*.wav"))  # the same files: rewriting would re-score
    manifest = build(cache, paths, resumed)
    assert resumed.calls == 8 - done and len(manifest.windows) == 24


def table(speech: list[float], labels: list[str], keep=None, score=None):
    """Windows of one file per label run, and the manifests the filter reads."""
    files = [f"{label}/f.ogg" for label in labels]
    window = [int(s) for s in pd.Series(files).groupby(files).cumcount()]
    windows = pd.DataFrame({
        "file": files, "primary_label": labels, "window": window,
        "start": [s * 5 * SR for s in window], "end": [(s + 1) * 5 * SR for s in window],
    })  # fmt: skip
    scores = windows[["file", "window"]].assign(speech_s=speech)
    manifests = {"silero": Manifest(scores, pd.DataFrame())}
    if keep is not None:
        manifests["yamnet"] = Manifest(
            scores.assign(keep=keep, keep_score=score, speech_s=0.0), pd.DataFrame()
        )
    return windows, manifests


def test_voice_drop_drops_that_share_of_speech_windows_reproducibly_by_seed():
    speech = [5, 0, 5, 5, 0, 5, 5, 5, 5, 5, 0, 5]  # 9 speech-flagged windows of 12
    windows, manifests = table(speech, ["a"] * 6 + ["b"] * 6)

    def dropped(p, seed):
        kept = WindowFilter(voice_drop=p, seed=seed).select(windows, manifests)
        return sorted(set(zip(windows["file"], windows["window"], strict=True))
                      - set(zip(kept["file"], kept["window"], strict=True)))  # fmt: skip

    assert dropped(0.0, 1) == []
    half = dropped(0.5, 1)
    assert len(half) == 4  # round(0.5 * 9) = 4 (Python rounds half to even)
    assert half == [("a/f.ogg", 0), ("a/f.ogg", 2), ("b/f.ogg", 0), ("b/f.ogg", 3)]  # seed 1
    assert dropped(0.5, 1) == half and dropped(0.5, 2) != half
    assert all(speech[(0 if f[0] == "a" else 6) + s] for f, s in half)  # only speech windows go
    assert len(dropped(1.0, 1)) == 9  # every speech window; a and b keep their non-speech ones
    assert len(dropped(0.7, 1)) == 6


def test_rescue_keeps_the_best_windows_of_a_species_that_would_lose_all():
    keep = [False, False, False, True, False, False]
    score = [0.2, 0.6, 0.4, 0.9, 0.1, 0.3]
    windows, manifests = table([0] * 6, ["a", "a", "a", "b", "b", "c"], keep, score)
    f = WindowFilter(yamnet={"model": "unused", "keep": ["Bird"]}, rescue=2)
    kept = f.select(windows, manifests)
    # a: nothing kept -> its two best-scored (0.6, 0.4); b keeps its one; c: its only window
    assert list(zip(kept["primary_label"], kept["window"], strict=True)) == [
        ("a", 1), ("a", 2), ("b", 0), ("c", 0),
    ]  # fmt: skip
    assert f.rescued == {"a": 2, "c": 1}
    none = WindowFilter(yamnet={"model": "unused", "keep": ["Bird"]}, rescue=0)
    assert none.select(windows, manifests)["primary_label"].tolist() == ["b"]
    report = filter_report(windows, kept, SR, {}, f.rescued).set_index("class")
    assert report.loc["a", ["windows_before", "windows_after", "rescued_windows"]].tolist() == [
        3,
        2,
        2,
    ]
    assert (
        report.loc["all", "seconds_before"] == 30.0 and report.loc["all", "seconds_after"] == 20.0
    )
    assert report.loc["all", "share_removed"] == pytest.approx(1 / 3, abs=1e-4)


def test_yamnet_and_voice_stages_combine_and_speech_is_counted_after_the_keep_list():
    keep = [True, True, False, True]
    windows, manifests = table([5, 5, 5, 0], ["a"] * 4, keep, [0.5] * 4)
    f = WindowFilter(yamnet={"model": "unused", "keep": ["Bird"]}, voice_drop=1.0, seed=0)
    assert f.select(windows, manifests)["window"].tolist() == [3]


def test_bad_settings_are_one_clear_error():
    with pytest.raises(ConfigError, match=r"filter.voice.drop=1.5 must be in \[0, 1\]"):
        WindowFilter(voice_drop=1.5)
    with pytest.raises(ConfigError, match="filter.voice.detector='whisper'"):
        WindowFilter(voice_drop=0.5, speech="whisper")
    with pytest.raises(
        ConfigError, match="filter.voice.detector=yamnet reads YAMNet.*filter.yamnet.enabled=true"
    ):
        WindowFilter(voice_drop=0.5, speech="yamnet")
    with pytest.raises(ConfigError, match="no stage"):
        WindowFilter()
