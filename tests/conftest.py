"""Layered fixtures: a tiny synthetic dataset, then configs composed on it.

    compose_cfg / cfg      the project config, writing into a temporary folder
    train_cfg / cfg_train  ... on the tiny dataset with TRAIN_FAST: one quick epoch, any model
    fast_cfg / cfg_fast    ... with FAST: the default MelCNN made small, the usual training test

The fixtures hand out functions `(*overrides, tmp=tmp_path) -> DictConfig`; the plain
functions serve session and module fixtures, which cannot use `tmp_path`. A test that needs
another value of a setting below overrides it (the last value of a key wins).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from birdclef.data.synthetic import SynthSpec, generate
from birdclef.data.synthetic.speech import espeak_available

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REAL_XC = Path(os.environ.get("BIRDCLEF_REAL_XC", ROOT.parent / "shared" / "data" / "real_xc"))
SR = 32000
TINY_SEED = 7  # the seed of the tiny dataset (conf/synth/tiny.yaml otherwise)

# One quick epoch on the tiny dataset, for any model: frames cached in this process (no worker
# pool), small batches, validation recordings from every class that has two or more.
TRAIN_FAST = (
    "data.cache.workers=0",
    "data.loader.batch_size=16",
    "data.split.min_val_recordings=2",
    "trainer.max_epochs=1",
)
# ... with the default MelCNN made small: the settings of most training tests.
FAST = (*TRAIN_FAST, "model.channels=[8,16]")

warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2: each worker process gets one core's worth of torch threads, so the workers
    # do not oversubscribe the machine (run.py processes that tests start size their own).
    import torch

    torch.set_num_threads(1)


def compose_cfg(*overrides: str, tmp: Path):
    """The project config with `overrides`, writing into `tmp` (no Hydra run needed)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.data_dir={tmp / 'data'}",
                f"paths.output_dir={tmp / 'out'}",
                *overrides,
            ],
        )


def train_cfg(root: Path, *overrides: str, tmp: Path):
    """The config on the dataset at `root` with TRAIN_FAST's quick settings."""
    return compose_cfg(f"data.root={root}", *TRAIN_FAST, *overrides, tmp=tmp)


def fast_cfg(root: Path, *overrides: str, tmp: Path):
    """The config on the dataset at `root` with FAST's quick settings and small MelCNN."""
    return compose_cfg(f"data.root={root}", *FAST, *overrides, tmp=tmp)


def build_folder(task: str, source: Path, output: Path, *overrides: str) -> dict:
    """Run a task that writes a new data folder (`task=mix`, `mix_train`, `mix_recordings`) from
    `source` into `output`; its run folder sits beside `output`, not in it."""
    from hydra.utils import get_method

    cfg = compose_cfg(
        f"task={task}", f"task.source={source}", f"task.output={output}", *overrides,
        tmp=output.parent / f"{output.name}_run",
    )  # fmt: skip
    return get_method(cfg.task.fn)(cfg)


@functools.cache
def tiny_spec() -> SynthSpec:
    """The tiny dataset's spec: conf/synth/tiny.yaml with seed TINY_SEED."""
    cfg = compose_cfg("synth=tiny", f"synth.seed={TINY_SEED}", tmp=Path("unused"))  # no paths
    return SynthSpec.from_config(cfg.synth)


# tests of real speech need the espeak-ng program (a Debian package, not a Python one)
needs_espeak = pytest.mark.skipif(
    not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)"
)


@pytest.fixture
def cfg(tmp_path):
    """`cfg(*overrides, tmp=tmp_path)`: the project config (compose_cfg)."""

    def make(*overrides: str, tmp: Path | None = None):
        return compose_cfg(*overrides, tmp=tmp or tmp_path)

    return make


@pytest.fixture
def cfg_train(tiny_root, tmp_path):
    """`cfg_train(*overrides, tmp=tmp_path)`: the config on the tiny dataset (train_cfg)."""

    def make(*overrides: str, tmp: Path | None = None):
        return train_cfg(tiny_root, *overrides, tmp=tmp or tmp_path)

    return make


@pytest.fixture
def cfg_fast(tiny_root, tmp_path):
    """`cfg_fast(*overrides, tmp=tmp_path)`: the usual training test's config (fast_cfg)."""

    def make(*overrides: str, tmp: Path | None = None):
        return fast_cfg(tiny_root, *overrides, tmp=tmp or tmp_path)

    return make


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny synthetic dataset, generated once per test session (per xdist worker)."""
    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    return generate(root, tiny_spec(), workers=0)


def write_wav(path: Path, audio: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, format="WAV", subtype="FLOAT")
    return path


def tone(seconds: float, freq: float = 1000.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_root, tmp_path_factory) -> Path:
    """best.ckpt of a one-epoch MelCNN on the tiny dataset (shared by the submission tests)."""
    from birdclef.tasks.train import run

    tmp = tmp_path_factory.mktemp("ckpt")
    run(fast_cfg(tiny_root, tmp=tmp))
    return tmp / "out" / "checkpoints" / "best.ckpt"


def load_run_py():
    """run.py as a module (the command line's entry point), imported once."""
    if "run" not in sys.modules:
        spec = importlib.util.spec_from_file_location("run", ROOT / "run.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["run"] = module
        spec.loader.exec_module(module)
    return sys.modules["run"]


@pytest.fixture
def run_main(caplog, capsys):
    """`run_main(cfg)`: what `python run.py <overrides>` does with the composed `cfg`, in this
    process (run.main's body without Hydra's runtime). Returns (exit status, output), where
    the output is what the command line would show: stdout, stderr and the log records.
    Restores the torch threads and the lightning loggers that run.main changes."""
    import torch

    main = load_run_py().main
    threads = torch.get_num_threads()
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    saved = [(lg, list(lg.handlers), lg.propagate) for lg in loggers]

    def call(cfg) -> tuple[int, str]:
        status = 0
        with caplog.at_level(logging.INFO):
            try:
                main(cfg)
            except SystemExit as exit_:
                status = exit_.code
        captured = capsys.readouterr()
        return status, captured.out + captured.err + caplog.text

    yield call
    torch.set_num_threads(threads)
    for lg, handlers, propagate in saved:
        lg.handlers[:] = handlers
        lg.propagate = propagate
