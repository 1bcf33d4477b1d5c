"""Entry point: `python run.py [task=train|synth] [group=option] [key=value ...]`."""

import logging
import sys
import warnings

import hydra
import lightning  # noqa: F401  (imported first so its console handlers can be dropped below)
from hydra.utils import get_method
from omegaconf import DictConfig

from birdclef.errors import BirdclefError

log = logging.getLogger("birdclef")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def user_error(err: BaseException) -> BirdclefError | None:
    """The BirdclefError behind `err`, also when Hydra's instantiate wrapped it."""
    while err is not None:
        if isinstance(err, BirdclefError):
            return err
        err = err.__cause__ or err.__context__
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run `cfg.task.fn(cfg)`; return the monitored metric so sweepers can optimise it."""
    # Lightning set up its own console handlers at import, before Hydra configured logging;
    # send its messages through Hydra's handlers (console and run.log) instead, once.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    try:
        metrics = get_method(cfg.task.fn)(cfg)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        log.error("%s", cause)  # Hydra's console handler prints it; no traceback for user errors
        sys.exit(2)
    return metrics.get(cfg.monitor) if isinstance(metrics, dict) else None


if __name__ == "__main__":
    main()
