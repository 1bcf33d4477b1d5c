"""Torch datasets of windows cut from cached frames: labelled recordings and scored soundscape rows.

Items are dicts:
    features    float32 [1, features, frames]  front-end output of one window (dB for the mel front ends)
    target      float32 [outputs]   what the loss sees (label rule, + null column)
    truth       float32 [classes]   0/1 presence, the truth for AUC
    primary     int64   []          primary class index (-1 on soundscape rows)
    index       int64   []          the item's position in its dataset (to de-duplicate DDP rows)
    background  float32 [1, features, frames]  a random crop of a train_soundscapes recording
                (training items only, when the augmentation asks for it)
    teacher_features  float32 [1, teacher features, teacher frames]  the same time span in a
                distillation teacher's own front end (training items only, with a teacher)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from birdclef.core.errors import DataError
from birdclef.core.rows import grid_window_starts
from birdclef.data.cache import CachedFrames
from birdclef.data.labels import presence
from birdclef.data.windows import recording_window_starts

NO_PRIMARY = -1  # soundscape rows have no primary label


def frame_scale(student, teacher) -> float:
    """Teacher frames per student frame: front ends or cached frames (`sample_rate`,
    `hop_length`), which may differ in both."""
    return (student.hop_length / student.sample_rate) * (teacher.sample_rate / teacher.hop_length)


def teacher_window(n_frames: int, student, teacher) -> int:
    """The teacher's frames for a student window of `n_frames` frames, rounded to the nearest."""
    return max(1, math.floor(n_frames * frame_scale(student, teacher) + 0.5))


class TeacherFrames:
    """A teacher's cached frames of the same recordings, cut to the student's window span.

    A student window starting at frame `start` begins at `start * hop / sample_rate`
    seconds; the teacher's window starts at the nearest teacher frame to that time
    (halves round up) and lasts the student's window length in teacher frames, rounded
    to the nearest. With the same front end the spans are identical; with BirdNET's 1-s
    hop, a log-mel window is moved by at most half a second (its 3-s chunks already
    reach 1 s either side of the window). `allowed` ([student recordings, teachers], bool;
    cross-fitted teachers) says which teachers may score each recording: items then
    carry it as `teacher_mask`.
    """

    def __init__(
        self, frames: CachedFrames, finish, student: CachedFrames, n_frames: int, allowed=None
    ) -> None:
        missing = [k for k in student.index["file"] if k not in frames.position]
        if missing:
            raise DataError(
                f"the teacher's front end could not read {len(missing)} recording(s) the student "
                f"reads, e.g. {missing[0]}: drop them from train.csv or use another teacher."
            )
        self.frames, self.finish = frames, finish
        self.recording = np.array([frames.position[k] for k in student.index["file"]])
        self.scale = frame_scale(student, frames)
        self.n_frames = teacher_window(n_frames, student, frames)
        self.allowed = None if allowed is None else torch.as_tensor(allowed, dtype=torch.bool)

    def features(self, rec: int, start: int) -> torch.Tensor:
        """The teacher's input for the student's window (recording `rec`, frame `start`)."""
        first = math.floor(start * self.scale + 0.5)
        with torch.no_grad():
            frames = self.frames.window(int(self.recording[rec]), first, self.n_frames)
            return self.finish(frames).unsqueeze(0)


def _random_start(total: int, n: int, limit: int | None) -> int:
    """A uniform start frame for an `n`-frame window inside the first `limit` frames."""
    span = min(total, limit) if limit else total
    return int(torch.randint(max(span - n, 0) + 1, ()))  # seeded per worker by Lightning


def _kept_spans(starts, ends, hop: int, n: int, limit: int | None) -> list[tuple[int, int, int]]:
    """(start frame, low, high) per kept window of one recording, in time order.

    A random crop starts in [low, high]: inside the run of contiguous kept windows
    the window belongs to (at the run's start when it is shorter than the window)
    and, with `limit`, inside the first `limit` frames where the run allows.
    """
    spans = sorted(zip(starts, ends, strict=True))
    runs: list[list[int]] = []
    for a, b in spans:
        if runs and a <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    out, r = [], 0
    for a, _ in spans:
        while a >= runs[r][1]:
            r += 1
        low = int(round(runs[r][0] / hop))
        high = max(low, int(round(runs[r][1] / hop)) - n)
        if limit:
            high = max(low, min(high, limit - n))
        out.append((int(round(a / hop)), low, high))
    return out


class WindowDataset(Dataset):
    """Windows of `n_frames` frames: item i is recording `recording[i]` cut at `start[i]`.

    With `crop="random"` the start is drawn anew at every read, uniformly over the
    recording (or over its first `crop_frames` frames); the items, and so an epoch's
    length and the class balance, stay those of the fixed windows. `finish` is the
    front end's per-window step. With `background` (cached soundscapes), each item
    also carries a random crop of one of them, for background-noise augmentation;
    with `teacher` (`TeacherFrames`), the teacher's input for the same span (and crop).
    With `crop_range` ([items, 2] start frames, a window filter's kept spans), a random
    crop of item i starts uniformly in [low_i, high_i] instead. With `weight` (an array,
    set by the DataModule for `data.pseudo.confidence_weight`) items also carry `weight`,
    the factor on their loss.
    """

    def __init__(
        self, frames: CachedFrames, recording, start, n_frames: int, finish, target, truth, primary,
        crop: str = "fixed", crop_frames: int | None = None, background: CachedFrames | None = None,
        teacher: TeacherFrames | None = None, crop_range=None,
    ) -> None:  # fmt: skip
        self.frames, self.n_frames, self.finish = frames, n_frames, finish
        self.recording, self.start = np.asarray(recording), np.asarray(start)
        self.target, self.truth, self.primary = target, truth, primary
        self.crop, self.crop_frames, self.background = crop, crop_frames, background
        self.teacher = teacher
        self.crop_range = None if crop_range is None else np.asarray(crop_range, dtype=np.int64)
        self.weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.recording)

    def _features(self, frames: CachedFrames, i: int, start: int) -> torch.Tensor:
        with torch.no_grad():
            return self.finish(frames.window(i, start, self.n_frames)).unsqueeze(0)

    def _start(self, i: int, rec: int) -> int:
        """Item i's start frame for this read: fixed, or drawn (random crops)."""
        if self.crop == "random" and self.crop_range is not None:
            low, high = self.crop_range[i]
            return int(low) + int(torch.randint(int(high - low) + 1, ()))
        if self.crop == "random":
            return _random_start(self.frames.n_frames(rec), self.n_frames, self.crop_frames)
        return int(self.start[i])

    def _labels(self, i: int, rec: int, start: int) -> tuple[np.ndarray, np.ndarray, float | None]:
        """Item i's target, truth and loss weight (None: no `weight` key) for a window at
        `start` (fixed per item here)."""
        weight = None if self.weight is None else float(self.weight[i])
        return self.target[i], self.truth[i], weight

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = int(self.recording[i])
        start = self._start(i, rec)
        target, truth, weight = self._labels(i, rec, start)
        item = {
            "features": self._features(self.frames, rec, start),
            "target": torch.tensor(target),
            "truth": torch.tensor(truth),
            "primary": torch.tensor(self.primary[i], dtype=torch.long),
            "index": torch.tensor(i, dtype=torch.long),
        }
        if weight is not None:
            item["weight"] = torch.tensor(weight, dtype=torch.float32)
        if self.teacher is not None:
            item["teacher_features"] = self.teacher.features(rec, start)
            if self.teacher.allowed is not None:
                item["teacher_mask"] = self.teacher.allowed[rec]
        if self.background is not None:
            j = int(torch.randint(len(self.background), ()))
            start = _random_start(self.background.n_frames(j), self.n_frames, None)
            item["background"] = self._features(self.background, j, start)
        return item


def recording_windows(
    frames: CachedFrames, recordings: pd.DataFrame, which: str, rule, classes: list[str], window_samples: int,
    finish, crop: str = "fixed", crop_seconds: float | None = None,
    kept_windows: pd.DataFrame | None = None,
) -> WindowDataset:  # fmt: skip
    """The windows of `recordings` (train.csv's rows, one per recording) by the study's rule.

    `which="all"`: every window of `recording_window_starts`; `"first"`: the first of
    each recording. `window_samples` is the window's length; starts are rounded to the nearest frame.
    With `kept_windows` (a window filter's kept 5-s windows: file, start, end in samples)
    the items are those windows instead, one starting at each (`"first"`: each
    recording's first kept one), and random crops stay inside kept audio (`_kept_spans`).
    The DataModule validates `which`, `crop` and `crop_seconds` before any cache is built.
    """
    meta = recordings.drop_duplicates("filename").set_index("filename")
    hop = frames.hop_length
    crop_frames = (
        None if crop_seconds is None else int(round(crop_seconds * frames.sample_rate / hop))
    )
    kept = None if kept_windows is None else dict(list(kept_windows.groupby("file", sort=False)))
    recording, start, files, ranges = [], [], [], []
    for key in meta.index:
        i = frames.position[key]
        if kept is not None:
            if key not in kept:
                continue
            spans = _kept_spans(
                kept[key]["start"], kept[key]["end"], hop, window_samples // hop, crop_frames
            )
            for s, low, high in spans[:1] if which == "first" else spans:
                recording.append(i)
                start.append(s)
                files.append(key)
                ranges.append((low, high))
            continue
        starts = recording_window_starts(int(frames.index["n_samples"].iat[i]), window_samples)
        for s in starts[:1] if which == "first" else starts:
            recording.append(i)
            start.append(int(round(s / hop)))
            files.append(key)
    meta = meta.loc[files]
    target = rule.encode_all(meta["primary_label"], meta["secondary_labels"], classes)
    truth = presence(meta["primary_label"], meta["secondary_labels"], classes)
    lookup = {c: i for i, c in enumerate(classes)}
    primary = np.array([lookup[p] for p in meta["primary_label"]], dtype=np.int64)
    return WindowDataset(
        frames, recording, start, window_samples // hop, finish, target, truth, primary, crop, crop_frames,
        crop_range=None if kept_windows is None else np.array(ranges, dtype=np.int64).reshape(-1, 2),
    )  # fmt: skip


def soundscape_rows(
    frames: CachedFrames, solution: pd.DataFrame, classes: list[str], outputs: int, window_samples: int,
    finish,
) -> WindowDataset:  # fmt: skip
    """One item per scored row of `solution` (row_id, stem, end, class columns).

    Row `<stem>_<end>` is the `window`-sample window ending at `end` seconds; past the
    recording's end it is padded, so every started window of the grid is a row.
    """
    rate, hop = frames.sample_rate, frames.hop_length
    recording, start, bad = [], [], []
    for row_id, stem, end in zip(
        solution["row_id"], solution["stem"], solution["end"], strict=True
    ):
        first = end * rate - window_samples
        i = frames.position.get(stem)
        grid = (
            ()
            if i is None
            else grid_window_starts(int(frames.index["n_samples"].iat[i]), window_samples, rate)
        )
        if first not in grid:
            bad.append(row_id)
            continue
        recording.append(i)
        start.append(first // hop)
    if bad:
        raise DataError(
            f"soundscape rows {bad[:5]} do not end on the {window_samples / rate:g}-s grid of their audio "
            "or lie past its end; row ids must be <stem>_<end second> of the 5-s rows."
        )
    truth = solution[classes].to_numpy(np.float32)
    target = np.zeros((len(recording), outputs), np.float32)
    return WindowDataset(
        frames, recording, start, window_samples // hop, finish, target, truth,
        np.full(len(recording), NO_PRIMARY),
    )  # fmt: skip
