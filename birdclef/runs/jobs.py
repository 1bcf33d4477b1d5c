"""Multirun jobs: skip finished ones, record failed ones, share a machine's cores.

`run.py` calls `start_job` and `run_sweep_job` in every job; `SweepCallback`
(a Hydra callback, `hydra.callbacks` in conf/cluster/*.yaml) runs in the process
that launches the sweep.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from birdclef.core.cpus import CPUS_ENV, available_cpus
from birdclef.core.errors import user_error
from birdclef.core.io import write_text
from birdclef.runs.envelope import CONFIG, METRICS

log = logging.getLogger(__name__)

FAILED = "failed.txt"  # a failed job's message and traceback, in its folder

CONCURRENT_ENV = "BIRDCLEF_CONCURRENT_JOBS"  # jobs of one sweep running at once on this machine
# Keys that differ between two runs of the same experiment without changing its results.
VOLATILE_KEYS = ("paths.output_dir", "rerun", "data.cache.workers")
OUTPUT_DIR = "${paths.output_dir}"  # stands for the run's folder when configs are compared
LOCAL_LAUNCHER = "LocalLauncher"  # hydra-submitit-launcher's submitit_local


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_num() -> int:
    """This job's number in its sweep (0 outside a multirun, where Hydra leaves it unset)."""
    if not HydraConfig.initialized():
        return 0
    return int(OmegaConf.select(HydraConfig.get(), "job.num", default=0))


def concurrent_jobs() -> int:
    value = os.environ.get(CONCURRENT_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def job_info() -> dict[str, float]:
    """What a job's timings depend on: the CPUs it may use and how many jobs shared the machine."""
    return {"job/cpus": float(available_cpus()), "job/concurrent_jobs": float(concurrent_jobs())}


@functools.cache
def torch_default_threads() -> int:
    """torch's own thread count (its physical cores, blind to affinity and allocations).

    Read once, before the first job of this process changes it; a share never gets more.
    """
    import torch  # here, so that birdclef.runs.report does not load torch

    return torch.get_num_threads()


def start_job() -> int:
    """Size torch's threads from this job's share of the machine; returns the thread count."""
    import torch

    threads = min(torch_default_threads(), available_cpus())
    torch.set_num_threads(threads)
    if concurrent_jobs() > 1:
        log.info(
            "job %d: %d CPU(s), %d torch thread(s); %d jobs at once on this machine",
            job_num(), available_cpus(), threads, concurrent_jobs(),
        )  # fmt: skip
    return threads


def comparable(cfg: DictConfig) -> Any:
    """`cfg` resolved, as plain containers after a YAML round trip, without VOLATILE_KEYS.

    Values under the run's folder (trainer.default_root_dir, logger.save_dir) are written
    relative to it, so a sweep folder that was moved or copied still matches.
    """
    plain = OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True)))
    folder = str((plain.get("paths") or {}).get("output_dir") or "")
    for dotted in VOLATILE_KEYS:
        *parents, leaf = dotted.split(".")
        node = plain
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return _relative_to(plain, folder) if folder else plain


def _relative_to(value: Any, folder: str) -> Any:
    if isinstance(value, dict):
        return {key: _relative_to(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [_relative_to(item, folder) for item in value]
    return value.replace(folder, OUTPUT_DIR) if isinstance(value, str) else value


def finished_metrics(cfg: DictConfig, out: Path) -> dict | None:
    """The metrics of a finished run of this same config in `out`, or None (then it must run).

    Finished means `metrics.json` written after `config.yaml`, and `config.yaml` equal to
    `cfg` but for VOLATILE_KEYS. `rerun=true` always runs.
    """
    if cfg.get("rerun", False):
        return None
    metrics, saved = out / METRICS, out / CONFIG
    if not (metrics.is_file() and saved.is_file()):
        return None
    if metrics.stat().st_mtime < saved.stat().st_mtime:
        return None
    if comparable(OmegaConf.load(saved)) != comparable(cfg):
        return None
    return json.loads(metrics.read_text())


def record_failure(out: Path, err: Exception) -> Path:
    """Write `out/failed.txt` (one-line reason, then the traceback) and log it."""
    cause = user_error(err)
    reason = str(cause) if cause is not None else f"{type(err).__name__}: {err}"
    trace = "".join(traceback.format_exception(err))
    path = out / FAILED
    write_text(path, f"{reason}\n\n{trace}")
    if cause is not None:  # a user error: its message says it all
        log.error("job %d failed: %s (%s)", job_num(), reason, path)
    else:
        log.error("job %d failed (%s):\n%s", job_num(), path, trace)
    return path


def run_sweep_job(cfg: DictConfig, task: Callable[[DictConfig], Any]) -> Any:
    """Run one multirun job: skip it when finished, record it when it fails, never raise.

    Returns the task's metrics, the stored metrics of a skipped job, or None for a
    failed one, so the launcher goes on with the other jobs.
    """
    out = Path(cfg.paths.output_dir)
    stored = finished_metrics(cfg, out)
    if stored is not None:
        log.info(
            "job %d already finished with this config, skipped (rerun=true runs it again): %s",
            job_num(), out,
        )  # fmt: skip
        return stored
    for stale in (METRICS, FAILED):  # a new attempt: nothing of an older one may remain
        (out / stale).unlink(missing_ok=True)
    try:
        return task(cfg)
    except Exception as err:
        record_failure(out, err)
        return None


def sweep_jobs_at_once(hydra_cfg: DictConfig) -> int | None:
    """How many jobs the basic sweeper hands the launcher at once (None: another sweeper)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = hydra_cfg.sweeper
    if not str(sweeper.get("_target_", "")).endswith(BasicSweeper.__name__):
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *hydra_cfg.overrides.task])
    batches = BasicSweeper.split_arguments(overrides, sweeper.get("max_batch_size"))
    return max(len(batch) for batch in batches)


class SweepCallback(Callback):
    """Split the cores over submitit_local jobs; at the end, say which jobs failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith(LOCAL_LAUNCHER):
            return  # the basic launcher runs jobs one by one; SLURM allocates cores itself
        # submitit_local starts every job of a batch at once and ignores cpus_per_task;
        # the jobs inherit this process's environment, where available_cpus() reads the share.
        at_once = sweep_jobs_at_once(config.hydra) or 1
        cpus = launcher.get("cpus_per_task") or max(1, available_cpus() // at_once)
        os.environ[CPUS_ENV], os.environ[CONCURRENT_ENV] = str(cpus), str(at_once)
        log.info("%d jobs at once, %d CPU(s) each", at_once, cpus)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        failed = sorted(p.parent for p in sweep.rglob(FAILED))
        finished = sorted(p.parent for p in sweep.rglob(METRICS))
        report = f"table: python -m birdclef.runs.report {sweep}"
        if not failed:
            log.info("%d job(s) finished; %s", len(finished), report)
            return
        lines = [f"  {job}: {(job / FAILED).read_text().splitlines()[0]}" for job in failed]
        log.error(
            "%d job(s) failed, %d finished; %s\n%s\nEach failed folder holds %s; the same "
            "command again runs only the jobs without results.",
            len(failed), len(finished), report, "\n".join(lines), FAILED,
        )  # fmt: skip
