"""The sections of the EDA report: each turns the folder's tables into Markdown and PNG figures.

A section raises SkipSection (naming the absent column or file) when the folder cannot
feed it; the task then writes that reason in its place and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from birdclef.analysis import eda, figures
from birdclef.analysis.eda import SkipSection, markdown_table
from birdclef.analysis.headers import characteristics
from birdclef.core.errors import AudioError


@dataclass
class Context:
    """What every section reads: the folder, train.csv, header rows and where figures go."""

    root: Path
    out: Path
    settings: object  # the `eda` config group
    sample_rate: int
    train: pd.DataFrame
    headers: (
        dict  # set name (labelled, unlabelled, test) -> header rows; labelled aligned with train
    )
    classes: list
    mel: object  # MelFrontend
    mfcc: object  # MfccFrontend
    numbers: dict = field(default_factory=dict)

    def figure(self, fig, name: str) -> str:
        figures.save_figure(fig, self.out / name)
        return f"![{name}]({name})"

    def seconds(self, group: str) -> pd.Series:
        rows = self.headers.get(group)
        return pd.Series(dtype=float) if rows is None else rows["seconds"]


def read_head(path: Path, seconds: float, sample_rate: int) -> np.ndarray:
    """The first `seconds` of `path`, mono at `sample_rate`, decoding only that much."""
    try:
        with sf.SoundFile(str(path)) as f:
            data = f.read(int(seconds * f.samplerate), dtype="float32", always_2d=True)
            rate = f.samplerate
    except Exception as err:
        raise AudioError(f"cannot decode {path}: {err}. Re-encode or remove the file.") from err
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if rate != sample_rate:
        import torchaudio.functional as AF

        wave = AF.resample(wave, rate, sample_rate)
    return wave.numpy()


def durations(ctx: Context) -> str:
    groups = {g: ctx.seconds(g) for g in ctx.headers if len(ctx.seconds(g).dropna())}
    if not groups:
        raise SkipSection("no readable audio file under train_audio/ or *_soundscapes/")
    table = eda.durations_table(groups)
    limit = float(ctx.settings.short_seconds)
    for group, seconds in groups.items():
        summary = table[group]
        ctx.numbers.update({f"eda/{group}_recordings": int(summary["count"]),
                            f"eda/{group}_hours": float(summary["total_h"]),
                            f"eda/{group}_mean_seconds": float(summary["mean_s"]),
                            f"eda/{group}_share_under_short": eda.share_under(seconds, limit)})  # fmt: skip
    write = pd.DataFrame({g: [f"{c['count']:,}", f"{c['mean_s']:.1f}", c["modal_bin"],
                              f"{c['total_h']:.2f}"] for g, c in table.items()},
                         index=["recordings", "mean (s)", "modal 10-s bin", "total (h)"])  # fmt: skip
    fig, axes = figures.new_figure(1, len(groups), width=4.0 * len(groups), height=3.0)
    for ax, (group, seconds) in zip(axes[0], groups.items(), strict=True):
        figures.plot_duration_histogram(ax, seconds.dropna(), limit, f"{group} recordings")
    absent = [g for g in ctx.headers if g not in groups]
    note = f"\nNo audio in: {', '.join(absent)}.\n" if absent else ""
    return "\n".join([markdown_table(write.rename_axis(""), index=True), note,
                      ctx.figure(fig, "durations.png")])  # fmt: skip


def file_characteristics(ctx: Context) -> str:
    parts = []
    for group, rows in ctx.headers.items():
        if len(rows):
            table = characteristics(rows)
            parts.append(table.assign(set=group)[["set", *table.columns]])
    if not parts:
        raise SkipSection("no audio files")
    table = pd.concat(parts, ignore_index=True)
    write_table = table.assign(kbps_median=table["kbps_median"].round(1),
                               kbps_min=table["kbps_min"].round(1), kbps_max=table["kbps_max"].round(1))  # fmt: skip
    bad = {g: int((r["error"] != "").sum()) for g, r in ctx.headers.items() if len(r)}
    text = "Read from headers (soundfile), not decoded; kbps = file bytes x 8 / duration.\n\n"
    unreadable = ", ".join(f"{g}: {n}" for g, n in bad.items() if n)
    tail = f"\n\nUnreadable headers ({unreadable}) are listed in headers.csv." if unreadable else ""
    return text + markdown_table(write_table) + tail


def primary_labels(ctx: Context) -> str:
    counts = eda.primary_counts(ctx.train)
    ctx.numbers["eda/classes_recorded"] = len(counts)
    fig, axes = figures.new_figure(width=8.0, height=3.0)
    figures.plot_rank_counts(axes[0, 0], counts, "recordings per primary label, by rank")
    without = sorted(set(ctx.classes) - set(counts.index))
    extremes = pd.concat([counts.head(5), counts.tail(5)]) if len(counts) > 10 else counts
    lines = [f"{len(counts)} primary labels with recordings"
             + (f" of {len(ctx.classes)} in taxonomy.csv ({len(without)} without any)" if ctx.classes else "")
             + ".\n", markdown_table(extremes.rename("recordings").rename_axis("label").reset_index()),
             "", ctx.figure(fig, "primary_by_rank.png")]  # fmt: skip
    return "\n".join(lines)


def secondary_labels(ctx: Context) -> str:
    with_empty = eda.secondary_matrix(ctx.train, include_empty=True)
    without = eda.secondary_matrix(ctx.train, include_empty=False)
    empty = (
        int(with_empty.loc[eda.NO_SECONDARY].sum()) if eda.NO_SECONDARY in with_empty.index else 0
    )
    outside = sorted(set(without.index) - set(ctx.classes)) if ctx.classes else []
    ctx.numbers["eda/share_without_secondary"] = empty / max(len(ctx.train), 1)
    ctx.numbers["eda/secondary_distinct"] = int(len(without))
    fig, axes = figures.new_figure(2, 1, width=9.0, height=3.2)
    figures.plot_sand(
        axes[0, 0], with_empty, "secondary labels per primary label (with the empty label)"
    )
    if len(without):
        figures.plot_sand(
            axes[1, 0], without, "secondary labels per primary label (empty label left out)"
        )
    return (f"{empty} of {len(ctx.train)} recordings ({empty / max(len(ctx.train), 1):.0%}) have no "
            f"secondary label; {len(without)} distinct secondary labels"
            + (f", {len(outside)} of them outside taxonomy.csv (e.g. {outside[:5]})" if outside else "")
            + ".\n\n" + ctx.figure(fig, "secondary_sand.png"))  # fmt: skip


def call_types(ctx: Context) -> str:
    counts, distinct, lowered = eda.type_counts(ctx.train)
    ctx.numbers["eda/type_distinct"] = distinct
    top = counts.head(int(ctx.settings.top_types))
    fig, axes = figures.new_figure(width=6.0, height=max(2.0, 0.18 * len(top) + 0.8))
    figures.plot_barh(axes[0, 0], top, f"type descriptors (top {len(top)} of {len(counts)})")
    order = ", ".join(f"{k} ({v})" for k, v in counts.head(5).items())
    return (f"{distinct} distinct descriptors ({lowered} ignoring case); most frequent: {order}.\n\n"
            + ctx.figure(fig, "types.png"))  # fmt: skip


def fewest_seconds(ctx: Context) -> str:
    if "filename" not in ctx.train:
        raise SkipSection(
            "train.csv has no 'filename' column, so durations cannot be matched to labels"
        )
    table = eda.fewest_seconds(
        ctx.train, ctx.seconds("labelled"), ctx.classes, int(ctx.settings.fewest)
    )
    return markdown_table(table.assign(seconds=table["seconds"].round(1)))


def ratings(ctx: Context) -> str:
    table = eda.rating_table(ctx.train)
    means = eda.rating_means(ctx.train)
    if table.empty:
        raise SkipSection("no numeric rating in train.csv")
    fig, axes = figures.new_figure(width=8.0, height=3.0)
    figures.plot_grouped_bars(axes[0, 0], table, "rating per collection (0 = unrated)", "rating")
    return "\n".join([markdown_table(means), "", markdown_table(table, index=True), "",
                      ctx.figure(fig, "ratings.png")])  # fmt: skip


def _views(ctx: Context, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel dB (top-dB floored) and per-coefficient standardised MFCCs, [features, frames]."""
    frames = ctx.mel.frames(wave).T
    mel = ctx.mel.finish(frames).numpy()
    mfcc = ctx.mfcc.finish(frames).numpy()
    mfcc = (mfcc - mfcc.mean(axis=1, keepdims=True)) / (mfcc.std(axis=1, keepdims=True) + 1e-6)
    return mel, mfcc


def spectrograms(ctx: Context) -> str:
    rows = ctx.headers["labelled"]
    ok = np.flatnonzero((rows["error"] == "").to_numpy())
    if not len(ok):
        raise SkipSection("no readable labelled recording")
    rng = np.random.default_rng(int(ctx.settings.seed))
    picks = np.sort(rng.choice(ok, min(int(ctx.settings.clips), len(ok)), replace=False))
    hop, sr = ctx.mel.hop_length, ctx.sample_rate
    fig, axes = figures.new_figure(len(picks), 2, width=10.0, height=2.4)
    for (ax_mel, ax_mfcc), i in zip(axes, picks, strict=True):
        path = Path(rows["path"].iloc[i])
        mel, mfcc = _views(ctx, read_head(path, float(ctx.settings.clip_seconds), sr))
        name = f"{path.parent.name}/{path.name}"
        figures.plot_spectrogram(ax_mel, mel, sr, hop, f"{name}: log-mel (dB)")
        figures.plot_spectrogram(
            ax_mfcc, mfcc, sr, hop, f"{name}: MFCC (z-scored)", ylabel="coefficient"
        )
    parts = [ctx.figure(fig, "clips.png")]
    scapes = [g for g in ("unlabelled", "test") if len(ctx.headers.get(g, ()))]
    if scapes:
        path = Path(ctx.headers[scapes[0]]["path"].iloc[0])
        mel, mfcc = _views(ctx, read_head(path, float(ctx.settings.soundscape_seconds), sr))
        fig, axes = figures.new_figure(2, 1, width=10.0, height=2.4)
        figures.plot_spectrogram(axes[0, 0], mel, sr, hop, f"soundscape {path.name}: log-mel (dB)")
        figures.plot_spectrogram(axes[1, 0], mfcc, sr, hop, f"soundscape {path.name}: MFCC (z-scored)",
                                 ylabel="coefficient")  # fmt: skip
        parts.append(ctx.figure(fig, "soundscape.png"))
    else:
        parts.append("*No soundscape in train_soundscapes/ or test_soundscapes/.*")
    return "\n\n".join(parts)


SECTIONS = (
    ("Durations", durations),
    ("File characteristics", file_characteristics),
    ("Primary labels", primary_labels),
    ("Secondary labels", secondary_labels),
    ("Call types", call_types),
    ("Classes with the fewest seconds", fewest_seconds),
    ("Ratings per collection", ratings),
    ("Mel and MFCC views", spectrograms),
)
