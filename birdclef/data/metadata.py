"""Read and validate a competition-layout folder: train.csv, taxonomy.csv, soundscape labels."""

from __future__ import annotations

import ast
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from birdclef.core.errors import DataError
from birdclef.core.rows import split_row_id

log = logging.getLogger(__name__)

TRAIN_COLUMNS = (
    "primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
    "latitude", "longitude", "scientific_name", "common_name", "author", "license",
)  # fmt: skip
REQUIRED_TRAIN_COLUMNS = ("primary_label", "secondary_labels", "filename")
TAXONOMY_COLUMNS = (
    "primary_label",
    "inat_taxon_id",
    "scientific_name",
    "common_name",
    "class_name",
)
SOUNDSCAPE_LABEL_NAMES = ("soundscape_labels.csv", "test_soundscapes/soundscape_labels.csv")
TEXT_COLUMNS = ("primary_label", "secondary_labels", "type", "filename", "collection")


@dataclass
class Metadata:
    """A validated competition folder: labelled rows, the class list and where audio lives."""

    root: Path
    train: pd.DataFrame  # one row per recording; secondary_labels and type parsed to lists
    classes: list[str]  # scored order (sample_submission.csv, else taxonomy.csv)
    class_names: dict[str, str]  # label -> taxon class (Aves, Amphibia, ...)
    unknown_secondary: Counter = field(default_factory=Counter)

    @property
    def audio_dir(self) -> Path:
        return self.root / "train_audio"

    def audio_path(self, filename: str) -> Path:
        return self.audio_dir / filename

    def train_files(self) -> tuple[list[Path], list[str], list[str]]:
        """(paths, keys, groups) of every train_audio recording, once each, in train.csv order.

        A key is the train.csv filename; a group is its class folder, so cache shards
        never mix class folders.
        """
        keys = self.train["filename"].drop_duplicates().tolist()
        return [self.audio_path(k) for k in keys], keys, [k.split("/")[0] for k in keys]


def parse_list(value, *, where: str) -> list[str]:
    """Parse a list literal such as "['song', 'call']"; empty or missing gives []."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    text = str(value).strip()
    if text in ("", "[]", "nan"):
        return []
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise DataError(
            f"{where}: {text!r} is not a Python list literal like \"['a', 'b']\"; fix the cell."
        ) from err
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, list | tuple):
        raise DataError(f"{where}: expected a list literal, got {text!r}.")
    return [str(item).strip() for item in parsed if str(item).strip()]


def read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """Read a CSV with every column as text and check that `required` columns exist."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}. Is data.root the competition folder?")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot parse {path}: {err}") from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(
            f"{path} is missing column(s) {missing}; it has {list(table.columns)}. "
            f"Expected at least {list(required)}."
        )
    return table


def read_taxonomy(root: Path) -> tuple[list[str], dict[str, str]]:
    taxonomy = read_csv(root / "taxonomy.csv", ("primary_label",), "taxonomy.csv")
    labels = [s.strip() for s in taxonomy["primary_label"]]
    duplicated = sorted({x for x in labels if labels.count(x) > 1})
    if duplicated:
        raise DataError(f"taxonomy.csv lists these labels more than once: {duplicated[:10]}.")
    if not labels:
        raise DataError(f"{root / 'taxonomy.csv'} lists no classes.")
    names = taxonomy["class_name"] if "class_name" in taxonomy else [""] * len(labels)
    class_names = dict(zip(labels, names, strict=True))
    submission = root / "sample_submission.csv"
    if submission.is_file():
        columns = [
            c
            for c in read_csv(submission, ("row_id",), "sample_submission.csv").columns
            if c != "row_id"
        ]
        if set(columns) != set(labels):
            extra, absent = sorted(set(columns) - set(labels)), sorted(set(labels) - set(columns))
            raise DataError(
                f"sample_submission.csv and taxonomy.csv disagree on the classes "
                f"(only in submission: {extra[:10]}, only in taxonomy: {absent[:10]})."
            )
        labels = columns
    return labels, class_names


def load_metadata(root: str | Path) -> Metadata:
    """Load and validate `root` laid out as the competition's data folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.root={root} does not exist. Point data.root at a folder laid out like the "
            "competition data (train.csv, taxonomy.csv, train_audio/), or leave it null to use "
            "the built-in synthetic dataset."
        )
    if not (root / "train_audio").is_dir():
        raise DataError(
            f"{root / 'train_audio'} is missing: data.root must hold train_audio/<label>/<file>.ogg."
        )
    classes, class_names = read_taxonomy(root)
    train = read_csv(root / "train.csv", REQUIRED_TRAIN_COLUMNS, "train.csv")
    for column in TEXT_COLUMNS:
        if column in train:
            train[column] = train[column].astype(str).str.strip()
    if train.empty:
        raise DataError(f"{root / 'train.csv'} has no rows.")
    unknown = sorted(set(train["primary_label"]) - set(classes))
    if unknown:
        raise DataError(
            f"train.csv has primary_label(s) not in taxonomy.csv: {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}. Add them to taxonomy.csv or drop those rows."
        )
    train["secondary_labels"] = [
        parse_list(v, where=f"train.csv line {i + 2}, secondary_labels")
        for i, v in enumerate(train["secondary_labels"])
    ]
    if "type" in train:
        train["type"] = [
            parse_list(v, where=f"train.csv line {i + 2}, type")
            for i, v in enumerate(train["type"])
        ]
    train["rating"] = (
        pd.to_numeric(train["rating"], errors="coerce").fillna(0.0) if "rating" in train else 0.0
    )
    known = set(classes)
    unknown_secondary = Counter(
        s for row in train["secondary_labels"] for s in row if s not in known
    )
    if unknown_secondary:
        log.info(
            "ignoring %d secondary label(s) outside the taxonomy (%d distinct, e.g. %s)",
            sum(unknown_secondary.values()), len(unknown_secondary), sorted(unknown_secondary)[:5],
        )  # fmt: skip
    return Metadata(root, train.reset_index(drop=True), classes, class_names, unknown_secondary)


def find_soundscape_labels(root: Path) -> Path | None:
    for name in SOUNDSCAPE_LABEL_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def load_soundscape_labels(root: Path, classes: list[str]) -> pd.DataFrame | None:
    """The labelled test soundscapes in the scoring solution format, or None if absent.

    Returns a frame with `row_id`, `stem`, `end` and one 0/1 column per class in
    `classes` order (classes the file omits are all zero).
    """
    path = find_soundscape_labels(root)
    if path is None:
        return None
    table = read_csv(path, ("row_id",), "soundscape labels")
    unknown = sorted(set(table.columns) - {"row_id"} - set(classes))
    if unknown:
        raise DataError(f"{path} has class column(s) not in taxonomy.csv: {unknown[:10]}.")
    try:
        parts = [split_row_id(r) for r in table["row_id"]]
    except ValueError as err:
        raise DataError(f"{path}: {err}") from err
    out = pd.DataFrame(
        {"row_id": table["row_id"], "stem": [p[0] for p in parts], "end": [p[1] for p in parts]}
    )
    values = table.drop(columns="row_id").apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        raise DataError(f"{path} holds non-numeric labels; every class cell must be 0 or 1.")
    labels = values.reindex(columns=classes, fill_value=0).astype("float32")
    out = pd.concat([out, labels.set_axis(classes, axis=1)], axis=1)
    audio_dir = root / "test_soundscapes"
    missing = sorted({s for s in out["stem"] if not (audio_dir / f"{s}.ogg").is_file()})
    if missing:
        raise DataError(f"{path} labels soundscapes with no audio in {audio_dir}: {missing[:10]}.")
    return out
