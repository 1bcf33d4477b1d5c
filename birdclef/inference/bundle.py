"""Building a bundle: a folder a competition notebook runs offline, without the project (task=bundle).

The folder holds `predict.py` (the command line), `birdclef_runtime/` (copies of `birdclef.core` and
`birdclef.inference`, without the modules that need torch, TensorFlow or the project), `models/` (the
exported models), `settings.json` (the `predict` settings, model paths relative to the folder), the
column order (`sample_submission.csv` or `taxonomy.csv`), `requirements.txt` and `README.md` (their
texts: `bundle_files`). Before the bundle is renamed into place, the models load from their copies and
match the columns, and no copied file imports anything beyond the standard library and the packages in
`requirements.txt`.
"""

from __future__ import annotations

import ast
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import birdclef.core as core_package
import birdclef.inference as inference_package

from ..core.errors import ConfigError
from ..core.io import current_umask, write_json
from .backends import OPENVINO_META
from .blend import BLENDS, check_weights
from .bundle_files import (
    OPTIONAL,
    PREDICT_PY,
    REQUIRED,
    pin,
    readme,
    requirement_names,
    requirements,
)
from .postprocess import check_kernel
from .predict import FilePredictor
from .runtime import settings_from
from .submission import align, read_columns

log = logging.getLogger(__name__)

PACKAGE = "birdclef_runtime"  # the package inside the bundle: core/ and inference/
LEFT_OUT = (
    "torch_backend.py",
    "foreign.py",
    "foreign_runners.py",
    "teacher.py",
    "bundle.py",
    "bundle_files.py",
)  # need torch, TensorFlow or the project: checkpoints, teachers (pseudo-labels), the bundle builder
COLUMN_FILES = ("sample_submission.csv", "taxonomy.csv")  # read_columns' order in a data root
ALLOWED_IMPORTS = {*REQUIRED, *OPTIONAL, "onnxruntime", "openvino", PACKAGE}


def model_kind(path: Path) -> str:
    """`onnx` or `openvino`; a user error for checkpoints and anything else."""
    if path.suffix == ".onnx" and path.is_file():
        return "onnx"
    if (path.suffix == ".xml" and path.is_file()) or (path / "model.xml").is_file():
        return "openvino"
    if not path.exists():
        raise ConfigError(f"predict.models: {path} not found.")
    raise ConfigError(
        f"predict.models: {path} is neither an exported .onnx file nor an OpenVINO folder "
        "(model.xml, model.bin, model.json), the only models a bundle can hold."
    )


def check_models(models: list[str]) -> list[str]:
    """The kinds of `models`, after refusing checkpoints (they need torch and the project)."""
    checkpoints = [m for m in models if Path(m).suffix == ".ckpt"]
    if checkpoints:
        raise ConfigError(
            f"predict.models holds training checkpoints {checkpoints}, which need torch and "
            "the project, so they cannot go into a bundle: export each first with "
            "`python run.py task=export task.model=<checkpoint>` and bundle the .onnx file "
            "or OpenVINO folder it writes."
        )
    return [model_kind(Path(m)) for m in models]


def copy_model(source: Path, kind: str, models: Path) -> str:
    """Copy one model into `models/` under a name not yet taken; its path inside the bundle.

    An OpenVINO model is copied as its three files (`model.xml`, its `.bin` weights and
    `model.json`), so that nothing else in its folder (say, the ONNX files) comes along.
    """
    xml = source / "model.xml" if source.is_dir() else source
    name = xml.parent.name if kind == "openvino" else source.name
    stem, suffix = (name[: -len(".onnx")], ".onnx") if kind == "onnx" else (name, "")
    target, n = models / name, 1
    while target.exists():
        n += 1
        target = models / f"{stem}_{n}{suffix}"
    if kind == "onnx":
        shutil.copy2(source, target)
        return f"models/{target.name}"
    parts = (xml, xml.with_suffix(".bin"), xml.with_name(OPENVINO_META))
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise ConfigError(
            f"predict.models: the OpenVINO model {source} lacks {missing}; export it again "
            "with `python run.py task=export`."
        )
    target.mkdir()
    for part in parts:
        shutil.copy2(part, target / part.name)
    return (
        f"models/{target.name}" if xml.name == "model.xml" else f"models/{target.name}/{xml.name}"
    )


def column_file(taxonomy: str | None) -> Path | None:
    """The file that gives the submission's column order, as `read_columns` would pick it."""
    if taxonomy is None:
        return None
    path = Path(taxonomy)
    if path.is_dir():
        found = [path / n for n in COLUMN_FILES if (path / n).is_file()]
        if not found:
            raise ConfigError(f"predict.taxonomy={path} holds neither of {list(COLUMN_FILES)}.")
        return found[0]
    if not path.is_file():
        raise ConfigError(f"predict.taxonomy={path} not found.")
    return path


def copy_columns(source: Path, folder: Path) -> str:
    """Copy the column file under the name that tells `read_columns` how to read it."""
    with source.open() as f:
        header = f.readline().strip().split(",")
    name = "taxonomy.csv" if "primary_label" in header else "sample_submission.csv"
    shutil.copy2(source, folder / name)
    return name


def check_settings(settings: dict) -> None:
    """Refuse, now rather than in the scoring notebook, settings the runtime would refuse."""
    settings_from(settings)
    if settings["blend"] not in BLENDS:
        raise ConfigError(f"predict.blend={settings['blend']!r} is not one of {list(BLENDS)}.")
    check_weights(settings["weights"], len(settings["models"]))
    check_kernel(settings["smooth_kernel"])
    if settings["topk"] is not None and settings["topk"] < 1:
        raise ConfigError(f"predict.postprocess.topk={settings['topk']} must be >= 1 or null.")


def check_bundle(folder: Path, settings: dict) -> None:
    """Load the copied models as the bundle will, and match them to its columns."""
    paths = [str(folder / m) for m in settings["models"]]
    probe = FilePredictor(paths, 1, settings["stride_seconds"], settings["sed_frames"])
    columns = read_columns(folder / settings["taxonomy"]) if settings["taxonomy"] else None
    align([m.classes for m in probe.models], paths, columns)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in a Python file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def check_imports(folder: Path) -> list[str]:
    """Every import in the bundle's Python files that the bundle's host may lack (torch, birdclef ...)."""
    problems = []
    for path in sorted(folder.rglob("*.py")):
        for line, module in imported_modules(path):
            if module not in sys.stdlib_module_names and module not in ALLOWED_IMPORTS:
                problems.append(f"{path.relative_to(folder)}:{line} imports {module}")
    return problems


def write_bundle(
    folder: Path,
    settings: dict,
    kinds: list[str],
    columns: Path | None,
    wheels: dict | None = None,
    extras: list[str] = (),
) -> dict:
    """Write every file of the bundle into `folder`; the settings as stored there.

    `wheels` ({"python": "3.11", "source": "download" | a folder}): also fetch the wheels of
    requirements.txt into `wheels/` (`fetch_wheels`); None: none. `extras`: optional packages
    (`OPTIONAL`) listed and fetched too.
    """
    (folder / PACKAGE).mkdir()
    (folder / PACKAGE / "__init__.py").write_text(
        '"""birdclef.core and birdclef.inference, copied."""\n'
    )
    for package in (core_package, inference_package):
        source_dir = Path(package.__file__).parent
        target = folder / PACKAGE / source_dir.name
        target.mkdir()
        for source in sorted(source_dir.glob("*.py")):
            if source.name not in LEFT_OUT:
                shutil.copy2(source, target / source.name)
    (folder / "models").mkdir()
    sources = settings["models"]
    stored = {
        **settings,
        "models": [
            copy_model(Path(m), k, folder / "models") for m, k in zip(sources, kinds, strict=True)
        ],
        "taxonomy": copy_columns(columns, folder) if columns else None,
    }
    (folder / "predict.py").write_text(PREDICT_PY)
    write_json(folder / "settings.json", stored)
    (folder / "requirements.txt").write_text(requirements(kinds, extras))
    described = "no wheels (task.wheels=null): install requirements.txt another way"
    if wheels is not None:
        fetched = fetch_wheels(folder / "wheels", requirement_names(kinds, extras), **wheels)
        described = f"{len(fetched)} wheels for CPython {wheels['python']} on manylinux x86-64"
    (folder / "README.md").write_text(readme(stored, sources, described))
    mask = current_umask()  # temporary folders are owner-only: make the bundle readable like any
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
    return stored


PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


def fetch_wheels(target: Path, names: list[str], python: str, source: str) -> list[Path]:
    """The wheels of `names` (pinned as here) and what they need, for CPython `python` on
    manylinux x86-64, into `target`: from PyPI (`source="download"`) or a local folder."""
    version = str(python).replace(".", "")
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
        "--dest", str(target), "--python-version", str(python), "--implementation", "cp",
        "--abi", f"cp{version}", *[a for p in PLATFORMS for a in ("--platform", p)],
    ]  # fmt: skip
    if source != "download":
        if not Path(source).is_dir():
            raise ConfigError(f"task.wheels={source} is not a folder of wheels.")
        command += ["--no-index", "--find-links", str(source)]
    done = subprocess.run([*command, *[pin(n) for n in names]], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ConfigError(
            f"the bundle's wheels could not be fetched ({last}); with no network give "
            "task.wheels=<folder of wheels>, or task.wheels=null to leave them out."
        )
    return sorted(target.glob("*.whl"))


def replace_folder(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`, moving an existing `target` aside first and deleting it after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old)
