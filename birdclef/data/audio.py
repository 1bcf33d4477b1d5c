"""Decode audio files to mono float32 at the project sample rate, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from birdclef.core.errors import AudioError
from birdclef.inference.resample import resample


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read `path` as a mono float32 array at `sample_rate` Hz.

    Multichannel audio is averaged to mono and other rates are resampled, so the
    caller always gets the same kind of array. Raises AudioError (naming the
    file) for a missing, undecodable, empty or non-finite file instead of
    returning something silently wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for corrupt files
        raise AudioError(f"cannot decode {path}: {err}. Re-encode or remove the file.") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path} holds no samples (zero-length audio).")
    if not np.isfinite(data).all():
        raise AudioError(f"{path} holds NaN or infinite samples.")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono = resample(mono, file_rate, sample_rate)  # the submission's resampler, same samples
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_seconds(path: str | os.PathLike) -> float:
    """Duration of `path` in seconds from its header, without decoding."""
    try:
        info = sf.info(path)
    except Exception as err:
        raise AudioError(f"cannot read the header of {path}: {err}") from err
    return info.frames / info.samplerate


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as Ogg Vorbis (or by extension), atomically and in blocks.

    libsndfile's Vorbis encoder can crash on one very large write, so long
    signals go out in one-minute blocks.
    """
    from birdclef.core.io import atomic_path

    path = Path(path)
    block = 60 * sample_rate
    with atomic_path(path, suffix=path.suffix) as tmp:
        fmt = {".ogg": ("OGG", "VORBIS"), ".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_16")}
        fmt_name, subtype = fmt.get(path.suffix.lower(), ("OGG", "VORBIS"))
        with sf.SoundFile(tmp, "w", sample_rate, 1, format=fmt_name, subtype=subtype) as out:
            for start in range(0, len(audio), block):
                out.write(np.clip(audio[start : start + block], -1.0, 1.0).astype(np.float32))
