"""Window manifest: one detector's scores for every 5-s window of every recording, built once.

Layout under `<cache_dir>/windows/<detector>-<key>/`, where `key` hashes
`MANIFEST_FORMAT`, the sample rate and the detector's `params()` (model, thresholds,
keep-list):
    params.json                      what the key was made of
    parts/<group>/<stem>-<hash>.json one recording: its windows' scores, or why it was
                                     skipped; the hash is of the file's path, size and
                                     modification time, so a changed file is re-scored alone
Parts are written atomically, so a killed build resumes with the files not yet done.
Builders take a file lock on the folder (one builds, the others wait and read). The
windows are the study's fixed 5-s windows (`recording_window_starts`), so a training
window of 5 s is exactly one window.
"""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from birdclef.core.cpus import available_cpus
from birdclef.core.errors import AudioError, ConfigError
from birdclef.core.io import stable_hash, write_json
from birdclef.data.audio import load_audio
from birdclef.data.cache import file_stamp
from birdclef.data.curation.detectors import DETECTOR_RATE
from birdclef.data.windows import recording_window_starts

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "windows-v1"  # bump when windowing or the part format changes
WINDOW_SECONDS = 5  # s, the study's window (and the scored row)
WINDOW_COLUMNS = ["file", "window", "start", "end", "n_samples"]
FILES_PER_CALL = 32  # recordings a worker scores together (Silero runs them as one batch)


def window_spans(n_samples: int, sample_rate: int) -> list[tuple[int, int]]:
    """(start, end) samples of a recording's 5-s windows: the study's fixed windows."""
    window_samples = WINDOW_SECONDS * sample_rate
    return [
        (s, min(s + window_samples, n_samples))
        for s in recording_window_starts(n_samples, window_samples)
    ]


def _safe(text: str, length: int = 40) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:length]


@dataclass
class Manifest:
    """A detector's scores: `windows` (one row per window) and `bad` (file, error)."""

    windows: pd.DataFrame
    bad: pd.DataFrame
    scored: int = 0  # windows scored by this build (0 when everything was already done)
    seconds: float = 0.0  # wall time of this build's scoring


_WORKER: dict = {}


def _init_worker(detector) -> None:
    import torch

    torch.set_num_threads(1)
    detector.load()
    _WORKER["detector"] = detector


def score_files(jobs: list[tuple[str, str, Path]], sample_rate: int, detector=None) -> int:
    """Score the windows of each (path, key, part) recording and write its part.

    A detector with `score_many` (Silero) scores the group's recordings together; a file
    that fails to decode gets a part with its error. Returns the windows scored.
    """
    import torch
    import torchaudio.functional as AF

    detector = detector if detector is not None else _WORKER["detector"]
    scale = DETECTOR_RATE / sample_rate
    parts, lows, spans = [], [], []
    for path, key, out in jobs:
        part = {"file": key, "path": path, "n_samples": 0, "windows": [], "error": None}
        try:
            audio = load_audio(path, sample_rate)
        except AudioError as err:
            part["error"] = str(err)
            write_json(out, part)
            continue
        part["n_samples"] = len(audio)
        full = window_spans(len(audio), sample_rate)
        lows.append(AF.resample(torch.from_numpy(audio), sample_rate, DETECTOR_RATE).numpy())
        spans.append([(round(a * scale), round(b * scale)) for a, b in full])
        parts.append((out, part, full))
    together = detector.score_many(lows, spans) if hasattr(detector, "score_many") else None
    done = 0
    for k, (out, part, full) in enumerate(parts):  # each part is written once it is scored
        windows = together[k] if together is not None else detector.score(lows[k], spans[k])
        part["windows"] = [
            {"window": i, "start": a, "end": b, **s}
            for i, ((a, b), s) in enumerate(zip(full, windows, strict=True))
        ]
        write_json(out, part)
        done += len(part["windows"])
    return done


def _groups(jobs: list, size: int) -> list[list]:
    """`jobs` in groups of `size`, by file size, so a group's recordings are of like length."""
    ordered = sorted(
        jobs, key=lambda job: Path(job[0]).stat().st_size if Path(job[0]).is_file() else 0
    )
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


class WindowManifest:
    """Builds (once, resumably, in parallel) and reads one detector's window manifest."""

    def __init__(
        self, cache_dir: str | Path, detector, sample_rate: int, workers: int | None = None
    ):
        if workers is not None and workers < 0:
            raise ConfigError(f"data.cache.workers={workers} must be >= 0 (or null for all CPUs).")
        self.detector, self.sample_rate = detector, sample_rate
        self.workers = available_cpus() if workers is None else workers
        self.params = {
            "format": MANIFEST_FORMAT, "sample_rate": sample_rate,
            "window_seconds": WINDOW_SECONDS, "detector": detector.params(),
        }  # fmt: skip
        self.dir = Path(cache_dir) / "windows" / f"{detector.name}-{stable_hash(self.params)}"

    def part_path(self, path: str, group: str) -> Path:
        return (
            self.dir
            / "parts"
            / _safe(group)
            / f"{_safe(Path(path).stem)}-{stable_hash(file_stamp(path))}.json"
        )

    def build(self, paths, keys, groups=None, desc: str | None = None) -> Manifest:
        """Score every file without a part yet, then read all parts of `paths`."""
        paths = [str(Path(p).resolve()) for p in paths]
        groups = groups if groups is not None else ["all"] * len(paths)
        parts = [self.part_path(p, g) for p, g in zip(paths, groups, strict=True)]
        self.dir.mkdir(parents=True, exist_ok=True)
        scored, seconds = 0, 0.0
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                todo = [i for i, part in enumerate(parts) if not part.is_file()]
                if todo:
                    write_json(self.dir / "params.json", self.params)
                    log.info(
                        "windows %s: scoring %d of %d files with %s",
                        self.dir, len(todo), len(parts), self.detector.name,
                    )  # fmt: skip
                    began = time.perf_counter()
                    scored = self._run([(paths[i], keys[i], parts[i]) for i in todo], desc)
                    seconds = time.perf_counter() - began
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return self._read(parts, scored, seconds)

    def _run(self, jobs: list[tuple[str, str, Path]], desc: str | None) -> int:
        bar = tqdm(
            total=len(jobs), desc=desc or f"scoring windows ({self.detector.name})",
            unit="file", leave=False,
        )  # fmt: skip
        done = 0
        groups = _groups(jobs, FILES_PER_CALL)
        if self.workers > 1 and len(groups) > 1:
            # spawn, not fork: TensorFlow and onnxruntime do not survive a fork of a parent using them
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                min(self.workers, len(groups)), mp_context=context,
                initializer=_init_worker, initargs=(self.detector,),
            ) as pool:  # fmt: skip
                futures = {
                    pool.submit(score_files, group, self.sample_rate): len(group)
                    for group in groups
                }
                for future in as_completed(futures):
                    done += future.result()
                    bar.update(futures[future])
        else:
            self.detector.load()
            for group in groups:
                done += score_files(group, self.sample_rate, self.detector)
                bar.update(len(group))
        bar.close()
        return done

    def _read(self, parts: list[Path], scored: int, seconds: float) -> Manifest:
        rows, bad = [], []
        for part in parts:
            data = json.loads(part.read_text())
            if data["error"] is not None:
                bad.append({"file": data["file"], "error": data["error"]})
            for s in data["windows"]:
                rows.append({"file": data["file"], "n_samples": data["n_samples"], **s})
        windows = pd.DataFrame(rows)
        if windows.empty:
            windows = pd.DataFrame(columns=WINDOW_COLUMNS)
        windows = windows[WINDOW_COLUMNS + [c for c in windows if c not in WINDOW_COLUMNS]]
        return Manifest(windows, pd.DataFrame(bad, columns=["file", "error"]), scored, seconds)


def seconds_of(windows: pd.DataFrame, sample_rate: int) -> float:
    """Seconds covered by `windows` (file, start, end in samples), overlaps counted once."""
    if windows.empty:
        return 0.0
    ordered = windows.sort_values(["file", "start"])
    reach = ordered.groupby("file", sort=False)["end"].cummax()
    before = reach.groupby(ordered["file"], sort=False).shift(1).fillna(-1).to_numpy()
    start, end = ordered["start"].to_numpy(), ordered["end"].to_numpy()
    covered = np.clip(end - np.maximum(start, before), 0, None)
    return float(covered.sum() / sample_rate)
