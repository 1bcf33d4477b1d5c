"""Where windows lie in a recording: the study's 5-second rule and the soundscape row grid, in samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdclef.core.errors import ConfigError

CROPS = ("fixed", "random")
WINDOW_CHOICES = ("first", "all")

# the scored row grid lives with the submission code, which must not import the data layer


def recording_window_starts(n_samples: int, window_samples: int) -> list[int]:
    """Start samples of the fixed windows cut from a labelled recording.

    The rule from the study, for `window` = 5 s:
    - a recording shorter than one window gives one window at 0, zero-padded;
    - otherwise whole windows are taken from the start (0-5, 5-10, ...);
    - after them, a leftover of at least half a window (2.5 s) gives one more
      window aligned to the recording's end; a shorter leftover is dropped.

    So 3 s -> [0-5 padded], 8 s -> [0-5, 3-8], 12.4 s -> [0-5, 5-10],
    12.6 s -> [0-5, 5-10, 7.6-12.6].
    """
    if window_samples <= 0:
        raise ValueError(f"window_samples must be positive, got {window_samples}")
    if n_samples <= window_samples:
        return [0]
    whole = n_samples // window_samples
    starts = [i * window_samples for i in range(whole)]
    leftover = n_samples - whole * window_samples
    if 2 * leftover >= window_samples:
        starts.append(n_samples - window_samples)
    return starts


def cut_window(audio: np.ndarray, start: int, window_samples: int) -> np.ndarray:
    """`audio[start:start+window]`, zero-padded at the end to exactly `window` samples."""
    piece = audio[max(start, 0) : start + window_samples]
    if len(piece) == window_samples:
        return piece
    out = np.zeros(window_samples, dtype=audio.dtype)
    out[: len(piece)] = piece
    return out


@dataclass(frozen=True)
class WindowSpec:
    """`data.windows`: how long a training window is, which windows of a recording train and
    validate, and where a window starts each time it is drawn."""

    seconds: float = 5.0  # s, one training window (scored rows are always 5 s)
    train: str = (
        "all"  # all: every window of each recording (the study's 5-s rule); first: its first
    )
    val: str = "all"  # windows of validation recordings
    crop: str = "fixed"  # fixed: the rule's windows; random: a random start each time one is drawn
    crop_seconds: float | None = None  # s, random crops start inside the first crop_seconds

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("data.windows.train", self.train, WINDOW_CHOICES),
            ("data.windows.val", self.val, WINDOW_CHOICES),
            ("data.windows.crop", self.crop, CROPS),
        ):
            if value not in choices:
                raise ConfigError(f"{name}={value!r} must be one of {choices}.")
        if self.crop_seconds is not None and self.crop_seconds <= 0:
            raise ConfigError(
                f"data.windows.crop_seconds={self.crop_seconds} must be positive, or null for the "
                "whole recording."
            )

    def samples(self, frontend) -> int:
        """Samples per window at the front end's rate; refuses a window shorter than one frame."""
        samples = int(round(self.seconds * frontend.sample_rate))
        if samples < frontend.hop_length:
            raise ConfigError(
                f"window_seconds={self.seconds} must be positive and hold at least one frame "
                "(seconds per training window)."
            )
        return samples
