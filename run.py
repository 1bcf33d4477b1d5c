"""Entry point: `python run.py [task=train|synth] [group=option] [key=value ...]`."""

import logging
import sys
import warnings

import hydra
import lightning  # noqa: F401  (imported first so its console handlers can be dropped below)
from hydra.utils import get_method
from omegaconf import DictConfig

from birdclef.core.errors import ConfigError, user_error
from birdclef.runs.jobs import in_multirun, run_sweep_job, start_job
from birdclef.runs.renamed import check_config, check_overrides

log = logging.getLogger("birdclef")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def run_task(cfg: DictConfig):
    check_config(cfg)
    return get_method(cfg.task.fn)(cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run `cfg.task.fn(cfg)`; return the monitored metric so sweepers can optimise it.

    In a multirun, a job that already finished is skipped and a failing job is recorded
    in its folder (birdclef.runs.jobs), so the other jobs go on.
    """
    # Lightning set up its own console handlers at import, before Hydra configured logging;
    # send its messages through Hydra's handlers (console and run.log) instead, once.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    start_job()
    if in_multirun():
        metrics = run_sweep_job(cfg, run_task)
    else:
        try:
            metrics = run_task(cfg)
        except Exception as err:
            cause = user_error(err)
            if cause is None:
                raise
            # Hydra's console handler prints it; no traceback for user errors.
            log.error("%s", cause)
            sys.exit(2)
    return metrics.get(cfg.monitor) if isinstance(metrics, dict) else None


def check_renamed() -> None:
    """An old config name on the command line: one line naming the new one, exit status 2."""
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    check_renamed()
    main()
