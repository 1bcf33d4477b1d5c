"""Matplotlib helpers shared by the analysis tasks and the loggers: spectrograms, label strips, PNGs.

Everything draws on the non-interactive Agg backend, so it works on a cluster node without a display.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from birdclef.core.errors import ConfigError


class MissingMatplotlib(ConfigError, ImportError):
    """matplotlib (the `analysis` extra) is not installed: a user error for run.py, and still an
    ImportError for callers that skip their figures without it."""


try:
    import matplotlib
except ImportError as err:  # an optional extra: say how to get it, not a bare traceback
    raise MissingMatplotlib(
        "the analysis figures need matplotlib: pip install -e '.[analysis]' (or make install)."
    ) from err

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
from PIL import Image  # noqa: E402

from birdclef.core.io import atomic_path  # noqa: E402

DPI = 80  # dots per inch of the written PNGs: small files, still legible
COLORS = 128  # palette colours of the written PNGs
EMPTY_COLOR = "#d9d9d9"  # the "(none)" / background share in stacked plots
PALETTE = plt.get_cmap("tab20").colors
BIN_SECONDS = 10.0  # s, histogram bins of recording lengths


def new_figure(rows: int = 1, cols: int = 1, width: float = 8.0, height: float = 3.0, **kwargs):
    """A figure of `rows` x `cols` axes, `width` x `height` inches per row (not per axis)."""
    fig, axes = plt.subplots(rows, cols, figsize=(width, height * rows), squeeze=False, **kwargs)
    return fig, axes


def save_figure(fig, path: str | os.PathLike, dpi: int = DPI, colors: int | None = COLORS) -> None:
    """Write `fig` as a PNG atomically and free its memory.

    With `colors`, the image is reduced to that many palette colours: a noisy
    spectrogram shrinks to about a third, small enough to keep in a README.
    """
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    with atomic_path(path, suffix=".png") as tmp:
        if colors is None:
            tmp.write_bytes(buffer.getvalue())
        else:
            image = Image.open(buffer).convert("RGB")
            image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(
                tmp, "PNG", optimize=True
            )


def plot_spectrogram(
    ax,
    features: np.ndarray,
    sample_rate: int,
    hop_length: int,
    title: str = "",
    ylabel: str = "mel bin",
    colorbar: bool = False,
) -> None:
    """Draw `features` [n_features, frames] (log-mel dB, MFCCs, ...) against time in seconds.

    Frame t is centred on sample t * hop_length (the front-end contract), so the
    x axis is exact for any front end of this project.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be [n_features, frames], got shape {features.shape}")
    seconds = features.shape[1] * hop_length / sample_rate
    image = ax.imshow(
        features, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
        extent=(0.0, seconds, 0, features.shape[0]),
    )  # fmt: skip
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, pad=0.01)


def plot_strip(
    ax,
    labels: Sequence,
    sample_rate: int,
    hop_length: int,
    title: str = "",
    names: Sequence[str] | None = None,
) -> None:
    """Draw one label per frame as a coloured strip under a spectrogram of the same frames.

    `labels` may be strings or integers (cluster ids; -1, DBSCAN's noise, is drawn grey).
    A legend names up to 12 labels.
    """
    labels = np.asarray(labels)
    values = list(dict.fromkeys(labels.tolist())) if names is None else list(names)
    order = {v: i for i, v in enumerate(values)}
    codes = np.array([order[v] for v in labels.tolist()])[None, :]
    colors = [
        EMPTY_COLOR if v in (-1, "background") else PALETTE[i % 20] for i, v in enumerate(values)
    ]
    seconds = labels.shape[0] * hop_length / sample_rate
    ax.imshow(
        codes, aspect="auto", cmap=ListedColormap(colors), vmin=-0.5, vmax=len(values) - 0.5,
        interpolation="nearest", extent=(0.0, seconds, 0, 1),
    )  # fmt: skip
    ax.set_yticks([])
    ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    if len(values) <= 12 and isinstance(values[0], str):
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]
        ax.legend(handles, values, loc="upper left", bbox_to_anchor=(1.0, 1.3), fontsize=7,
                  frameon=False, ncol=1 + len(values) // 4)  # fmt: skip


def _plain_log_axis(ax) -> None:
    """Counts on a log y axis labelled 1, 10, 100 (no 6x10^0 minor labels)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_duration_histogram(ax, seconds: pd.Series, limit: float, title: str) -> None:
    """Histogram of recording lengths, counts on a log scale, with the share under `limit` s."""
    seconds = np.asarray(seconds, dtype=float)
    top = np.floor(max(seconds.max(), limit) / BIN_SECONDS) * BIN_SECONDS + BIN_SECONDS
    bins = np.arange(0.0, top + BIN_SECONDS / 2, BIN_SECONDS)  # [0, 10), ..., as the table's mode
    ax.hist(seconds, bins=bins, color=PALETTE[0])
    _plain_log_axis(ax)
    ax.axvline(limit, color="black", linestyle="--", linewidth=1)
    share = float((seconds < limit).mean())
    ax.text(limit, ax.get_ylim()[1] * 0.5, f"  {share:.0%} under {limit:g} s", fontsize=8)
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("recordings (log)")
    ax.set_title(title, fontsize=9)


def plot_rank_counts(ax, counts: pd.Series, title: str) -> None:
    """Recordings per class against the class's rank (1 = most recorded)."""
    ranks = np.arange(1, len(counts) + 1)
    ax.bar(ranks, counts.to_numpy(), width=1.0, color=PALETTE[0])
    _plain_log_axis(ax)
    ax.set_xlabel("class rank")
    ax.set_ylabel("recordings (log)")
    ax.set_title(title, fontsize=9)


def plot_sand(ax, matrix: pd.DataFrame, title: str, legend: int = 10) -> None:
    """A "sand graph": one column per primary label, its secondary labels piled up.

    `matrix` is [secondary label, primary label] counts; rows in pile order. The
    "(none)" row, where present, is drawn grey so the empty label reads as a block.
    """
    x = np.arange(matrix.shape[1])
    named = [r for r in matrix.index if r != "(none)"]  # same label, same colour in both graphs
    colors = [EMPTY_COLOR if r == "(none)" else PALETTE[named.index(r) % 20] for r in matrix.index]
    ax.stackplot(
        x, matrix.to_numpy(dtype=float), colors=colors, labels=list(matrix.index), step="mid"
    )
    ax.set_xlim(-0.5, max(len(x) - 0.5, 0.5))
    ax.set_xlabel("primary label (by rank)")
    ax.set_ylabel("recordings")
    ax.set_title(title, fontsize=9)
    handles, names = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[:legend], names[:legend], fontsize=7, loc="upper right", frameon=False,
                  title=f"secondary (top {min(legend, len(names))} of {len(names)})",
                  title_fontsize=7)  # fmt: skip


def plot_barh(ax, counts: pd.Series, title: str, xlabel: str = "recordings") -> None:
    """Horizontal bars of `counts`, the largest on top."""
    counts = counts.iloc[::-1]
    ax.barh(np.arange(len(counts)), counts.to_numpy(), color=PALETTE[0])
    ax.set_yticks(np.arange(len(counts)), [str(i) for i in counts.index], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)


def plot_grouped_bars(ax, table: pd.DataFrame, title: str, xlabel: str) -> None:
    """One group of bars per row of `table`, one bar per column (e.g. rating x collection)."""
    n = max(table.shape[1], 1)
    width = 0.8 / n
    x = np.arange(table.shape[0])
    for i, column in enumerate(table.columns):
        ax.bar(x + (i - (n - 1) / 2) * width, table[column].to_numpy(), width, label=str(column),
               color=PALETTE[(2 * i) % 20])  # fmt: skip
    ax.set_xticks(
        x, [f"{v:g}" if isinstance(v, float) else str(v) for v in table.index], fontsize=7
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recordings")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)


def spectrogram_with_strips(
    features: np.ndarray,
    strips: dict,
    sample_rate: int,
    hop_length: int,
    strip_hop: int | None = None,
    title: str = "",
    ylabel: str = "mel bin",
):
    """A figure: the spectrogram `features` [n_features, frames] with one label strip per
    entry of `strips` (name -> one label per point, a point every `strip_hop` samples)
    under it, all on one time axis."""
    strip_hop = strip_hop or hop_length
    n = len(strips)
    fig, axes = plt.subplots(
        1 + n, 1, figsize=(10.0, 2.6 + 0.45 * n), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [6, *([1] * n)]},
    )  # fmt: skip
    plot_spectrogram(axes[0, 0], features, sample_rate, hop_length, title, ylabel=ylabel)
    axes[0, 0].set_xlabel("")
    for ax, (name, labels) in zip(axes[1:, 0], strips.items(), strict=True):
        plot_strip(ax, labels, sample_rate, strip_hop, name)
    axes[-1, 0].set_xlabel("time (s)")
    return fig
