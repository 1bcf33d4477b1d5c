"""File characteristics read from audio headers, never by decoding: length, rate, channels, codec, bitrate."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

HEADER_COLUMNS = (
    "path", "seconds", "sample_rate", "channels", "format", "subtype", "bytes", "kbps", "error",
)  # fmt: skip
CHUNK = 64  # files per task handed to a thread: amortises the pool's overhead on fast disks


def read_header(path: str | os.PathLike) -> dict:
    """One file's header as a row of HEADER_COLUMNS; an unreadable file gets its `error` set.

    The bitrate is the file's average (bytes * 8 / duration), which is what a
    variable-bitrate Vorbis stream has; its nominal rate is not in every header.
    """
    path = Path(path)
    row = dict.fromkeys(HEADER_COLUMNS)
    row.update(path=str(path), error="")
    try:
        info = sf.info(str(path))
        size = path.stat().st_size
    except Exception as err:  # soundfile raises several types; the report lists the file instead
        row["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
        return row
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    row.update(
        seconds=seconds, sample_rate=int(info.samplerate), channels=int(info.channels),
        format=info.format, subtype=info.subtype, bytes=int(size),
        kbps=size * 8 / seconds / 1000 if seconds > 0 else float("nan"),
    )  # fmt: skip
    return row


def _read_chunk(paths: Sequence) -> list[dict]:
    return [read_header(p) for p in paths]


def read_headers(paths: Sequence, workers: int = 1, desc: str = "headers") -> pd.DataFrame:
    """Headers of `paths` in their order, read by `workers` threads with a progress bar.

    Threads suffice: libsndfile is called through cffi, which releases the GIL, and
    a header read is a few small reads (Ogg: the first and the last page).
    """
    paths = list(paths)
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    rows: list[dict] = []
    with tqdm(total=len(paths), desc=desc, unit="file", leave=False) as bar:
        if workers > 1 and len(chunks) > 1:
            with ThreadPoolExecutor(workers) as pool:
                for part in pool.map(_read_chunk, chunks):
                    rows.extend(part)
                    bar.update(len(part))
        else:
            for chunk in chunks:
                rows.extend(_read_chunk(chunk))
                bar.update(len(chunk))
    headers = pd.DataFrame(rows, columns=list(HEADER_COLUMNS))
    return headers.astype({"seconds": float, "kbps": float})


def characteristics(headers: pd.DataFrame) -> pd.DataFrame:
    """Files per (sample rate, channels, format, subtype), with their average bitrate range."""
    ok = headers[headers["error"] == ""]
    if ok.empty:
        return pd.DataFrame(
            columns=["sample_rate", "channels", "format", "subtype", "files", "kbps_median",
                     "kbps_min", "kbps_max"]
        )  # fmt: skip
    keys = ["sample_rate", "channels", "format", "subtype"]
    table = ok.groupby(keys, dropna=False)["kbps"].agg(
        files="size", kbps_median="median", kbps_min="min", kbps_max="max"
    )
    return table.reset_index().sort_values("files", ascending=False, ignore_index=True)
