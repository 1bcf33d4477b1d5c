"""The study's EDA tables, computed from train.csv and header-read durations (no plotting here)."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.data.frontend import MelFrontend, MfccFrontend
from birdclef.data.metadata import read_csv

BIN_SECONDS = 10.0  # s, width of the bins of the modal duration (the study's "modal 10-s bin")
NO_TYPE = "(no type)"
NO_SECONDARY = "(none)"
HOUR = 3600.0  # s


class SkipSection(Exception):
    """A report section cannot be made from this folder (a column or file is absent)."""


def require(table: pd.DataFrame, *columns: str) -> None:
    """Raise SkipSection naming the columns of train.csv that a section needs and lacks."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SkipSection(f"train.csv has no {', '.join(repr(c) for c in missing)} column")


def parse_list_loose(value) -> list[str]:
    """A list-like cell as a list of stripped strings, accepting what real CSVs hold.

    "['song', 'call']" and "[]" parse as literals; cells that are not valid literals
    ("song, call", "[song; call]", a bare "song") are split on commas and semicolons,
    so one malformed cell never stops the report. Empty items are dropped.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, list | tuple):
        items = list(value)
    else:
        text = str(value).strip()
        try:
            parsed = ast.literal_eval(text) if text else []
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = [p for p in re.split(r"[,;]", text.strip("[]()")) if p]
        items = list(parsed) if isinstance(parsed, list | tuple | set) else [parsed]
    return [s for s in (str(i).strip().strip("'\"").strip() for i in items) if s]


def duration_summary(seconds: pd.Series) -> dict:
    """The durations table's column for one set of recordings (lengths in seconds)."""
    seconds = pd.Series(seconds, dtype=float).dropna()
    if seconds.empty:
        return {"count": 0, "mean_s": float("nan"), "modal_bin": "-", "total_h": 0.0}
    bins = np.floor(seconds.to_numpy() / BIN_SECONDS).astype(int)
    values, counts = np.unique(bins, return_counts=True)
    low = values[np.argmax(counts)] * BIN_SECONDS  # the first of equally common bins
    return {
        "count": int(len(seconds)),
        "mean_s": float(seconds.mean()),
        "modal_bin": f"{low:g}-{low + BIN_SECONDS:g} s",
        "total_h": float(seconds.sum() / HOUR),
    }


def durations_table(groups: dict[str, pd.Series]) -> pd.DataFrame:
    """One column per set of recordings (labelled, unlabelled, ...), one row per statistic."""
    return pd.DataFrame({name: duration_summary(s) for name, s in groups.items()})


def share_under(seconds: pd.Series, limit: float) -> float:
    seconds = pd.Series(seconds, dtype=float).dropna()
    return float((seconds < limit).mean()) if len(seconds) else float("nan")


def primary_counts(train: pd.DataFrame) -> pd.Series:
    """Recordings per primary label, most recorded first (ties by label)."""
    require(train, "primary_label")
    counts = train["primary_label"].astype(str).value_counts()
    return counts.sort_index().sort_values(ascending=False, kind="stable")


def secondary_matrix(train: pd.DataFrame, include_empty: bool) -> pd.DataFrame:
    """[secondary label, primary label] counts for the sand graphs, primaries by rank.

    A recording with no secondary label counts once under "(none)" when
    `include_empty`; rows are ordered by total, "(none)" first.
    """
    require(train, "primary_label", "secondary_labels")
    order = primary_counts(train).index
    pairs = Counter()
    for primary, cell in zip(
        train["primary_label"].astype(str), train["secondary_labels"], strict=True
    ):
        labels = parse_list_loose(cell)
        if not labels and include_empty:
            labels = [NO_SECONDARY]
        for label in labels:
            pairs[(label, primary)] += 1
    if not pairs:
        return pd.DataFrame(index=pd.Index([], name="secondary"), columns=order, dtype=int)
    counts = pd.Series(pairs).unstack(fill_value=0).reindex(columns=order, fill_value=0)
    totals = counts.sum(axis=1).sort_index().sort_values(ascending=False, kind="stable")
    rows = [NO_SECONDARY] * (NO_SECONDARY in totals.index) + [
        r for r in totals.index if r != NO_SECONDARY
    ]
    return counts.loc[rows].rename_axis("secondary").astype(int)


def type_counts(train: pd.DataFrame) -> tuple[pd.Series, int, int]:
    """Recordings per `type` descriptor, the number of distinct descriptors, and that
    number after lower-casing ("Song" and "song" as one). An empty list counts as "(no type)"."""
    require(train, "type")
    raw = Counter()
    for cell in train["type"]:
        items = parse_list_loose(cell) or [NO_TYPE]
        raw.update(dict.fromkeys(items, 1))  # a descriptor counts once per recording
    counts = pd.Series(raw, dtype=int).sort_index().sort_values(ascending=False, kind="stable")
    distinct = [k for k in raw if k != NO_TYPE]
    return counts, len(distinct), len({k.lower() for k in distinct})


def fewest_seconds(
    train: pd.DataFrame, seconds: pd.Series, classes: list[str] | None, n: int
) -> pd.DataFrame:
    """The `n` classes with the fewest seconds of labelled audio (classes without any: 0 s).

    `seconds` is aligned with `train`'s rows (NaN where the header was unreadable).
    """
    require(train, "primary_label")
    seconds = pd.DataFrame({"label": train["primary_label"].astype(str).to_numpy(),
                          "seconds": np.asarray(seconds, dtype=float)})  # fmt: skip
    table = seconds.groupby("label")["seconds"].agg(recordings="size", seconds="sum")
    if classes:
        table = table.reindex(sorted(set(classes) | set(table.index)), fill_value=0)
    table = table.sort_index().sort_values("seconds", kind="stable").head(n)
    return table.rename_axis("class").reset_index()


def rating_table(train: pd.DataFrame) -> pd.DataFrame:
    """Recordings per rating (rows) and collection (columns); unparseable ratings are dropped."""
    require(train, "rating", "collection")
    rating = pd.to_numeric(train["rating"], errors="coerce")
    ratings = pd.DataFrame({"rating": rating, "collection": train["collection"].astype(str)})
    table = pd.crosstab(ratings["rating"].dropna(), ratings["collection"][rating.notna()])
    return table.sort_index().astype(int)


def rating_means(train: pd.DataFrame) -> pd.DataFrame:
    """Per collection: recordings, the share rated (rating > 0) and the mean of real ratings."""
    require(train, "rating", "collection")
    rating = pd.to_numeric(train["rating"], errors="coerce").fillna(0.0)
    ratings = pd.DataFrame({"rating": rating, "collection": train["collection"].astype(str)})
    rated = ratings["rating"] > 0
    out = ratings.groupby("collection").agg(recordings=("rating", "size"))
    out["rated_share"] = rated.groupby(ratings["collection"]).mean()
    out["mean_rating"] = ratings[rated].groupby("collection")["rating"].mean()
    return out.reset_index()


def markdown_table(data: pd.DataFrame, floatfmt: str = ".3g", index: bool = False) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs `tabulate`, not a dependency)."""
    data = data.reset_index() if index else data

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "-" if np.isnan(v) else format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(str(c) for c in data.columns) + " |"
    rule = "|" + "|".join("---" for _ in data.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in data.itertuples(index=False)]
    return "\n".join([head, rule, *body])


AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")
GROUPS = {  # report name -> folder under the data root
    "labelled": "train_audio",
    "unlabelled": "train_soundscapes",
    "test": "test_soundscapes",
}
MEL_KEYS = ("n_mels", "n_fft", "hop_length", "f_min", "f_max", "top_db")


def spectral_frontends(frontend, sample_rate: int, n_mfcc: int):
    """A log-mel and an MFCC front end with the run's mel settings where it has them
    (frontend=mel or mfcc), the project defaults otherwise (frontend=birdnet)."""
    kwargs = {k: frontend[k] for k in MEL_KEYS if k in frontend}
    n_mfcc = int(frontend.get("n_mfcc", n_mfcc))
    return MelFrontend(sample_rate, **kwargs), MfccFrontend(sample_rate, n_mfcc=n_mfcc, **kwargs)


def audio_files(root: Path, folder: str) -> list[Path]:
    where = root / folder
    if not where.is_dir():
        return []
    return sorted(p for p in where.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def load_inputs(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """train.csv as text (any columns) and the taxonomy's classes (empty if absent)."""
    train = read_csv(root / "train.csv", (), "train.csv")  # any columns: sections check theirs
    classes: list[str] = []
    taxonomy = root / "taxonomy.csv"
    if taxonomy.is_file():
        tax = read_csv(taxonomy, (), "taxonomy.csv")
        classes = tax["primary_label"].str.strip().tolist() if "primary_label" in tax else []
    return train, classes
