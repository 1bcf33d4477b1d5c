"""Multi-label mixtures of real labelled windows: which windows go into each row, their truth, the audio."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.core.errors import ConfigError, DataError
from birdclef.core.rows import ROW_SECONDS, row_id

SILENT_RMS = 1e-4  # a window quieter than this (-80 dBFS RMS) holds no usable sound
FADE_SECONDS = 0.01  # s, raised-cosine fade at each row's edges: no click where rows meet
PEAK = 0.9  # a soundscape peaking higher is scaled down as a whole; headroom for Vorbis overshoot
BACKGROUND, SOURCE = "background", "source"
PLAN_COLUMNS = ["row_id", "stem", "end", "component", "source_row_id", "snr_db"]
# Of the mixing method: bump it when a change gives other audio or rows for the same settings.
VERSION = 1


@dataclass(frozen=True)
class MixSpec:
    """Everything the mixtures depend on besides the source folder (`conf/task/mix.yaml`)."""

    seed: int = 42
    n_soundscapes: int = 24
    soundscape_seconds: int = 60  # s
    sources_per_window: tuple[int, int] = (2, 3)  # inclusive range
    snr_db: tuple[float, float] = (-5.0, 10.0)  # dB, each source's RMS over the background's
    sample_rate: int = 32000  # Hz
    stem_prefix: str = "mix"

    @classmethod
    def from_config(cls, cfg: Mapping) -> MixSpec:
        spec = cls(
            seed=int(cfg["seed"]),
            n_soundscapes=int(cfg["n_soundscapes"]),
            soundscape_seconds=int(cfg["soundscape_seconds"]),
            sources_per_window=tuple(int(v) for v in cfg["sources_per_window"]),
            snr_db=tuple(float(v) for v in cfg["snr_db"]),
            sample_rate=int(cfg["sample_rate"]),
            stem_prefix=str(cfg["stem_prefix"]),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        low, high = self.sources_per_window if len(self.sources_per_window) == 2 else (0, -1)
        if not 1 <= low <= high:
            raise ConfigError(
                f"task.sources_per_window={list(self.sources_per_window)} must be [min, max] with 1 <= min <= max."
            )
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ConfigError(
                f"task.snr_db={list(self.snr_db)} must be [low, high] in dB with low <= high."
            )
        if self.n_soundscapes < 1 or self.sample_rate < 1:
            raise ConfigError(
                f"task.n_soundscapes={self.n_soundscapes} and sample_rate must be >= 1."
            )
        if self.soundscape_seconds < ROW_SECONDS or self.soundscape_seconds % ROW_SECONDS:
            raise ConfigError(
                f"task.soundscape_seconds={self.soundscape_seconds} must be a positive multiple of "
                f"the {ROW_SECONDS}-s row."
            )
        if not self.stem_prefix or not self.stem_prefix.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(
                f"task.stem_prefix={self.stem_prefix!r} must be letters, digits, '-' or '_'."
            )

    @property
    def stems(self) -> list[str]:
        width = max(3, len(str(self.n_soundscapes - 1)))
        return [f"{self.stem_prefix}_{i:0{width}d}" for i in range(self.n_soundscapes)]

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def split_rows(labels: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled rows with at least one positive (sources) and all-zero rows (background)."""
    positives = labels[classes].to_numpy().sum(axis=1)
    return labels[positives > 0].reset_index(drop=True), labels[positives == 0].reset_index(
        drop=True
    )


def draw_sources(truth: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Indices of up to `k` source rows (rows of the 0/1 `truth` matrix), each adding a new species.

    Species are visited in a random order and each picks one of its rows at random, so
    every species is equally likely whatever its row count, and no two rows of one
    window share all their species.
    """
    picked: list[int] = []
    covered = np.zeros(truth.shape[1], dtype=bool)
    for species in rng.permutation(np.flatnonzero(truth.any(axis=0))):
        if len(picked) == k:
            break
        if covered[species]:
            continue
        rows = np.flatnonzero(truth[:, species])
        row = int(rows[rng.integers(len(rows))])
        picked.append(row)
        covered |= truth[row]
    return picked


def plan_mixtures(
    sources: pd.DataFrame, background: pd.DataFrame | None, classes: list[str], spec: MixSpec
) -> pd.DataFrame:
    """One line per component of every mixed row: its background window and 2-3 source windows.

    `sources` and `background` are rows with a `row_id` column (the source's soundscape
    labels, or training windows). Without `background` a row is its sources alone, the
    first at 0 dB as the level the others are scaled to. Deterministic for a given
    `spec.seed` and input order.
    """
    if sources.empty:
        raise DataError(
            "the source's soundscape labels have no row with a positive: nothing to mix."
        )
    if background is not None and background.empty:
        raise DataError(
            "the source's soundscape labels have no usable all-zero row (a window with no labelled call) "
            "to mix over: label some background windows, or use another task.source."
        )
    rng = np.random.default_rng(spec.seed)
    truth = sources[classes].to_numpy() > 0
    low, high = spec.sources_per_window
    lines = []
    for stem in spec.stems:
        for end in range(ROW_SECONDS, spec.soundscape_seconds + 1, ROW_SECONDS):
            rid = row_id(stem, end)
            if background is not None:
                back = background["row_id"].iloc[int(rng.integers(len(background)))]
                lines.append((rid, stem, end, BACKGROUND, back, np.nan))
            picked = draw_sources(truth, int(rng.integers(low, high + 1)), rng)
            for n, index in enumerate(picked):
                reference = background is None and n == 0
                snr = 0.0 if reference else round(float(rng.uniform(*spec.snr_db)), 2)
                lines.append((rid, stem, end, SOURCE, sources["row_id"].iloc[index], snr))
    return pd.DataFrame(lines, columns=PLAN_COLUMNS)


def mixture_truth(plan: pd.DataFrame, labels: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The solution frame: per mixed row, every species of any of its source rows (0/1, `classes` order)."""
    parts = plan[plan["component"] == SOURCE]
    truth = labels.set_index("row_id")[classes].loc[parts["source_row_id"]].to_numpy() > 0
    union = (
        pd.DataFrame(truth, columns=classes).groupby(parts["row_id"].to_numpy(), sort=False).max()
    )
    order = plan["row_id"].drop_duplicates()
    union = union.reindex(order).astype(int)
    return pd.concat(
        [pd.DataFrame({"row_id": order.to_numpy()}), union.reset_index(drop=True)], axis=1
    )


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def mix_window(
    background: np.ndarray, sources: list[np.ndarray], snrs_db: list[float], n_fade: int,
    level: float | None = None,
) -> np.ndarray:  # fmt: skip
    """`background` plus each source scaled to its SNR over `level` (default: the background's
    RMS), faded in and out."""
    level = rms(background) if level is None else level
    out = background.astype(np.float64)
    for source, snr in zip(sources, snrs_db, strict=True):
        out += source * (level * 10 ** (snr / 20) / max(rms(source), SILENT_RMS))
    if n_fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n_fade))
        out[:n_fade] *= ramp
        out[len(out) - n_fade :] *= ramp[::-1]
    return out


def render_soundscape(
    plan: pd.DataFrame, windows: Mapping[str, np.ndarray], sample_rate: int
) -> np.ndarray:
    """The audio of one mixed soundscape from its lines of the plan, rows back to back.

    `windows` maps a source row id to its 5-s window. A row without a background line is
    its sources over silence, scaled to the first source's RMS. The whole soundscape is
    scaled down only if its peak would clip.
    """
    window_samples = ROW_SECONDS * sample_rate
    audio = np.zeros(int(plan["end"].max()) * sample_rate, np.float64)
    for end, lines in plan.groupby("end", sort=True):
        back = lines.loc[lines["component"] == BACKGROUND, "source_row_id"]
        parts = lines[lines["component"] == SOURCE]
        sources = [windows[r] for r in parts["source_row_id"]]
        base = windows[back.iloc[0]] if len(back) else np.zeros(window_samples, np.float32)
        row = mix_window(
            base, sources, list(parts["snr_db"]), int(FADE_SECONDS * sample_rate),
            level=None if len(back) else rms(sources[0]),
        )  # fmt: skip
        audio[int(end) * sample_rate - window_samples : int(end) * sample_rate] = row
    peak = float(np.abs(audio).max())
    if peak > PEAK:
        audio *= PEAK / peak
    return audio.astype(np.float32)


# task=mix_recordings: every window mixed into a training recording, and where (seconds).
RECORDING_SOURCES = "mixed_sources.csv"
SPAN_COLUMNS = ["mixed", "species", "start", "end"]
MIN_OVERLAP_SECONDS = 1.0  # s of a mixed-in window a 5-s row must hold to count it as present


def mixed_spans(root) -> pd.DataFrame | None:
    """Where each secondary species of a `task=mix_recordings` folder sounds: its mixed file
    (train.csv's filename), species and span in seconds; None for any other folder, or one made
    before spans were recorded (its secondaries then count on every row, as train.csv says)."""
    path = Path(root) / RECORDING_SOURCES
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    if not set(SPAN_COLUMNS) <= set(table.columns):
        return None
    return table[SPAN_COLUMNS]


def row_presence(spans: pd.DataFrame, files, ends, classes) -> np.ndarray:
    """0/1 [rows, classes]: the species whose span overlaps the 5-s row ending at `ends` (s)
    of `files` by at least MIN_OVERLAP_SECONDS."""
    index = {c: i for i, c in enumerate(classes)}
    by_file: dict[str, list] = {}
    for mixed, species, start, end in spans.itertuples(index=False):
        if species in index:
            by_file.setdefault(mixed, []).append((index[species], float(start), float(end)))
    out = np.zeros((len(files), len(classes)), dtype=np.float32)
    for row, (file, row_end) in enumerate(zip(files, ends, strict=True)):
        for column, start, end in by_file.get(file, ()):
            overlap = min(end, row_end) - max(start, row_end - ROW_SECONDS)
            if overlap >= MIN_OVERLAP_SECONDS:
                out[row, column] = 1.0
    return out
