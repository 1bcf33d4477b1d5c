"""User errors are shortened to one line, real crashes keep their traceback; sweep jobs record both."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from birdclef.core.errors import ConfigError, DataError, user_error
from birdclef.core.io import write_json, write_text
from birdclef.runs.jobs import FAILED, finished_metrics, run_sweep_job

HERE = "tests.test_run_errors"  # run.py imports this module for task.fn: keep its imports light
ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(*overrides, tmp):
    from tests.conftest import compose_cfg  # not at import, see HERE

    return compose_cfg(*overrides, tmp=tmp)


def refuse(value: int) -> None:
    """A `_target_` that fails as a user error."""
    raise DataError(f"value={value} is wrong; give another.")


def crash_during_handling(cfg=None) -> None:
    """A bug in an error handler: a real crash with a user error as its implicit `__context__`."""
    try:
        raise ConfigError("the user error being handled")
    except ConfigError:
        {}["missing"]  # noqa: B018  (a KeyError while handling)


def test_user_error_follows_hydra_instantiate_wrapping():
    with pytest.raises(InstantiationException) as caught:
        instantiate({"_target_": f"{HERE}.refuse", "value": 3})
    assert isinstance(caught.value.__cause__, DataError)  # Hydra 1.3.8: `raise ... from e`
    assert str(user_error(caught.value)) == "value=3 is wrong; give another."


def test_user_error_follows_explicit_causes_only():
    inner = ConfigError("bad value")
    try:
        try:
            raise inner
        except ConfigError as err:
            raise RuntimeError("wrapped") from err
    except RuntimeError as wrapped:
        assert user_error(wrapped) is inner
    with pytest.raises(KeyError) as caught:
        crash_during_handling()
    assert isinstance(caught.value.__context__, ConfigError)
    assert user_error(caught.value) is None  # followed `__context__` before: one line, no traceback
    assert user_error(ValueError("plain")) is None
    assert user_error(inner) is inner


def test_cli_crash_while_handling_a_user_error_keeps_its_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "run.py", f"task.fn={HERE}.crash_during_handling",
         f"hydra.run.dir={tmp_path}/run", f"paths.data_dir={tmp_path}/data"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "BIRDCLEF_CONCURRENT_JOBS": "2"},  # the share's log line, outside a sweep
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-2000:]  # Hydra's exit status for a crash, not 2
    assert "job 0: " in output
    assert "Traceback" in output and "KeyError: 'missing'" in output


def test_sweep_job_records_a_crash_and_returns_none(tmp_path):
    cfg = compose_cfg(tmp=tmp_path)
    out = tmp_path / "out"
    write_json(out / "metrics.json", {"val/auc": 0.5})  # of an older attempt: must not remain
    assert run_sweep_job(cfg, crash_during_handling) is None
    text = (out / FAILED).read_text()
    assert text.splitlines()[0] == "KeyError: 'missing'"
    assert "Traceback" in text and "crash_during_handling" in text
    assert not (out / "metrics.json").exists()

    def refuse_task(cfg):
        refuse(1)

    assert run_sweep_job(cfg, refuse_task) is None
    assert (out / FAILED).read_text().splitlines()[0] == "value=1 is wrong; give another."


def finish(cfg):
    """A task that finishes at once, writing what the train task writes."""
    write_text(f"{cfg.paths.output_dir}/config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(f"{cfg.paths.output_dir}/metrics.json", {"val/auc": 0.75})
    return {"val/auc": 0.75}


def test_finished_job_is_skipped_unless_config_changed_or_rerun(tmp_path):
    cfg = compose_cfg("trainer.max_epochs=1", tmp=tmp_path)
    out = tmp_path / "out"
    assert finished_metrics(cfg, out) is None
    assert run_sweep_job(cfg, finish) == {"val/auc": 0.75}
    assert finished_metrics(cfg, out) == {"val/auc": 0.75}

    def never(cfg):
        raise AssertionError("a finished job ran again")

    assert run_sweep_job(cfg, never) == {"val/auc": 0.75}
    # moved sweep folders and cache workers do not count as a change
    moved = compose_cfg("trainer.max_epochs=1", "data.cache.workers=1", tmp=tmp_path)
    moved.paths.output_dir = str(tmp_path / "elsewhere")
    assert finished_metrics(moved, out) == {"val/auc": 0.75}
    assert finished_metrics(compose_cfg("trainer.max_epochs=2", tmp=tmp_path), out) is None
    assert (
        finished_metrics(compose_cfg("trainer.max_epochs=1", "++rerun=true", tmp=tmp_path), out)
        is None
    )
    # a config.yaml newer than metrics.json: an attempt that started again and did not finish
    (out / "config.yaml").touch()
    stamp = (out / "metrics.json").stat()
    os.utime(out / "metrics.json", (stamp.st_atime, stamp.st_mtime - 10))
    assert finished_metrics(cfg, out) is None
    assert json.loads((out / "metrics.json").read_text()) == {"val/auc": 0.75}
