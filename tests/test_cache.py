import os

import numpy as np
import pytest
import soundfile as sf
import torch

from birdclef.data.audio import load_audio
from birdclef.data.cache import WindowCache
from birdclef.data.frontend import MelFrontend
from birdclef.data.windows import clip_window_starts, cut_window
from tests.conftest import SR, tone, write_wav


def make_files(tmp_path):
    paths = {
        "a/short.wav": write_wav(tmp_path / "audio/a/short.wav", tone(3.0, 800)),
        "a/eight.wav": write_wav(tmp_path / "audio/a/eight.wav", tone(8.0, 1200)),
        "b/long.wav": write_wav(tmp_path / "audio/b/long.wav", tone(12.6, 2000)),
    }
    return paths


def build(tmp_path, paths, workers=0, frontend=None):
    cache = WindowCache(
        tmp_path / "cache",
        frontend or MelFrontend(SR, n_mels=32),
        5,
        workers=workers,
        max_files_per_shard=2,
    )
    keys = list(paths)
    return cache, cache.build(list(paths.values()), keys, [k.split("/")[0] for k in keys])


def test_cache_holds_the_windows_of_the_clip_rule(tmp_path):
    paths = make_files(tmp_path)
    _, windows = build(tmp_path, paths)
    counts = windows.index.groupby("file").size().to_dict()
    assert counts == {"a/short.wav": 1, "a/eight.wav": 2, "b/long.wav": 3}
    assert windows.bad.empty


def test_cached_features_equal_on_the_fly_features(tmp_path):
    paths = make_files(tmp_path)
    frontend = MelFrontend(SR, n_mels=32)
    _, windows = build(tmp_path, paths, frontend=frontend)
    for i, row in windows.index.iterrows():
        audio = load_audio(paths[row["file"]], SR)
        assert row["start"] == clip_window_starts(len(audio), 5 * SR)[row["window"]]
        direct = frontend(torch.from_numpy(cut_window(audio, row["start"], 5 * SR))).numpy()
        cached = windows.features(i).astype(np.float32)
        assert cached.dtype == np.float32 and cached.shape == direct.shape == (32, 313)
        np.testing.assert_allclose(cached, direct, atol=0.06)  # float16 storage of dB values


def test_build_resumes_and_rebuilds_only_changed_shards(tmp_path):
    paths = make_files(tmp_path)
    cache, _ = build(tmp_path, paths)
    shards = sorted(cache.shard_dir.glob("*.json"))
    assert len(shards) == 2  # class folders never share a shard
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    # a run killed before writing one shard's marker leaves only that shard to redo
    victim = next(p for p in shards if p.name.startswith("b-"))
    victim.unlink()
    build(tmp_path, paths)
    assert {
        p.name: p.stat().st_mtime_ns
        for p in cache.shard_dir.glob("*.json")
        if p.name != victim.name
    } == {k: v for k, v in stamps.items() if k != victim.name}
    # changing a file gives its shard a new name; the other shard is reused
    write_wav(paths["a/short.wav"], tone(4.0, 900))
    os.utime(paths["a/short.wav"], ns=(1, 1))
    _, windows = build(tmp_path, paths)
    assert victim.name in {p.name for p in cache.shard_dir.glob("*.json")}
    assert len(windows.index) == 6


def test_bad_files_are_skipped_and_listed(tmp_path):
    paths = make_files(tmp_path)
    (tmp_path / "audio/b/corrupt.ogg").write_bytes(b"not audio at all")
    sf.write(tmp_path / "audio/b/empty.wav", np.zeros(0, np.float32), SR, format="WAV")
    paths["b/corrupt.ogg"] = tmp_path / "audio/b/corrupt.ogg"
    paths["b/empty.wav"] = tmp_path / "audio/b/empty.wav"
    paths["b/missing.ogg"] = tmp_path / "audio/b/missing.ogg"
    _, windows = build(tmp_path, paths)
    assert sorted(windows.bad["file"]) == ["b/corrupt.ogg", "b/empty.wav", "b/missing.ogg"]
    assert set(windows.index["file"]) == {"a/short.wav", "a/eight.wav", "b/long.wav"}


def test_parallel_build_equals_serial(tmp_path):
    paths = make_files(tmp_path)
    _, serial = build(tmp_path / "s", paths, workers=0)
    _, parallel = build(tmp_path / "p", paths, workers=2)
    assert serial.index.drop(columns=["shard", "row"]).equals(
        parallel.index.drop(columns=["shard", "row"])
    )
    for i in range(len(serial.index)):
        np.testing.assert_array_equal(serial.features(i), parallel.features(i))


def test_no_temporary_files_left(tmp_path):
    paths = make_files(tmp_path)
    cache, _ = build(tmp_path, paths)
    assert not [p for p in cache.dir.rglob("*") if ".tmp" in p.name]


def test_bad_windowing(tmp_path):
    from birdclef.errors import ConfigError

    with pytest.raises(ConfigError, match="windowing"):
        WindowCache(tmp_path, MelFrontend(SR), 5, windowing="sliding")
