import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from birdclef.core.errors import ConfigError, DataError
from birdclef.data import cache as cache_module
from birdclef.data.audio import load_audio
from birdclef.data.cache import FrameCache, plan_shards
from birdclef.data.frontend import MelFrontend, MfccFrontend
from birdclef.data.windows import cut_window, recording_window_starts
from tests.conftest import ROOT, SR, tone, write_wav

HOP = 500
FRAMES_5S = 5 * SR // HOP  # 320


def make_files(tmp_path):
    return {
        "a/short.wav": write_wav(tmp_path / "audio/a/short.wav", tone(3.0, 800)),
        "a/eight.wav": write_wav(tmp_path / "audio/a/eight.wav", tone(8.0, 1200)),
        "b/long.wav": write_wav(tmp_path / "audio/b/long.wav", tone(12.6, 2000)),
    }


def build(tmp_path, paths, workers=0, frontend=None, buckets=2):
    cache = FrameCache(
        tmp_path / "cache", frontend or MelFrontend(SR, n_mels=32), workers=workers, buckets=buckets
    )
    keys = list(paths)
    return cache, cache.build(list(paths.values()), keys, [k.split("/")[0] for k in keys])


def test_cache_holds_every_frame_of_each_recording(tmp_path):
    paths = make_files(tmp_path)
    _, frames = build(tmp_path, paths)
    got = dict(zip(frames.index["file"], frames.index["frames"], strict=True))
    assert got == {
        k: 1 + int(s * SR) // HOP
        for k, s in [("a/short.wav", 3), ("a/eight.wav", 8), ("b/long.wav", 12.6)]
    }
    assert frames.bad.empty


def test_the_size_estimate_is_the_shards_size_and_a_full_disk_is_refused_before_a_build(
    tmp_path, monkeypatch
):
    paths = make_files(tmp_path)
    cache, _ = build(tmp_path, paths)
    jobs = plan_shards(list(paths.values()), list(paths), [k.split("/")[0] for k in paths], 2)
    written = sum(np.load(p, mmap_mode="r").nbytes for p in cache.shard_dir.glob("*.npy"))
    assert cache.needed_bytes(jobs) == written
    free = written  # under the estimate with its margin: refused, nothing written
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: type("U", (), {"free": free}))
    with pytest.raises(DataError, match=r"needs about .* GB for 3 recordings.*data.cache.dir"):
        build(tmp_path / "other", paths)
    assert not list((tmp_path / "other").rglob("*.npy"))


def test_windows_cut_from_frames_equal_on_the_fly_features(tmp_path):
    """The study's fixed windows, cut at read time, match transforming each window alone.

    Only the two frames at a window's edges may differ: there the whole-recording STFT
    sees the neighbouring audio where a lone window sees reflect padding.
    """
    paths = make_files(tmp_path)
    frontend = MelFrontend(SR, n_mels=32)
    _, frames = build(tmp_path, paths, frontend=frontend)
    for key, path in paths.items():
        audio = load_audio(path, SR)
        i = frames.position[key]
        for start in recording_window_starts(len(audio), 5 * SR):
            assert start % HOP == 0 or key == "b/long.wav"
            cut = frontend.finish(frames.window(i, round(start / HOP), FRAMES_5S))
            direct = frontend(torch.from_numpy(cut_window(audio, start, 5 * SR)))
            assert cut.shape == direct.shape == (32, FRAMES_5S)
            if start % HOP == 0:
                inner = (
                    slice(3, -3)
                    if len(audio) >= start + 5 * SR
                    else slice(3, len(audio) // HOP - 3)
                )
                np.testing.assert_allclose(cut[:, inner], direct[:, inner], atol=0.06)  # float16 dB


def test_window_past_the_end_is_padded_with_silence(tmp_path):
    paths = make_files(tmp_path)
    frontend = MelFrontend(SR, n_mels=32, top_db=None)
    _, frames = build(tmp_path, paths, frontend=frontend)
    i = frames.position["a/short.wav"]
    window = frames.window(i, 0, FRAMES_5S)
    assert window.shape == (32, FRAMES_5S)
    assert (window[:, frames.n_frames(i) :] == frontend.pad_value).all()
    assert (window[:, : frames.n_frames(i) - 3].amax(dim=0) > 0).all()  # the tone is heard


def test_mfcc_shares_the_mel_frames(tmp_path):
    mel = FrameCache(tmp_path, MelFrontend(SR, n_mels=32))
    mfcc = FrameCache(tmp_path, MfccFrontend(SR, n_mfcc=13, n_mels=32, top_db=60))
    assert mel.key == mfcc.key  # top_db and the DCT are per-window steps
    assert FrameCache(tmp_path, MelFrontend(SR, n_mels=64)).key != mel.key


def test_cache_key_names_the_format_version(tmp_path, monkeypatch):
    before = FrameCache(tmp_path, MelFrontend(SR)).key
    monkeypatch.setattr(cache_module, "CACHE_FORMAT", "frames-v999")
    assert FrameCache(tmp_path, MelFrontend(SR)).key != before


def test_adding_a_file_rebuilds_only_its_shard(tmp_path):
    keys = [f"a/{i:02d}.wav" for i in range(12)]
    before = {j.name for j in plan_shards(keys, keys, ["a"] * 12, buckets=4)}
    after = {j.name for j in plan_shards([*keys, "a/new.wav"], [*keys, "a/new.wav"], ["a"] * 13, 4)}
    assert len(before) == 4 and len(after - before) == 1 and len(before - after) == 1


def test_build_resumes_and_rebuilds_only_changed_shards(tmp_path):
    paths = make_files(tmp_path)
    cache, _ = build(tmp_path, paths, buckets=1)
    shards = sorted(cache.shard_dir.glob("*.json"))
    assert len(shards) == 2  # class folders never share a shard
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    # a run killed before writing one shard's marker leaves only that shard to redo
    victim = next(p for p in shards if p.name.startswith("b-"))
    victim.unlink()
    build(tmp_path, paths, buckets=1)
    assert {
        p.name: p.stat().st_mtime_ns
        for p in cache.shard_dir.glob("*.json")
        if p.name != victim.name
    } == {k: v for k, v in stamps.items() if k != victim.name}
    # changing a file gives its shard a new name; the other shard is reused
    write_wav(paths["a/short.wav"], tone(4.0, 900))
    os.utime(paths["a/short.wav"], ns=(1, 1))
    _, frames = build(tmp_path, paths, buckets=1)
    assert victim.name in {p.name for p in cache.shard_dir.glob("*.json")}
    assert frames.n_frames(frames.position["a/short.wav"]) == 1 + 4 * SR // HOP


def test_bad_files_are_skipped_and_listed(tmp_path):
    paths = make_files(tmp_path)
    (tmp_path / "audio/b/corrupt.ogg").write_bytes(b"not audio at all")
    sf.write(tmp_path / "audio/b/empty.wav", np.zeros(0, np.float32), SR, format="WAV")
    paths["b/corrupt.ogg"] = tmp_path / "audio/b/corrupt.ogg"
    paths["b/empty.wav"] = tmp_path / "audio/b/empty.wav"
    paths["b/missing.ogg"] = tmp_path / "audio/b/missing.ogg"
    _, frames = build(tmp_path, paths)
    assert sorted(frames.bad["file"]) == ["b/corrupt.ogg", "b/empty.wav", "b/missing.ogg"]
    assert set(frames.index["file"]) == {"a/short.wav", "a/eight.wav", "b/long.wav"}


def test_parallel_build_equals_serial(tmp_path):
    paths = make_files(tmp_path)
    _, serial = build(tmp_path / "s", paths, workers=0)
    _, parallel = build(tmp_path / "p", paths, workers=2)
    for key in paths:
        i, j = serial.position[key], parallel.position[key]
        assert torch.equal(serial.window(i, 0, 400), parallel.window(j, 0, 400))


BUILD_SCRIPT = """
import sys
from pathlib import Path
from birdclef.data.cache import FrameCache
from birdclef.data.frontend import MelFrontend
root = Path(sys.argv[1])
paths = sorted((root / "audio").rglob("*.wav"))
keys = [str(p.relative_to(root / "audio")) for p in paths]
frames = FrameCache(root / "cache", MelFrontend(32000, n_mels=32), workers=0).build(
    paths, keys, [k.split("/")[0] for k in keys])
print(sorted(zip(frames.index["file"], frames.index["frames"])))
"""


def test_two_processes_building_one_cache_at_once(tmp_path):
    make_files(tmp_path)
    procs = [
        subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(tmp_path)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0] and "a/eight.wav" in outs[0][0]
    assert (
        len(list((tmp_path / "cache").rglob("*.npy")))
        == len(list((tmp_path / "cache").rglob("*.json"))) - 1
    )
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]


def test_bad_worker_count(tmp_path):
    with pytest.raises(ConfigError, match="data.cache.workers=-1"):
        FrameCache(tmp_path, MelFrontend(SR), workers=-1)
