"""Window cache: log-mel windows of many files in float16 shards, memory-mapped for training.

Layout under `<cache_dir>/<key>/` where `key` hashes the front end and window rule:
    params.json   what the key was made of
    shards/<shard>.npy   float16 [windows, features, frames], windows of its files in order
    shards/<shard>.json  the shard's files, window starts and skipped bad files; written last,
                  so a shard without it is unfinished and rebuilt on resume
A shard's name hashes its files' paths, sizes and modification times, so a changed
file rebuilds only its shard. One `.pt` per clip (the study's layout) means a
file open per read and ~200k inodes; shards keep reads to a page-cache lookup.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from birdclef.data.audio import load_audio
from birdclef.data.windows import clip_window_starts, cut_window, grid_window_starts
from birdclef.errors import AudioError, ConfigError
from birdclef.utils import atomic_path, stable_hash, write_json

log = logging.getLogger(__name__)

WINDOWINGS = ("clip", "grid")  # clip: the study's 5-s rule; grid: soundscape rows 0-5, 5-10, ...
FRONTEND_BATCH = 64  # windows per front-end call; bounds a worker's memory on long files


@dataclass(frozen=True)
class ShardJob:
    name: str
    paths: tuple[str, ...]  # absolute
    keys: tuple[str, ...]  # how the index names each file (e.g. train.csv filename)


def window_starts(n_samples: int, window: int, windowing: str) -> list[int]:
    if windowing == "clip":
        return clip_window_starts(n_samples, window)
    return grid_window_starts(n_samples, window)


def _file_stamp(path: str) -> list:
    try:
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]
    except OSError:
        return [path, None, None]


def _build_shard(job: ShardJob, out_dir: Path, frontend, window: int, windowing: str) -> dict:
    """Decode, window and transform one shard's files; write `<name>.npy` then `<name>.json`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per shard; in-process builds restore the count below
    try:
        return _build_shard_files(job, out_dir, frontend, window, windowing)
    finally:
        torch.set_num_threads(threads)


def _build_shard_files(job: ShardJob, out_dir: Path, frontend, window: int, windowing: str) -> dict:
    sample_rate = frontend.sample_rate
    pieces, files, bad = [], [], []
    for path, key in zip(job.paths, job.keys, strict=True):
        try:
            audio = load_audio(path, sample_rate)
        except AudioError as err:
            bad.append({"file": key, "error": str(err)})
            continue
        starts = window_starts(len(audio), window, windowing)
        waves = np.stack([cut_window(audio, s, window) for s in starts])
        with torch.inference_mode():
            for i in range(0, len(waves), FRONTEND_BATCH):
                feats = frontend(torch.from_numpy(waves[i : i + FRONTEND_BATCH]))
                pieces.append(feats.numpy().astype(np.float16))
        files.append({"file": key, "n_samples": len(audio), "starts": starts})
    array = (
        np.concatenate(pieces)
        if pieces
        else np.zeros((0, *frontend.output_shape(window)), np.float16)
    )
    with atomic_path(out_dir / f"{job.name}.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    meta = {"files": files, "bad": bad, "shape": list(array.shape)}
    write_json(out_dir / f"{job.name}.json", meta)
    return meta


def plan_shards(
    paths: Sequence[str | Path], keys: Sequence[str], groups: Sequence[str], max_files: int
) -> list[ShardJob]:
    """Split files into shards of at most `max_files`, never mixing `groups` (class folders)."""
    frame = pd.DataFrame(
        {"path": [str(Path(p).resolve()) for p in paths], "key": list(keys), "group": list(groups)}
    )
    jobs = []
    for group, part in frame.sort_values(["group", "key"]).groupby("group", sort=True):
        for start in range(0, len(part), max_files):
            chunk = part.iloc[start : start + max_files]
            digest = stable_hash([_file_stamp(p) for p in chunk["path"]])
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(group))[:40]
            jobs.append(
                ShardJob(
                    f"{safe}-{start // max_files:04d}-{digest}",
                    tuple(chunk["path"]),
                    tuple(chunk["key"]),
                )
            )
    return jobs


class WindowCache:
    """Builds (once, resumably, in parallel) and opens the cached windows of a set of files."""

    def __init__(
        self,
        cache_dir: str | Path,
        frontend,
        clip_seconds: float,
        windowing: str = "clip",
        workers: int | None = None,
        max_files_per_shard: int = 64,
    ) -> None:
        if windowing not in WINDOWINGS:
            raise ConfigError(f"windowing={windowing!r} must be one of {WINDOWINGS}.")
        if clip_seconds <= 0:
            raise ConfigError(f"clip_seconds={clip_seconds} must be positive (seconds per window).")
        self.frontend = frontend
        self.window = int(round(clip_seconds * frontend.sample_rate))
        self.windowing = windowing
        self.workers = os.cpu_count() if workers is None else workers
        self.max_files = max_files_per_shard
        self.key = stable_hash(
            {"frontend": frontend.params(), "window": self.window, "windowing": windowing}
        )
        self.dir = Path(cache_dir) / self.key
        self.shard_dir = self.dir / "shards"

    def build(self, paths, keys, groups=None, desc: str = "caching windows") -> CachedWindows:
        """Make sure every file has its windows cached and return them, opened."""
        groups = groups if groups is not None else ["all"] * len(paths)
        jobs = plan_shards(paths, keys, groups, self.max_files)
        todo = [j for j in jobs if not (self.shard_dir / f"{j.name}.json").is_file()]
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            self.dir / "params.json",
            {
                "frontend": self.frontend.params(),
                "window": self.window,
                "windowing": self.windowing,
            },
        )
        if todo:
            log.info(
                "cache %s: building %d of %d shards (%d files)",
                self.dir,
                len(todo),
                len(jobs),
                sum(len(j.paths) for j in todo),
            )
            self._run(todo, desc)
        return CachedWindows.open(self.shard_dir, [j.name for j in jobs])

    def _run(self, jobs: list[ShardJob], desc: str) -> None:
        bar = tqdm(total=sum(len(j.paths) for j in jobs), desc=desc, unit="file", leave=False)
        args = (self.shard_dir, self.frontend, self.window, self.windowing)
        if self.workers and self.workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
                futures = {pool.submit(_build_shard, job, *args): job for job in jobs}
                for future in as_completed(futures):
                    future.result()
                    bar.update(len(futures[future].paths))
        else:
            for job in jobs:
                _build_shard(job, *args)
                bar.update(len(job.paths))
        bar.close()


class CachedWindows:
    """The cached windows of a set of shards: an index frame plus lazily memory-mapped arrays.

    `index` has one row per window: `file` (the key given at build time), `start`
    (sample), `window` (its number within the file), `n_samples` (the file's
    length), `shard` and `row`. Memory maps open lazily per process, so the object
    pickles cheaply into DataLoader workers.
    """

    def __init__(
        self, directory: Path, shard_names: list[str], index: pd.DataFrame, bad: pd.DataFrame
    ):
        self.dir, self.shard_names, self.index, self.bad = directory, shard_names, index, bad
        self._shard = index["shard"].to_numpy()
        self._row = index["row"].to_numpy()
        self._maps: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, directory: Path, shard_names: list[str]) -> CachedWindows:
        rows, bad = [], []
        for shard_id, name in enumerate(shard_names):
            meta = json.loads((directory / f"{name}.json").read_text())
            row = 0
            for entry in meta["files"]:
                for number, start in enumerate(entry["starts"]):
                    rows.append((entry["file"], start, number, entry["n_samples"], shard_id, row))
                    row += 1
            bad.extend(meta["bad"])
        index = pd.DataFrame(rows, columns=["file", "start", "window", "n_samples", "shard", "row"])
        return cls(directory, shard_names, index, pd.DataFrame(bad, columns=["file", "error"]))

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}

    def features(self, i: int) -> np.ndarray:
        """The float16 [features, frames] array of index row `i`."""
        shard, row = int(self._shard[i]), int(self._row[i])
        if shard not in self._maps:
            self._maps[shard] = np.load(self.dir / f"{self.shard_names[shard]}.npy", mmap_mode="r")
        return self._maps[shard][row]

    def write_bad_report(self, path: Path) -> None:
        from birdclef.utils import write_csv

        write_csv(path, self.bad)
