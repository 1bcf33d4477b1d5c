"""From per-file, per-model row scores to a validated `submission.csv`, written atomically.

Steps: align every model's classes to the submission's columns, blend the models over all
rows, post-process each file's rows, fill the rows of files that failed, validate, write.

Rule for a file that could not be decoded or held no samples (documented in the README):
it gets `DEFAULT_BAD_ROWS` (12) rows, and each of its cells is the median of that class's
final scores over all other rows, so it ranks in the middle of every class and moves no
class's AUC much either way. A file shorter than 5 s is scored (padded) and listed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InferenceError
from ..core.io import atomic_path
from ..core.rows import ROW_SECONDS, row_id
from .blend import blend
from .postprocess import postprocess
from .predict import FileScores

SCORE_FORMAT = "%.9g"  # every float32 score written exactly, so near-1 scores keep their order
DIGITS = 9  # significant digits of every written score: float32 needs 9 to be read back exactly
UNQUOTED = re.compile(r'^[^,"\r\n]*$')  # row ids the CSV needs no quotes for


def read_columns(path: str | os.PathLike) -> list[str]:
    """Class columns in the scored order: from sample_submission.csv, taxonomy.csv or a data root."""
    path = Path(path)
    if path.is_dir():
        for name in ("sample_submission.csv", "taxonomy.csv"):
            if (path / name).is_file():
                return read_columns(path / name)
        raise InferenceError(f"{path} holds neither sample_submission.csv nor taxonomy.csv.")
    if not path.is_file():
        raise InferenceError(f"predict.taxonomy={path} not found.")
    table = pd.read_csv(path, dtype=str)
    if "primary_label" in table.columns:
        return [str(c) for c in table["primary_label"]]
    if table.columns[0] != "row_id":
        raise InferenceError(
            f"{path} is neither a sample submission (row_id + class columns) nor a taxonomy "
            "(primary_label column)."
        )
    return [str(c) for c in table.columns[1:]]


def align(
    model_classes: list[list[str]], names: list[str], columns: list[str] | None
) -> tuple[list[str], list[np.ndarray]]:
    """The submission's columns and, per model, the index of each column in its outputs."""
    columns = list(columns) if columns is not None else list(model_classes[0])
    for classes, name in zip(model_classes, names, strict=True):
        if set(classes) != set(columns) or len(classes) != len(columns):
            missing = sorted(set(columns) - set(classes))[:5]
            extra = sorted(set(classes) - set(columns))[:5]
            raise InferenceError(
                f"model {name} predicts {len(classes)} classes that differ from the "
                f"{len(columns)} submission columns (missing {missing}, extra {extra}): every "
                "model must be trained on the same taxonomy as the submission."
            )
    lookups = [{c: i for i, c in enumerate(classes)} for classes in model_classes]
    return columns, [np.array([lookup[c] for c in columns]) for lookup in lookups]


def assemble(
    results: list[FileScores], model_classes: list[list[str]], names: list[str],
    columns: list[str] | None = None, blend_how: str = "rank", weights=None, power: float = 2.0,
    topk: int | None = None, topk_power: float = 1.0, smooth_kernel=None,
) -> tuple[pd.DataFrame, list[dict]]:  # fmt: skip
    """The submission frame and the list of files that failed or were short."""
    columns, index = align(model_classes, names, columns)
    good = [r for r in results if r.error is None]
    if not good:
        raise InferenceError(
            f"none of the {len(results)} audio files could be decoded (first error: "
            f"{results[0].error if results else 'no files'})."
        )
    per_model = [
        np.concatenate([r.scores[m][:, index[m]] for r in good]) for m in range(len(names))
    ]
    blended = blend(per_model, blend_how, weights, power)
    lengths = np.cumsum([0] + [r.rows for r in good])
    processed = np.concatenate(
        [
            postprocess(blended[a:b], topk, topk_power, smooth_kernel)
            for a, b in zip(lengths[:-1], lengths[1:], strict=True)
        ]
    )
    fill = np.median(processed, axis=0)
    blocks, ids, issues = [], [], []
    by_path = dict(zip([r.path for r in good], np.split(processed, lengths[1:-1]), strict=True))
    for r in results:
        stem = Path(r.path).stem
        ids += [row_id(stem, (i + 1) * ROW_SECONDS) for i in range(r.rows)]
        if r.error is not None:
            blocks.append(np.repeat(fill[None], r.rows, axis=0))
            issues.append({"file": r.path, "problem": r.error, "rows": "filled with class medians"})
        else:
            blocks.append(by_path[r.path])
            if r.seconds < ROW_SECONDS:
                issues.append(
                    {"file": r.path, "problem": f"only {r.seconds:.2f} s", "rows": "scored, padded"}
                )
    table = pd.DataFrame(np.concatenate(blocks), columns=columns)
    table.insert(0, "row_id", ids)
    return table, issues


def validate(table: pd.DataFrame, results: list[FileScores], columns: list[str]) -> None:
    """Refuse a malformed submission: duplicate ids, a file not covered, non-finite or out-of-range values."""
    problems = []
    if list(table.columns) != ["row_id", *columns]:
        problems.append("columns are not row_id + the class columns in order")
    if table["row_id"].duplicated().any():
        problems.append(
            f"duplicate row ids {table['row_id'][table['row_id'].duplicated()].head(3).tolist()}"
        )
    expected = sum(r.rows for r in results)
    if len(table) != expected:
        problems.append(f"{len(table)} rows where the files need {expected}")
    stems = {Path(r.path).stem for r in results}
    covered = {s.rpartition("_")[0] for s in table["row_id"]}
    if stems - covered:
        problems.append(f"files without rows {sorted(stems - covered)[:3]}")
    values = table[columns].to_numpy(np.float64)
    if not np.isfinite(values).all():
        problems.append("non-finite scores")
    elif values.size and (values.min() < 0 or values.max() > 1):
        problems.append(f"scores outside [0, 1] ({values.min():.3g} .. {values.max():.3g})")
    if problems:
        raise InferenceError("the submission would be malformed: " + "; ".join(problems))


def write_submission(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `table` as CSV via a temporary file and a rename, so a killed run leaves no half file.

    Scores are written with 9 significant digits (`SCORE_FORMAT`'s values, in scientific
    notation), by `score_cells` when the table is row ids and non-negative finite floats, as
    a submission is: 700 one-minute files (8,400 x 206 scores) in 0.06-0.22 s where pandas'
    `to_csv` formats them one by one in 1.6 s, a twentieth of the 2-core run it ends.
    """
    values = _plain_scores(table)
    with atomic_path(path) as tmp:
        if values is None:
            table.to_csv(tmp, index=False, float_format=SCORE_FORMAT)
            return Path(path)
        cells = score_cells(values)
        with open(tmp, "wb") as out:
            header = table.iloc[:0].to_csv(index=False, lineterminator="\n")  # pandas quotes names
            out.write(header.encode())
            out.write(b"".join(
                f"{r},".encode() + cells[i].tobytes() for i, r in enumerate(table["row_id"])
            ))  # fmt: skip
    return Path(path)


def _plain_scores(table: pd.DataFrame) -> np.ndarray | None:
    """The score columns as float64 when `score_cells` can write them: `row_id` first (ids
    that need no quotes), then float columns, every value finite and >= 0; else None."""
    scores = table.iloc[:, 1:]
    if (
        scores.shape[1] == 0
        or table.columns[0] != "row_id"
        or not all(np.issubdtype(t, np.floating) for t in scores.dtypes)
        or not all(UNQUOTED.match(str(r)) for r in table["row_id"])
    ):
        return None
    values = scores.to_numpy(np.float64)
    return values if np.isfinite(values).all() and (values >= 0).all() else None


def score_cells(values: np.ndarray) -> np.ndarray:
    """uint8 [rows, columns * width]: each row's scores as CSV text, `d.dddddddde-XX,` per
    cell (9 significant digits, as `%.9e`) and a newline for the last comma; whole arrays
    at a time rather than one Python format per score. `values` finite and >= 0."""
    v = np.asarray(values, np.float64)
    positive = v > 0
    exponent = np.zeros(v.shape, np.int64)
    exponent[positive] = np.floor(np.log10(v[positive]))
    mantissa = _mantissa(v, exponent)
    for _ in range(2):  # log10's floor can be one off next to a power of ten; rounding can carry
        high, low = positive & (mantissa >= 10**DIGITS), positive & (mantissa < 10 ** (DIGITS - 1))
        if not (high.any() or low.any()):
            break
        exponent += high.astype(np.int64) - low
        mantissa = _mantissa(v, exponent)
    width_e = max(2, len(str(int(np.abs(exponent).max())))) if v.size else 2
    width = DIGITS + 4 + width_e  # digits, ".", "e", sign, exponent digits, ","
    text = np.empty((width, *v.shape), np.uint8)  # one plane per character, transposed at the end
    digits = [0, *range(2, DIGITS + 1)]  # the plane of each mantissa digit, first to last
    rest = mantissa
    for plane in reversed(digits):
        rest, text[plane] = np.divmod(rest, 10)
    text[digits] += ord("0")
    text[1], text[DIGITS + 1] = ord("."), ord("e")
    text[DIGITS + 2] = np.where(exponent < 0, ord("-"), ord("+"))
    rest = np.abs(exponent)
    for plane in range(width - 2, DIGITS + 2, -1):
        rest, text[plane] = np.divmod(rest, 10)
        text[plane] += ord("0")
    text[-1] = ord(",")
    text[-1, :, -1] = ord("\n")
    return np.ascontiguousarray(text.transpose(1, 2, 0)).reshape(v.shape[0], v.shape[1] * width)


def _mantissa(v: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """round(v * 10**(DIGITS - 1 - exponent)) as int64; the power in two halves so that
    neither overflows for float64's smallest values."""
    shift = DIGITS - 1 - exponent
    half = shift // 2
    return np.rint(v * 10.0**half * 10.0 ** (shift - half)).astype(np.int64)
