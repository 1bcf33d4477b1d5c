"""One call from a folder of soundscapes to `submission.csv`: what `task=predict` and the bundle run.

`predict_folder(settings)` takes plain values (a dict, as `task=predict` composes it and as the
bundle stores it in `settings.json`) and returns the submission frame and a report; `main()`
is the bundle's command line. Nothing here imports the framework, Lightning or torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

from ..core.cpus import available_cpus
from ..core.errors import ConfigError, InferenceError
from .predict import FilePredictor, list_audio, predict_files
from .submission import assemble, read_columns, validate, write_submission

DEFAULTS = {
    "models": [],  # .ckpt, .onnx or OpenVINO folders
    "weights": None,  # one per model; null = equal
    "blend": "rank",  # rank | mean | power
    "power": 2.0,  # exponent of the power blend
    "stride_seconds": 5.0,  # s between window starts; < 5 averages overlapping windows
    "sed_frames": False,  # SED nets: rows from frame scores instead of window scores
    "topk": None,  # post-processing: scale rows by the file's per-class top-k mean
    "topk_power": 1.0,
    "smooth_kernel": None,  # post-processing: e.g. [0.1, 0.8, 0.1]
    "openvino_precision": "f32",  # f32 | bf16 | f16: OpenVINO models' inference precision
    "threads": 1,  # threads per worker process
    "workers": 1,  # processes
    "taxonomy": None,  # sample_submission.csv / taxonomy.csv / data root: column order
}


def settings_from(values: dict) -> dict:
    unknown = set(values) - set(DEFAULTS)
    if unknown:
        raise InferenceError(
            f"unknown predict settings {sorted(unknown)}; known: {sorted(DEFAULTS)}"
        )
    out = {**DEFAULTS, **values}
    if out["workers"] is None:  # all the CPUs this process may use
        out["workers"] = available_cpus()
    for key in ("workers", "threads"):
        if not isinstance(out[key], int) or out[key] < 1:
            raise InferenceError(f"predict.{key}={out[key]!r} must be a whole number >= 1.")
    if not out["models"]:
        raise InferenceError(
            "no models given: set predict.models=[<.ckpt|.onnx|openvino folder>, ...]."
        )
    return out


def settings_from_group(p, root: Path | None) -> dict:
    """The plain settings `predict_folder` takes, from the `predict` config group `p` (any mapping).

    The column order defaults to `root`'s sample_submission.csv / taxonomy.csv.
    """
    if not p.models:
        raise ConfigError(
            'predict.models is empty: give "predict.models=[<run>/checkpoints/best.ckpt]" '
            "(checkpoints, exported .onnx files or OpenVINO folders)."
        )
    post = p.postprocess
    workers = p.workers if p.workers is not None else available_cpus()
    kernel = post["smooth_kernel"]
    taxonomy = p.taxonomy
    if (
        taxonomy is None
        and root is not None
        and any((root / n).is_file() for n in ("sample_submission.csv", "taxonomy.csv"))
    ):
        taxonomy = str(root)
    return {
        "models": [str(m) for m in p.models],
        "weights": None if p.weights is None else [float(w) for w in p.weights],
        "blend": p.blend,
        "power": float(p.power),
        "stride_seconds": float(p.stride_seconds),
        "sed_frames": bool(p.sed_frames),
        "topk": None if post["topk"] is None else int(post["topk"]),
        "topk_power": float(post["topk_power"]),
        "smooth_kernel": None if kernel is None else [float(k) for k in kernel],
        "openvino_precision": str(p.openvino_precision),
        "threads": int(p.threads),
        "workers": int(workers),
        "taxonomy": taxonomy,
    }


def predict_folder(soundscapes: str | os.PathLike, settings: dict, progress: bool = True):
    """(submission frame, report) for every audio file in `soundscapes`.

    A folder without audio (Kaggle's test folder while a notebook is saved rather than
    scored) gives the sample submission's rows, or its header alone, and a report that
    says why (`empty_submission`).
    """
    s = settings_from(settings)
    tic = time.perf_counter()
    probe = FilePredictor(
        s["models"], s["threads"], s["stride_seconds"], s["sed_frames"], s["openvino_precision"]
    )
    classes = [m.classes for m in probe.models]
    names = [str(m.path) for m in probe.models]
    columns = read_columns(s["taxonomy"]) if s["taxonomy"] else None
    files = list_audio(soundscapes, allow_empty=True)
    if not files:
        table = empty_submission(s["taxonomy"], columns or list(classes[0]))
        note = (
            f"{soundscapes} holds no audio (as Kaggle's test folder while a notebook is saved): "
            f"wrote {'the sample submission' if len(table) else 'the header only'}, {len(table)} rows"
        )
        return table, {"files": 0, "rows": len(table), "bad_files": [], "audio_seconds": 0.0,
                       "wall_seconds": time.perf_counter() - tic, "realtime_factor": float("nan"),
                       "models": names, "timing": {}, "note": note}  # fmt: skip
    results = predict_files(
        s["models"], files, s["threads"], s["workers"], s["stride_seconds"], s["sed_frames"],
        progress, s["openvino_precision"], probe,
    )  # fmt: skip
    table, issues = assemble(
        results, classes, names, columns, s["blend"], s["weights"], s["power"],
        s["topk"], s["topk_power"], s["smooth_kernel"],
    )  # fmt: skip
    validate(table, results, list(table.columns[1:]))
    wall = time.perf_counter() - tic
    audio = sum(r.seconds for r in results)
    report = {
        "files": len(results),
        "rows": len(table),
        "bad_files": issues,
        "audio_seconds": audio,
        "wall_seconds": wall,
        "realtime_factor": audio / wall if wall > 0 else float("nan"),
        "models": names,
        "timing": {
            key: sum(r.timing.get(key, 0.0) for r in results)
            for key in ("decode", "stft", "mel", "frames", "model", "rows")
        },
    }
    return table, report


def empty_submission(taxonomy: str | None, columns: list[str]) -> pd.DataFrame:
    """The sample submission's rows when it has some, else the header: row_id + `columns`."""
    path = Path(taxonomy) if taxonomy else None
    if path is not None and path.is_dir():
        path = path / "sample_submission.csv"
    if path is not None and path.is_file():
        sample = pd.read_csv(path, dtype={"row_id": str})
        if sample.columns[0] == "row_id" and len(sample):
            return sample[["row_id", *columns]]
    return pd.DataFrame(columns=["row_id", *columns])


def run(soundscapes, output, settings: dict, progress: bool = True) -> dict:
    """`predict_folder`, then `output` written; the report's wall time and real-time
    factor count the writing too (`write_seconds`), as a submission's clock does."""
    table, report = predict_folder(soundscapes, settings, progress)
    tic = time.perf_counter()
    write_submission(table, output)
    report["write_seconds"] = time.perf_counter() - tic
    report["wall_seconds"] += report["write_seconds"]
    if report["audio_seconds"] > 0:
        report["realtime_factor"] = report["audio_seconds"] / report["wall_seconds"]
    report["output"] = str(output)
    return report


def main(argv: list[str] | None = None) -> int:
    """The bundle's command line: `python predict.py SOUNDSCAPES [--output submission.csv]`."""
    here = Path(__file__).resolve().parents[2]  # the bundle: <bundle>/<package>/inference/
    parser = argparse.ArgumentParser(
        description="Write submission.csv for a folder of soundscapes."
    )
    parser.add_argument("soundscapes", type=Path)
    parser.add_argument("--output", type=Path, default=Path("submission.csv"))
    parser.add_argument("--settings", type=Path, default=here / "settings.json")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: settings)")
    args = parser.parse_args(argv)
    try:
        try:
            settings = json.loads(args.settings.read_text())
        except (OSError, ValueError) as err:
            raise InferenceError(f"cannot read the settings {args.settings}: {err}") from err
        base = args.settings.parent  # model paths in the settings are relative to its folder
        settings["models"] = [str(base / m) for m in settings.get("models", [])]
        if settings.get("taxonomy"):
            settings["taxonomy"] = str(base / settings["taxonomy"])
        if args.workers is not None:
            settings["workers"] = args.workers
        report = run(args.soundscapes, args.output, settings)
    except InferenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for issue in report["bad_files"]:
        print(
            f"skipped or short: {issue['file']}: {issue['problem']} ({issue['rows']})",
            file=sys.stderr,
        )
    if report.get("note"):
        print(f"{report['note']} to {args.output}")
        return 0
    print(
        f"wrote {report['rows']} rows for {report['files']} files to {args.output} in "
        f"{report['wall_seconds']:.1f} s ({report['realtime_factor']:.0f}x real time)"
    )
    return 0
