"""Frame cache: each recording's feature frames, stored once in float16 shards, memory-mapped.

Windows of any length are cut at any frame offset when a batch is read, so random
crops, longer windows and a new `window_seconds` need no rebuild. Layout under
`<cache_dir>/<key>/`, where `key` hashes `CACHE_FORMAT` and the front end's
`frame_params()` (not the window length):
    params.json          what the key was made of
    shards/<name>.npy    float16 [frames, features]: its recordings' frames, one after another
    shards/<name>.json   the shard's recordings (frame offset, frame count, samples) and
                         the bad files it skipped; written last, so a shard without it is
                         unfinished and rebuilt
A recording's shard is fixed by a hash of its key within its group (class folder), so
adding recordings to a class rebuilds only the shards they fall in; a shard's name
hashes its members' paths, sizes and modification times, so a changed file rebuilds
only its shard. Builders take a file lock on the cache folder: under DDP or in a sweep
one process builds while the others wait, then all open the same shards.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from birdclef.core.cpus import available_cpus
from birdclef.core.errors import AudioError, ConfigError, DataError
from birdclef.core.io import atomic_path, stable_hash, write_json
from birdclef.data.audio import audio_seconds, load_audio

log = logging.getLogger(__name__)

# Bump when decoding, resampling, framing or the shard format changes: old features are
# then never reused, whatever the front-end parameters say.
CACHE_FORMAT = "frames-v2"
SHARD_BUCKETS = 8  # shards per group (class folder); fixed, so adding files moves no other file


@dataclass(frozen=True)
class ShardJob:
    name: str
    paths: tuple[str, ...]  # absolute
    keys: tuple[str, ...]  # how the index names each file (e.g. train.csv filename)


def file_stamp(path: str) -> list:
    """[path, size, mtime_ns] of a file ([path, None, None] if unreadable): what keys its results."""
    try:
        st = Path(path).stat()
        return [path, st.st_size, st.st_mtime_ns]
    except OSError:
        return [path, None, None]


def _bucket(key: str, buckets: int) -> int:
    return int(stable_hash(key), 16) % buckets


def plan_shards(
    paths: Sequence[str | Path], keys: Sequence[str], groups: Sequence[str], buckets: int
) -> list[ShardJob]:
    """Split files into shards by (group, hash of the key mod `buckets`), never mixing groups."""
    table = pd.DataFrame(
        {"path": [str(Path(p).resolve()) for p in paths], "key": list(keys), "group": list(groups)}
    )
    table["bucket"] = [_bucket(k, buckets) for k in table["key"]]
    jobs = []
    for (group, bucket), part in table.sort_values("key").groupby(["group", "bucket"], sort=True):
        digest = stable_hash([file_stamp(p) for p in part["path"]])
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(group))[:40]
        jobs.append(
            ShardJob(f"{safe}-{bucket:02d}-{digest}", tuple(part["path"]), tuple(part["key"]))
        )
    return jobs


def _build_shard(job: ShardJob, out_dir: Path, frontend) -> dict:
    """Decode and transform one shard's files; write `<name>.npy` then `<name>.json`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per shard; in-process builds restore the count below
    try:
        pieces, files, bad, offset = [], [], [], 0
        for path, key in zip(job.paths, job.keys, strict=True):
            try:
                audio = load_audio(path, frontend.sample_rate)
                frames = frontend.frames(audio).numpy()
            except AudioError as err:
                bad.append({"file": key, "error": str(err)})
                continue
            pieces.append(frames.astype(np.float16))
            files.append(
                {"file": key, "n_samples": len(audio), "offset": offset, "frames": len(frames)}
            )
            offset += len(frames)
        array = np.concatenate(pieces) if pieces else np.zeros((0, frontend.n_features), np.float16)
        with atomic_path(out_dir / f"{job.name}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)
        meta = {"files": files, "bad": bad, "shape": list(array.shape)}
        write_json(out_dir / f"{job.name}.json", meta)
        return meta
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class CacheSpec:
    """`data.cache`: where the frame caches live and how many processes build them."""

    dir: str = "data/cache"
    workers: int | None = None  # processes building a cache; None = the CPUs this job may use


DISK_MARGIN = 1.05  # the shards' size estimate times this must fit on the disk before a build


class FrameCache:
    """Builds (once, resumably, in parallel) and opens the cached frames of a set of files."""

    def __init__(
        self,
        cache_dir: str | Path,
        frontend,
        workers: int | None = None,
        buckets: int = SHARD_BUCKETS,
    ) -> None:
        if workers is not None and workers < 0:
            raise ConfigError(f"data.cache.workers={workers} must be >= 0 (or null for all CPUs).")
        self.frontend = frontend
        self.workers = available_cpus() if workers is None else workers
        self.buckets = buckets
        self.params = {"format": CACHE_FORMAT, "frontend": frontend.frame_params()}
        self.key = stable_hash(self.params)
        self.dir = Path(cache_dir) / self.key
        self.shard_dir = self.dir / "shards"

    def build(self, paths, keys, groups=None, desc: str = "caching frames") -> CachedFrames:
        """Make sure every file has its frames cached and return them, opened."""
        groups = groups if groups is not None else ["all"] * len(paths)
        jobs = plan_shards(paths, keys, groups, self.buckets)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another builder of this cache finishes first
            try:
                todo = [j for j in jobs if not (self.shard_dir / f"{j.name}.json").is_file()]
                if todo:
                    self.check_disk(todo)
                    write_json(self.dir / "params.json", self.params)
                    log.info(
                        "cache %s: building %d of %d shards (%d files)",
                        self.dir, len(todo), len(jobs), sum(len(j.paths) for j in todo),
                    )  # fmt: skip
                    self._run(todo, desc)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return CachedFrames.open(self.shard_dir, [j.name for j in jobs], self.frontend)

    def verify(
        self, paths, keys, groups=None, count: int = 8, seed: int = 0
    ) -> tuple[int, list[str]]:
        """Rebuild `count` of the cache's shards (seeded draw) in a scratch folder and compare
        them with the cached ones, frame for frame: (shards checked, names of those that differ).

        For a cache that a killed build resumed, or that sits on a shared file system."""
        groups = groups if groups is not None else ["all"] * len(paths)
        jobs = plan_shards(paths, keys, groups, self.buckets)
        picked = np.random.default_rng(seed).permutation(len(jobs))[:count]
        differ = []
        with tempfile.TemporaryDirectory(dir=self.dir) as scratch:
            for i in picked:
                job = jobs[int(i)]
                _build_shard(job, Path(scratch), self.frontend)
                fresh = np.load(Path(scratch) / f"{job.name}.npy")
                cached_file = self.shard_dir / f"{job.name}.npy"
                cached = np.load(cached_file) if cached_file.is_file() else None
                if cached is None or not np.array_equal(fresh, cached):
                    differ.append(job.name)
        return len(picked), differ

    def needed_bytes(self, jobs: Sequence[ShardJob]) -> int:
        """Bytes the shards of `jobs` will take (float16 frames, from the files' headers;
        an unreadable file counts 0: the build lists it as bad)."""
        frames = 0
        for job in jobs:
            for path in job.paths:
                try:
                    samples = int(audio_seconds(path) * self.frontend.sample_rate)
                except AudioError:
                    continue
                frames += 1 + samples // int(self.frontend.hop_length)
        return frames * int(self.frontend.n_features) * np.dtype(np.float16).itemsize

    def check_disk(self, jobs: Sequence[ShardJob]) -> None:
        """Refuse to start a build whose shards cannot fit on the cache's disk."""
        need, free = self.needed_bytes(jobs), shutil.disk_usage(self.shard_dir).free
        log.info("cache %s: %.2f GB to write, %.1f GB free", self.dir, need / 1e9, free / 1e9)
        if need * DISK_MARGIN > free:
            raise DataError(
                f"the frame cache {self.dir} needs about {need / 1e9:.1f} GB for "
                f"{sum(len(j.paths) for j in jobs)} recordings, and its disk has "
                f"{free / 1e9:.1f} GB free: free some space or set data.cache.dir to a disk "
                "with room."
            )

    def _run(self, jobs: list[ShardJob], desc: str) -> None:
        bar = tqdm(total=sum(len(j.paths) for j in jobs), desc=desc, unit="file", leave=False)
        if self.workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
                futures = {
                    pool.submit(_build_shard, job, self.shard_dir, self.frontend): job
                    for job in jobs
                }
                for future in as_completed(futures):
                    future.result()
                    bar.update(len(futures[future].paths))
        else:
            for job in jobs:
                _build_shard(job, self.shard_dir, self.frontend)
                bar.update(len(job.paths))
        bar.close()


class CachedFrames:
    """The cached frames of a set of shards: a per-recording index plus lazy memory maps.

    `index` has one row per recording: `file` (the key given at build time),
    `n_samples`, `frames`, `shard` and `offset` (its first frame in the shard);
    `position` maps a key to its row. `window(i, start, n)` cuts `n` frames (a float32
    tensor [features, n]) from
    recording `i` at frame `start`, padding past its end with the front end's
    silence. Memory maps open lazily per process, so the object pickles cheaply
    into DataLoader workers.
    """

    def __init__(
        self,
        directory: Path,
        shard_names: list[str],
        index: pd.DataFrame,
        bad: pd.DataFrame,
        frontend,
    ):
        self.dir, self.shard_names, self.index, self.bad = directory, shard_names, index, bad
        self.sample_rate, self.hop_length = frontend.sample_rate, frontend.hop_length
        self.pad_value = frontend.pad_value
        self.position = {key: i for i, key in enumerate(index["file"])}
        self._shard = index["shard"].to_numpy()
        self._offset = index["offset"].to_numpy()
        self._frames = index["frames"].to_numpy()
        self._maps: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, directory: Path, shard_names: list[str], frontend) -> CachedFrames:
        rows, bad = [], []
        for shard_id, name in enumerate(shard_names):
            meta = json.loads((directory / f"{name}.json").read_text())
            rows += [
                (f["file"], f["n_samples"], f["frames"], shard_id, f["offset"])
                for f in meta["files"]
            ]
            bad.extend(meta["bad"])
        index = pd.DataFrame(rows, columns=["file", "n_samples", "frames", "shard", "offset"])
        bad = pd.DataFrame(bad, columns=["file", "error"])
        return cls(directory, shard_names, index, bad, frontend)

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}

    def __len__(self) -> int:
        return len(self.index)

    def _map(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            # copy-on-write: torch may view the pages without a copy (nothing writes to them)
            self._maps[shard] = np.load(self.dir / f"{self.shard_names[shard]}.npy", mmap_mode="c")
        return self._maps[shard]

    def n_frames(self, i: int) -> int:
        return int(self._frames[i])

    def window(self, i: int, start: int, n: int) -> torch.Tensor:
        """Frames [start, start + n) of recording `i` as float32 [features, n]."""
        total, offset = int(self._frames[i]), int(self._offset[i])
        stop = max(min(start + n, total), start)
        # torch widens the float16 rows straight from the map: numpy's float16 cast is ~5x slower
        piece = torch.from_numpy(self._map(int(self._shard[i]))[offset + start : offset + stop])
        piece = piece.float().T
        if stop - start == n:
            return piece
        out = torch.full((piece.shape[0], n), self.pad_value, dtype=torch.float32)
        out[:, : stop - start] = piece
        return out
