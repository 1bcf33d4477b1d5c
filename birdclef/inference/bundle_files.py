"""The text files of a bundle (task=bundle): its predict.py script, requirements.txt and README.md."""

from __future__ import annotations

import importlib.metadata

REQUIRED = ("numpy", "pandas", "soundfile")
BACKEND_PACKAGES = {"onnx": ("onnx", "onnxruntime"), "openvino": ("openvino",)}
OPTIONAL = {
    "scipy": "faster FFT; needed to resample audio that is not at the models' sample rate",
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


def requirements(kinds: list[str]) -> str:
    def line(name: str, note: str = "") -> str:
        try:
            built = f"built with {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            built = "not installed where the bundle was built"
        return f"{name}  # {built}{'; optional: ' + note if note else ''}\n"

    needed = [*REQUIRED, *[p for k in dict.fromkeys(kinds) for p in BACKEND_PACKAGES[k]]]
    text = "# What predict.py needs (on Kaggle: install the wheels offline from a dataset).\n"
    return (
        text + "".join(line(n) for n in needed) + "".join(line(n, w) for n, w in OPTIONAL.items())
    )


def readme(settings: dict, sources: list[str]) -> str:
    models = "".join(
        f"- `{m}` (from `{s}`)\n" for m, s in zip(settings["models"], sources, strict=True)
    )
    return f"""# BirdCLEF submission bundle

Writes `submission.csv` for a folder of soundscapes on the CPU, offline, without the
birdclef project, torch or Lightning (written by `python run.py task=bundle`).

    python predict.py SOUNDSCAPES [--output submission.csv] [--settings settings.json] [--workers N]

In a Kaggle notebook, add this folder as a dataset, install `requirements.txt` offline
(`pip install --no-index --find-links /kaggle/input/<wheels dataset> -r requirements.txt`), then

    !python /kaggle/input/<this dataset>/predict.py /kaggle/input/birdclef-2025/test_soundscapes --output /kaggle/working/submission.csv

- Exit code 0: `submission.csv` written: row_id + one column per class, in the order of
  `{settings["taxonomy"] or "the first model's classes"}`. Files that cannot be decoded
  are named on stderr and get 12 rows of class medians.
- Exit code 2: one line on stderr saying what is wrong (e.g. a folder without audio, as
  `test_soundscapes` is while the notebook is saved rather than scored); nothing is written.

Models, blended by `{settings["blend"]}` with weights {settings["weights"] or "equal"}, windows
every {settings["stride_seconds"]} s, on {settings["workers"]} process(es) of {settings["threads"]}
thread(s) (all in `settings.json`; `--workers` overrides the processes):

{models}"""
