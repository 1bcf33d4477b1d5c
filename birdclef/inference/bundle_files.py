"""The text files of a bundle (task=bundle): its predict.py script, requirements.txt and README.md."""

from __future__ import annotations

import importlib.metadata

REQUIRED = ("numpy", "pandas", "soundfile")
BACKEND_PACKAGES = {"onnx": ("onnxruntime",), "openvino": ("openvino",)}
OPTIONAL = {
    "scipy": "a faster FFT for the front end (numpy's is used without it)",
    "tqdm": "progress bar",
    "threadpoolctl": "keeps numpy's BLAS on the worker's threads (faster with several workers)",
}

PREDICT_PY = '''"""Write submission.csv for a folder of soundscapes, offline, without the birdclef project or torch.

In a Kaggle notebook (this folder added as a dataset, requirements.txt installed offline):

    !python /kaggle/input/<this dataset>/predict.py /kaggle/input/birdclef-2025/test_soundscapes --output /kaggle/working/submission.csv

Options: --settings FILE (default: settings.json beside this file), --workers N (processes).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":  # worker processes import this file again and must not rerun it
    from birdclef_runtime.inference.runtime import main

    raise SystemExit(main())
'''


def pin(name: str) -> str:
    """`name==<version installed here>`, so the notebook runs what the bundle was checked with."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def requirement_names(kinds: list[str], extras: list[str] = ()) -> list[str]:
    """The packages predict.py needs for these model kinds, then the `extras` (of OPTIONAL)."""
    unknown = [e for e in extras if e not in OPTIONAL]
    if unknown:
        raise ValueError(f"task.extras {unknown}: each must be one of {sorted(OPTIONAL)}")
    needed = [*REQUIRED, *[p for k in dict.fromkeys(kinds) for p in BACKEND_PACKAGES[k]]]
    return [*needed, *[e for e in dict.fromkeys(extras) if e not in needed]]


def requirements(kinds: list[str], extras: list[str] = ()) -> str:
    notes = "".join(f"#   {n}: {w}\n" for n, w in OPTIONAL.items() if n not in extras)
    return (
        "# What predict.py needs, pinned to the versions it was checked with; wheels/ holds them\n"
        "# (pip install --no-index --find-links wheels -r requirements.txt). Optional extras:\n"
        + notes
        + "".join(f"{pin(n)}\n" for n in requirement_names(kinds, extras))
    )


def readme(settings: dict, sources: list[str], wheels: str) -> str:
    models = "".join(
        f"- `{m}` (from `{s}`)\n" for m, s in zip(settings["models"], sources, strict=True)
    )
    taxonomy = settings.get("taxonomy")
    columns = f"`{taxonomy}`" if taxonomy else "the first model's classes"
    return f"""# BirdCLEF submission bundle

Writes `submission.csv` for a folder of soundscapes on the CPU, offline, without the
birdclef project, torch or Lightning (written by `python run.py task=bundle`).

    python predict.py SOUNDSCAPES [--output submission.csv] [--settings settings.json] [--workers N]

In a Kaggle notebook (no internet), add this folder as a dataset and run two cells:

    !pip install --no-index --find-links /kaggle/input/<this dataset>/wheels -r /kaggle/input/<this dataset>/requirements.txt
    !python /kaggle/input/<this dataset>/predict.py /kaggle/input/birdclef-2025/test_soundscapes --output /kaggle/working/submission.csv

`wheels/` holds {wheels}.

- Exit code 0: `submission.csv` written: row_id + one column per class, in the order of
  {columns}. A file that fails anywhere
  (decoding, features, a model, a non-finite score) is named on stderr and its rows get the
  class medians. A folder without audio (Kaggle's `test_soundscapes` while a notebook is
  saved rather than scored) gets the sample submission's rows, or its header, and one line
  saying so.
- Exit code 2: one line on stderr saying what is wrong (a missing folder, a bad model).

Models, blended by `{settings["blend"]}` with weights {settings["weights"] or "equal"}, windows
every {settings["stride_seconds"]} s, on {settings["workers"]} process(es) of {settings["threads"]}
thread(s) (all in `settings.json`; `--workers` overrides the processes):

{models}"""
